"""Before a sweep is created: its first job array put to Slurm with `sbatch --test-only`
(as the grant's account), the grant's limits and the fair-share; see apps.jobs.preflight."""

from apps.clusters.models import Cluster
from apps.clusters.selectors import grant_for_submission
from apps.jobs.preflight import Preflight, job_preflight

from . import services, trialscript
from .spec import SpecError, parse


def sweep_preflight(*, user, cluster: Cluster, spec_text: str) -> Preflight:
    try:
        spec = parse(spec_text)
    except SpecError as exc:
        return Preflight(cluster=cluster.name, problems=exc.problems)
    grant = grant_for_submission(user=user, cluster=cluster)
    folder = f"{grant.job_root}/sweep" if grant else "/sweep"
    size = services._first_wave_size(spec)  # the array sweep_create would submit first
    script = trialscript.array_script(
        spec=spec, script=spec.script, folder=folder, wave=0, size=max(size, 1), parallel=spec.parallel_trial_count
    )
    result = job_preflight(user=user, cluster=cluster, script=script, name=spec.name)
    # The wrapper's lines are not the user's: a line number would point at the wrong line.
    for problem in result.problems:
        problem.pop("line", None)
        problem.setdefault("path", "spec.trialTemplate.trialSpec")
    return result
