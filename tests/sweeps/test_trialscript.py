"""The array task's wrapper, run by bash here as Slurm would run one task: it finds its own
line of the wave's parameter table (carried inside the array's script), exports the
parameters, puts them into the trial script (carried there too, byte for byte) and runs it."""

import subprocess
import textwrap

from apps.sweeps import trialscript
from apps.sweeps.spec import parse

from .conftest import experiment

TRICKY = textwrap.dedent(
    """\
    #!/bin/bash
    #SBATCH --partition=debug
    #SBATCH --time=00:05:00
    echo "lr=${trialParameters.learningRate} env=$learningRate trial=$AXLE_TRIAL"
    cat <<'EOF'
    $HOME `date` \\n "quoted" 'single' ${trialParameters.learningRate}
    EOF
    printf 'no newline at the end'"""
)


def run_task(tmp_path, task: int, script: str = TRICKY) -> str:
    spec = parse(experiment(), script=script)
    folder = tmp_path / "sweep"
    folder.mkdir(exist_ok=True)
    (folder / trialscript.RUNS_FILE).write_bytes(trialscript.runs_file([(7, "run-seven"), (8, "run-eight")]))
    params = trialscript.params_file(spec, [(7, {"learningRate": "0.01"}), (8, {"learningRate": "0.05"})])
    wrapper = trialscript.array_script(
        spec=spec, script=spec.script, folder=str(folder), wave=0, size=2, parallel=1, params=params
    )
    assert "#SBATCH --array=0-1%1" in wrapper
    # Nothing but the runs file is read from the sweep's folder: the wave is its one script.
    assert "wave-0.tsv" not in wrapper
    done = subprocess.run(
        ["bash", "-c", wrapper],
        env={"PATH": "/usr/bin:/bin", "HOME": "/home/x", "SLURM_ARRAY_TASK_ID": str(task)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_each_task_runs_the_trial_script_with_its_own_parameters(tmp_path):
    out = run_task(tmp_path, 1)
    assert out.startswith("lr=0.05 env=0.05 trial=8\n")
    # Substituted like Katib does (plain text, even in a quoted here-document); nothing else touched.
    assert "$HOME `date` \\n \"quoted\" 'single' 0.05\n" in out
    assert out.endswith("no newline at the end")
    assert (tmp_path / "sweep" / "trials" / "8.sh").read_text().startswith("#!/bin/bash\n#SBATCH --partition=debug")
    assert run_task(tmp_path, 0).startswith("lr=0.01 env=0.01 trial=7\n")


def test_a_script_holding_the_delimiter_line_cannot_end_the_here_document_early(tmp_path, monkeypatch):
    class Fixed:
        def __init__(self, data):
            pass

        def hexdigest(self):
            return "0" * 64

    monkeypatch.setattr(trialscript.hashlib, "sha256", Fixed)
    sneaky = TRICKY.replace(
        "printf 'no newline", "echo before\nAXLE_TRIAL_0000000000000000\necho after\nprintf 'no newline"
    )
    wrapper = trialscript.array_script(
        spec=parse(experiment(), script=sneaky), script=sneaky, folder="/f", wave=0, size=1, parallel=1
    )
    assert "\nAXLE_TRIAL_0000000000000000_\n)" in wrapper
    out = run_task(tmp_path, 0, sneaky)
    assert "before\nafter\nno newline at the end" in out  # the whole script ran, as one
    kept = (tmp_path / "sweep" / "trials" / "7.sh").read_text()
    assert "echo before\nAXLE_TRIAL_0000000000000000\necho after\n" in kept


LOGIN_PROBE = textwrap.dedent(
    """\
    #!/bin/bash
    echo "run=${MLFLOW_RUN_ID:-} user=${MLFLOW_TRACKING_USERNAME:-} password=${MLFLOW_TRACKING_PASSWORD:-}"
    """
)


def run_probe(tmp_path, *, job_id: str, runs: bool = True, login: bool = True, env_login: bool = False) -> str:
    """One task of a wave whose job has no MLflow login in its environment (the hub makes it
    after sbatch and writes it, as the runs, into the sweep's folder)."""
    spec = parse(experiment(), script=LOGIN_PROBE)
    folder = tmp_path / "sweep"
    folder.mkdir(exist_ok=True)
    if runs:
        (folder / trialscript.RUNS_FILE).write_bytes(trialscript.runs_file([(7, "run-seven")]))
    if login:
        path = folder / trialscript.login_name("job-a")
        path.write_bytes(trialscript.login_file("axle-job-a", "s3cret-A"))
        path.chmod(0o600)
    wrapper = trialscript.array_script(
        spec=spec,
        script=spec.script,
        folder=str(folder),
        wave=0,
        size=1,
        parallel=1,
        params=trialscript.params_file(spec, [(7, {"learningRate": "0.01"})]),
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": "/home/x", "SLURM_ARRAY_TASK_ID": "0", "AXLE_JOB_ID": job_id}
    if env_login:
        env.update(MLFLOW_TRACKING_USERNAME="from-env", MLFLOW_TRACKING_PASSWORD="env-pw")
    done = subprocess.run(["bash", "-c", wrapper], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_task_logs_in_with_its_jobs_login_from_the_sweeps_folder_once_its_run_is_there(tmp_path):
    assert run_probe(tmp_path, job_id="job-a") == "run=run-seven user=axle-job-a password=s3cret-A\n"


def test_a_task_reads_only_its_own_jobs_login_and_keeps_an_environment_login_otherwise(tmp_path):
    # Another wave's login (another array job) is not this task's.
    assert run_probe(tmp_path, job_id="job-b") == "run=run-seven user= password=\n"
    # A job with a login of its own in its environment (a rerun of a wave, an older wave) keeps it.
    assert run_probe(tmp_path, job_id="job-b", env_login=True) == "run=run-seven user=from-env password=env-pw\n"


def test_the_login_file_holds_nothing_but_the_login():
    assert trialscript.login_file("axle-job-a", "pw") == b"axle-job-a\npw\n"
    assert trialscript.login_name("1234") == "mlflow-login-1234"
