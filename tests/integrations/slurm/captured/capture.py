"""Re-capture the parser fixtures in this folder from the local cluster (compose/local).

    .venv/bin/python tests/integrations/slurm/captured/capture.py

Runs as the scientist over the hub's own SSH transport, with exactly the commands the
parsers are written for (parsing.*_args by absolute path, in the fixed environment with
TIME_ENV), all with one delimiter it saves in `delimiter`, and cancels every job it
made. The scenario: a finished job with a memory peak, a running job cancelled later, a
throttled array whose task 1 fails, a held job without a comment in another
partition, a held job whose name and comment hold '|' and spaces, and a held job whose
name holds a newline and a row forged for another job. The cluster must be otherwise idle
for the rows to come out as the tests expect.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))

from apps.integrations.slurm import parsing  # noqa: E402
from apps.integrations.slurm.base import SubmitRequest  # noqa: E402
from apps.integrations.slurm.ssh import SSHClient  # noqa: E402

HERE = Path(__file__).parent
STACK = Path("/var/lib/axle")
SCRATCH = str(STACK / "cluster/scratch/scientist/capture")


def main() -> None:
    ssh = SSHClient(
        "127.0.0.1",
        2222,
        "scientist",
        (STACK / "keys/scientist/id_ed25519").read_text(),
        host_key=(STACK / "ssh/known_hosts").read_text(),
    )
    made: list[str] = []

    def submit(script: str, name: str, comment: str, *extra: str) -> str:
        job_id = ssh.submit(
            SubmitRequest(
                script=script,
                job_name=name,
                comment=comment,
                workdir=SCRATCH,
                extra_args=[f"--output={SCRATCH}/%x-%j.out", *extra],
            )
        )
        made.append(job_id)
        return job_id

    delimiter = parsing.new_delimiter()
    (HERE / "delimiter").write_text(delimiter)

    def run(args: list[str], env: dict[str, str] | None = None) -> str:
        result = ssh.run(ssh.slurm_command(args, env=env))
        assert result.exit_status == 0, result.err
        return result.out

    with ssh:
        ssh.run(["mkdir", "-p", SCRATCH])
        try:
            train = submit(
                "#!/bin/bash\n#SBATCH -c 2 -t 60\npython3 -c 'x=bytearray(60<<20); import time; time.sleep(4)'\n",
                "train",
                "axle:6f1c",
            )
            while not any(
                j.state == "COMPLETED"
                for j in parsing.parse_sacct(run(parsing.sacct_args(delimiter, [train]), parsing.TIME_ENV), delimiter)
            ):
                time.sleep(1)
            long = submit("#!/bin/bash\n#SBATCH -t 60\nsleep 300\n", "long", "axle:90ab")
            sweep = submit(
                "#!/bin/bash\n#SBATCH --array=0-6%2 -t 10\n"
                'if [ "$SLURM_ARRAY_TASK_ID" = 1 ]; then exit 3; fi\nsleep 20\n',
                "sweep",
                "axle:77aa",
            )
            submit("#!/bin/bash\nsleep 5\n", "held", "", "--hold", "--partition=batch")
            submit("#!/bin/bash\nsleep 5\n", "a|b c", "x|y", "--hold")
            # What once forged a RUNNING state for job `long` (fields as 0x1f-separated text)
            forged = "\x1f".join([long, long, "N/A", "x", "axle:90ab", "COMPLETED", "None", "scientist"])
            submit("#!/bin/bash\nsleep 5\n", f"evil\n{forged}\n", "axle:evil\nx", "--hold")
            time.sleep(6)
            out = run(parsing.squeue_args(delimiter, "scientist"), parsing.TIME_ENV)
            (HERE / "squeue.out").write_text(out)
            (HERE / "sinfo.out").write_text(run(parsing.sinfo_args(delimiter)))
            ssh.cancel(long)
            time.sleep(8)  # task 1 has failed, task 2 runs, 3-6 still wait
            out = run(parsing.sacct_args(delimiter, [train, sweep, long]), parsing.TIME_ENV)
            (HERE / "sacct.out").write_text(out)
            shown = submit(
                "#!/bin/bash\ntrue\n",
                "two words",
                "axle:x y",
                "--hold",
                "-n1",
                "-c2",
                "--mem=4G",
                "-t30",
            )
            out = run(["scontrol", "show", "job", "-o", shown])
            (HERE / "scontrol.out").write_text(out)
        finally:
            for job_id in made:
                ssh.run(ssh.slurm_command(["scancel", job_id]))


if __name__ == "__main__":
    main()
