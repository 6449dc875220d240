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
