"""What a sweep puts on the cluster (pure: text in, text out).

A wave of trials is ONE job array. Its script is the user's sbatch header (the ``#SBATCH``
lines, as sbatch reads them) plus ``#SBATCH --array=0-(N-1)%P`` and a short bash preamble.
Each task reads its own line of the wave's parameter table (carried inside the array's
script, as the trial script is: a wave is one sbatch and no other file written on the
submission path), exports every trial parameter as an environment variable,
puts the values in place of ``${trialParameters.<name>}`` in the user's script exactly as
Katib does in a trialSpec (plain text replacement, so it works inside quotes, heredocs and
Python as well), and runs that script with its own interpreter line."""

from __future__ import annotations

import hashlib
import re
import shlex

from .spec import Spec

# The hub writes this file after sbatch, once it made each trial's MLflow run (batched, off
# the submission path); a task waits for its line so its metrics land in its own run.
RUNS_FILE = "runs.tsv"
RUN_WAIT_SECONDS = 300
# The array job's own MLflow login (user name, then password, a line each), written by the hub
# with mode 0600 in the same cycle as, and before, the runs file; a task reads it once its run
# is there, and exports it to the trial script alone.
LOGIN_PREFIX = "mlflow-login-"


def login_name(job_uuid) -> str:
    """The login file of array job `job_uuid` in the sweep's folder (its tasks find it by
    their AXLE_JOB_ID)."""
    return f"{LOGIN_PREFIX}{job_uuid}"


def login_file(username: str, password: str) -> bytes:
    return f"{username}\n{password}\n".encode()


_ARRAY = re.compile(r"^#SBATCH\s+(-a\b|--array\b)")


def header(script: str) -> tuple[str, list[str]]:
    """The interpreter line and the leading comment block sbatch reads its options from."""
    lines = script.splitlines()
    directives: list[str] = []
    for line in lines[1:]:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break
        if stripped.startswith("#SBATCH"):
            directives.append(stripped)
    return lines[0] if lines else "", directives


def array_problem(script: str) -> str | None:
    """The trial script must not make its own array: the sweep makes it."""
    for line in header(script)[1]:
        if _ARRAY.match(line):
            return f"{line!r}: the sweep makes the job array itself (one task per trial); remove --array."
    return None


def params_file(spec: Spec, trials: list[tuple[int, dict[str, str]]]) -> bytes:
    """One header line of names, then one line per array task: trial number and values,
    tab-separated; line ``task + 2`` belongs to array task ``task``."""
    names = [tp.name for tp in spec.trial_parameters]
    lines = ["\t".join(["AXLE_TRIAL", *names])]
    for number, values in trials:
        lines.append("\t".join([str(number), *(values[n] for n in names)]))
    return ("\n".join(lines) + "\n").encode("utf-8")


def runs_file(runs: list[tuple[int, str]]) -> bytes:
    return "".join(f"{number}\t{run_id}\n" for number, run_id in runs).encode("utf-8")


def array_script(
    *, spec: Spec, script: str, folder: str, wave: int, size: int, parallel: int, params: bytes = b""
) -> str:
    """The sbatch script of one wave: ``size`` tasks, at most ``parallel`` at once, task
    ``i`` running the trial on line ``i + 2`` of ``params`` (`params_file`; empty when the
    script is only checked against the grant)."""
    shebang, directives = header(script)
    q = shlex.quote
    body = script if script.endswith("\n") else script + "\n"
    # A here-document ends at a line equal to its delimiter: one the script cannot hold.
    delimiter = "AXLE_TRIAL_" + hashlib.sha256(body.encode()).hexdigest()[:16]
    while delimiter in body.split("\n"):
        delimiter += "_"
    table = params.decode("utf-8")
    table = table if table.endswith("\n") or not table else table + "\n"
    # Every line of the table starts with a trial number or is its header (AXLE_TRIAL...):
    # none can be this delimiter.
    params_end = "AXLE_PARAMS_END"
    lines = [
        "#!/bin/bash",
        *directives,
        f"#SBATCH --array=0-{size - 1}%{parallel}",
        f"# Axle sweep {spec.name}: each task of this array runs one trial of {spec.name},",
        "# the trial script below with its parameters put in.",
        "set -eu",
        f"axle_dir={q(folder)}",
        f"# Wave {wave}: the trials' parameters, a header line then one line per task.",
        f"axle_params=$(cat <<'{params_end}'",
        *table.split("\n")[:-1],
        params_end,
        ")",
        "axle_line=$((SLURM_ARRAY_TASK_ID + 2))",
        "IFS=$'\\t' read -r -a axle_names < <(printf '%s\\n' \"$axle_params\" | sed -n 1p)",
        "IFS=$'\\t' read -r -a axle_values < <(printf '%s\\n' \"$axle_params\" | sed -n \"${axle_line}p\")",
        'export AXLE_TRIAL="${axle_values[0]}"',
        # The trial script travels inside this one (a quoted here-document: nothing in it is
        # expanded), so a wave costs one file (its parameters) and one sbatch.
        f"axle_body=$(cat <<'{delimiter}'; printf x",
        *body.split("\n")[:-1],
        delimiter,
        ")",
        'axle_body="${axle_body%x}"',
        'for axle_i in "${!axle_names[@]}"; do',
        '  [ "$axle_i" -eq 0 ] && continue',
        '  axle_n="${axle_names[$axle_i]}"; axle_v="${axle_values[$axle_i]}"',
        '  export "$axle_n=$axle_v"',
        '  axle_body="${axle_body//"\\${trialParameters.$axle_n}"/"$axle_v"}"',
        "done",
        "# Wait for the hub to have made this trial's MLflow run (it does so in batches).",
        'axle_run=""',
        # Every half second: the run is usually made within a tracking cycle of the array's
        # start, and a trial of a minute should not idle for seconds waiting to look again.
        f"for axle_i in $(seq 1 {RUN_WAIT_SECONDS * 2}); do",
        '  axle_run=$(awk -F"\\t" -v t="$AXLE_TRIAL" \'$1 == t {print $2}\' \\',
        f'    "$axle_dir"/{RUNS_FILE} 2>/dev/null || true)',
        '  [ -n "$axle_run" ] && break',
        "  sleep 0.5",
        "done",
        'if [ -n "$axle_run" ]; then export MLFLOW_RUN_ID="$axle_run"; else unset MLFLOW_RUN_ID; fi',
        # The job's MLflow login, made with the runs (after sbatch): none in the job's
        # environment, none on a hub without logins (then the file is not written).
        f'axle_login="$axle_dir/{LOGIN_PREFIX}${{AXLE_JOB_ID:-none}}"',
        'if [ -n "$axle_run" ] && [ -r "$axle_login" ]; then',
        "  { IFS= read -r MLFLOW_TRACKING_USERNAME && IFS= read -r MLFLOW_TRACKING_PASSWORD",
        '  } <"$axle_login" || true',
        "  export MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD",
        "fi",
        'mkdir -p "$axle_dir/trials"',
        'axle_script="$axle_dir/trials/$AXLE_TRIAL.sh"',
        'printf "%s" "$axle_body" > "$axle_script"',
        'chmod +x "$axle_script"',
        'exec "$axle_script"',
    ]
    del shebang  # the trial script keeps its own interpreter line; the wrapper is bash
    return "\n".join(lines) + "\n"
