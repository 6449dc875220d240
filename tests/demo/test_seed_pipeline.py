"""The digits pipeline of examples/digits-pipeline, run by `./dev up`'s seed_pipeline on the real
local cluster from a repository holding the example: four jobs linked by afterok, the data,
model and report handed from step to step, and the model registered by the last step."""

from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from apps.accounts.models import Membership
from apps.pipelines.models import Pipeline, PipelineRun, StepRun
from apps.registry.models import ModelVersion
from tests.factories import UserFactory
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant
from tests.pipelines.conftest import ClusterRepo

pytestmark = [pytest.mark.slurm, pytest.mark.mlflow, pytest.mark.slow]

EXAMPLE = Path(settings.BASE_DIR) / "examples" / "digits-pipeline"


def test_seed_pipeline_leaves_one_finished_run_of_the_digits_pipeline(team):
    if local_cluster_env() is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    scientist = UserFactory(username="scientist")
    Membership.objects.create(user=scientist, team=team, role=Membership.Role.MEMBER)
    grant = make_local_grant(make_local_cluster("ssh", "local-ssh"), scientist, "scientist", max_time_minutes=60)
    repo = ClusterRepo(grant)
    repo.commit({f"examples/digits-pipeline/{p.name}": p.read_text() for p in EXAMPLE.iterdir() if p.is_file()})

    out = StringIO()
    call_command("seed_pipeline", code_repo=repo.path, code_ref="main", stdout=out)
    run = PipelineRun.objects.get(pipeline__name="digits")
    assert run.status == PipelineRun.Status.SUCCEEDED, out.getvalue()
    steps = {s.name: s for s in run.steps.select_related("job")}
    assert list(steps) == ["prepare", "train", "evaluate", "register"]
    assert all(s.state == StepRun.State.COMPLETED for s in steps.values())
    data = steps["prepare"].outputs.get(name="data")
    assert data.sha256 and data.size > 100_000 and data.file_count == 1
    # evaluate reads prepare's data and train's model: it waits for both.
    after = next(a for a in steps["evaluate"].job.hub_args if a.startswith("--dependency=afterok:"))
    assert set(after.split(":")[1:]) == {steps["train"].job.slurm_job_id, steps["prepare"].job.slurm_job_id}
    version = ModelVersion.objects.get(model__name="digits-pipeline")
    assert version.job == steps["register"].job
    assert "registered by step register" in out.getvalue()

    call_command("seed_pipeline", code_repo=repo.path, code_ref="main", stdout=out)
    assert Pipeline.objects.count() == 1 and PipelineRun.objects.count() == 1
    assert "already ran" in out.getvalue()
    schedule = Pipeline.objects.get().schedules.get()  # one, however often it is seeded
    assert (schedule.cron, schedule.timezone, schedule.enabled) == ("0 3 * * *", "UTC", True)
    assert "schedule 0 3 * * * (UTC), next at" in out.getvalue()
