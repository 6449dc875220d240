"""A pipeline in lineage: step job -produced-> output -input_of-> consuming step's job
-produced-> model version, and a cached step's output drawn as the earlier one reused."""

import pytest

from apps.core.errors import NotFound
from apps.lineage.selectors import lineage
from apps.pipelines.models import Pipeline, PipelineRun, StepOutput, StepRun
from tests.factories import ClusterGrantFactory
from tests.registry.conftest import make_job, make_model_version

pytestmark = pytest.mark.django_db

SPEC = {
    "name": "p",
    "parameters": {},
    "steps": [
        {"name": "prepare", "script": "#!/bin/bash\n", "outputs": ["data"]},
        {"name": "train", "script": "#!/bin/bash\n", "needs": ["prepare"], "inputs": {"data": ["prepare", "data"]}},
    ],
}


def _run(alice, team, grant, number, prepare_job, train_job):
    pipeline = Pipeline.objects.get_or_create(
        team=team, name="p", defaults={"owner": alice, "grant": grant, "cluster": grant.cluster, "repo_url": "/r"}
    )[0]
    run = PipelineRun.objects.create(pipeline=pipeline, number=number, commit="c" * 40, spec=SPEC, status="succeeded")
    prepare = StepRun.objects.create(run=run, name="prepare", position=0, job=prepare_job, state="completed")
    StepRun.objects.create(run=run, name="train", position=1, needs=["prepare"], job=train_job, state="completed")
    return prepare


def test_a_model_traces_back_through_the_output_its_step_read(alice, charlie, team):
    grant = ClusterGrantFactory(user=alice)
    prepare_job = make_job(alice, team=team, grant=grant)
    train_job = make_job(alice, team=team, grant=grant)
    version = make_model_version(train_job, alice, name="digits")
    prepare = _run(alice, team, grant, 1, prepare_job, train_job)
    data = StepOutput.objects.create(step=prepare, name="data", path="/r/1/data", sha256="ab" * 32, size=10)

    graph = lineage(user=alice, kind="model_version", id=version.uuid)
    edges = {(e.source, e.relation, e.target) for e in graph.edges}
    assert (f"job:{prepare_job.uuid}", "produced", f"pipeline_output:{data.uuid}") in edges
    assert (f"pipeline_output:{data.uuid}", "input_of", f"job:{train_job.uuid}") in edges
    assert (f"job:{train_job.uuid}", "produced", f"model_version:{version.uuid}") in edges

    # A second run whose prepare step was a cache hit: its output is the first one, reused.
    train_again = make_job(alice, team=team, grant=grant)
    cached = _run(alice, team, grant, 2, None, train_again)
    reused = StepOutput.objects.create(
        step=cached, name="data", path=data.path, sha256=data.sha256, size=10, reused_from=data
    )
    graph = lineage(user=alice, kind="pipeline_output", id=data.uuid)
    edges = {(e.source, e.relation, e.target) for e in graph.edges}
    assert (f"pipeline_output:{data.uuid}", "reused_as", f"pipeline_output:{reused.uuid}") in edges
    assert (f"pipeline_output:{reused.uuid}", "input_of", f"job:{train_again.uuid}") in edges
    assert graph.nodes[f"pipeline_output:{reused.uuid}"].attrs["reused_from_run"] == 1

    with pytest.raises(NotFound):  # another team never sees it
        lineage(user=charlie, kind="pipeline_output", id=data.uuid)
