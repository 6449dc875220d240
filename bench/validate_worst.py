"""Worst-case validation time: how long the hub takes to check adversarial scripts.

Runs the same validation as `/api/v1/jobs/validate/` and job creation
(`apps.jobs.validation.validate`) on inputs built to make a parser slow or greedy: huge array
specs, scripts at the size cap made of nothing but directives, long lists, ambiguous
option prefixes, quotes and escapes. No database, no cluster: the grant and the cluster's
cached health are built in memory, as validation reads them.

    .venv/bin/python bench/validate_worst.py [--repeat 5]

Prints, for each input, its size, the number of problems found, the best and worst time over
the repeats and the peak memory, then the worst time of all. Nothing asserts a number; the
target is under ~50 ms per input.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings.test")
    import django

    django.setup()


def adversarial_inputs(cap: int) -> dict[str, str]:
    head = "#!/bin/bash\n"

    def fill(line: str) -> str:
        return head + line * ((cap - len(head)) // len(line))

    def one_line(prefix: str, item: str, sep: str = ",") -> str:
        room = cap - len(head) - len(prefix) - 2
        return head + prefix + sep.join([item] * (room // (len(item) + len(sep)))) + "\n"

    return {
        "50 lines of --array=0-999999999": head + "#SBATCH --array=0-999999999\n" * 50,
        "50 lines of the largest valid array": head + "#SBATCH --array=0-3999999\n" * 50,
        "overlapping ranges, 900000 indexes": head + "#SBATCH --array=0-399999,1-999999:2,5%3\n",
        "overlapping ranges over the bound": head + "#SBATCH --array=0-3999999,1-3999999:2,5%3\n",
        "array of single indexes at the cap": one_line("#SBATCH --array=", "3999999"),
        "distinct array indexes at the cap": head
        + "#SBATCH --array="
        + ",".join(str(i) for i in range(0, 4_000_000, 97))[: cap - 40]
        + "\n",
        "directives at the cap (-N1 -n1 -c1 ...)": fill("#SBATCH -N1 -n1 -c1 --mem=1G -t 5 -p debug\n"),
        "ambiguous long prefixes at the cap": fill("#SBATCH --c --m --n --t --g --p --s --e --a\n"),
        "unknown options at the cap": fill("#SBATCH --zzzzzzzz -y -y -y -y\n"),
        "partition list at the cap": one_line("#SBATCH -p ", "debug"),
        "export list at the cap": one_line("#SBATCH --export=", "ALL,AXLE_X=1"),
        "gres list at the cap": one_line("#SBATCH --gres=", "gpu:a100:2"),
        "quotes and escapes at the cap": fill('#SBATCH -J "a b\\"c" --comment=\'x y\' \\ \\ \n'),
        "filename patterns at the cap": one_line("#SBATCH --output=", "%x%u%j%A%a%N", sep="/"),
        "one line of spaces at the cap": head + "#SBATCH" + " " * (cap - 40) + "-N1\n",
        "comments at the cap": fill("# just a comment line that sbatch skips\n"),
        "blank lines then a directive": head + "\n" * (cap - 40) + "#SBATCH -N1\n",
        "script just over the cap": head + "x" * cap,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    setup_django()

    from apps.clusters.models import Cluster, ClusterGrant
    from apps.clusters.services import cluster_state_json
    from apps.integrations.slurm import request
    from apps.integrations.slurm.base import ClusterState, NodeInfo, PartitionInfo
    from apps.jobs import validation

    state = ClusterState(
        partitions=[
            PartitionInfo(
                name="debug",
                is_default=True,
                time_limit_minutes=60,
                nodes=["vm"],
                node_cpus=2,
                node_memory_mb=22900,
                def_mem_per_cpu_mb=1024,
                memory_defaults_known=True,
            )
        ],
        nodes=[NodeInfo(name="vm", state="IDLE", cpus=2, memory_mb=22900, partitions=["debug"])],
    )
    cluster = Cluster(name="local", job_root="/scratch/{username}/axle", state=cluster_state_json(state))
    grant = ClusterGrant(
        cluster=cluster,
        cluster_username="scientist",
        allowed_partitions=["debug"],
        max_cpus=1,
        max_mem_mb=2048,
        max_time_minutes=10,
        max_array_size=100,
    )
    workdir = "/scratch/scientist/axle/<job id>"
    worst_name, worst = "", 0.0
    print(f"{'input':44} {'bytes':>8} {'problems':>8} {'best ms':>8} {'worst ms':>9} {'peak MB':>8}")
    for name, script in adversarial_inputs(validation.MAX_SCRIPT_BYTES).items():
        times = []
        for _ in range(args.repeat):
            request._parsed.cache_clear()  # every run reads the script afresh, as a new request does
            started = time.perf_counter()
            result, _ = validation.validate(script=script, grant=grant, workdir=workdir, name="job")
            times.append(time.perf_counter() - started)
        # memory once more, apart: tracemalloc slows Python down
        request._parsed.cache_clear()
        tracemalloc.start()
        validation.validate(script=script, grant=grant, workdir=workdir, name="job")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        best_ms, worst_ms = min(times) * 1000, max(times) * 1000
        print(f"{name:44} {len(script):8d} {len(result.problems):8d} {best_ms:8.1f} {worst_ms:9.1f} {peak / 1e6:8.1f}")
        if worst_ms > worst:
            worst_name, worst = name, worst_ms
    print(f"\nworst-case validation time: {worst:.1f} ms ({worst_name})")


if __name__ == "__main__":
    main()
