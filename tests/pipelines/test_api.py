"""The pipelines API and pages without a cluster: registering, listing by name, who sees what,
and the refusals that name the field."""

import pytest

from apps.accounts import services as account_services
from apps.audit.models import AuditEvent
from apps.pipelines import services
from apps.pipelines.models import Pipeline, PipelineRun, StepRun
from tests.factories import ClusterFactory, ClusterGrantFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def grant(alice):
    return ClusterGrantFactory(user=alice, cluster=ClusterFactory(name="hpc"), cluster_username="alice01")


def token_client(api, user):
    _, secret = account_services.token_create(user=user, name="t")
    api.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    return api


BODY = {"team": "vision", "name": "etl", "cluster": "hpc", "repo_url": "/srv/git/etl.git", "branch": "main"}


def test_a_member_registers_a_pipeline_and_finds_it_by_name(api, alice, grant):
    response = token_client(api, alice).post("/api/v1/pipelines/", BODY, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["name"], body["team"], body["cluster"], body["path"]) == ("etl", "vision", "hpc", "axle-pipeline.yaml")
    pipeline = Pipeline.objects.get(uuid=body["id"])
    assert AuditEvent.objects.filter(action="pipeline.created", subject_id=str(pipeline.uuid)).exists()
    found = api.get("/api/v1/pipelines/?name=etl").json()
    assert [p["id"] for p in found["results"]] == [body["id"]]
    assert api.get("/api/v1/pipelines/?name=other").json()["results"] == []
    assert api.get(f"/api/v1/pipelines/{body['id']}/").json()["repo_url"] == "/srv/git/etl.git"
    again = api.post("/api/v1/pipelines/", BODY, format="json")
    assert again.status_code == 409


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("repo_url", "https://alice:tok@git.example.com/etl.git", "without credentials"),
        ("branch", "-x", "branch"),
        ("path", "../etc/passwd", "path"),
    ],
)
def test_it_refuses_what_git_or_safety_would_not_take(api, alice, grant, field, value, says):
    response = token_client(api, alice).post("/api/v1/pipelines/", {**BODY, field: value}, format="json")
    assert response.status_code == 400
    assert says in response.json()["detail"]


def test_another_team_never_learns_a_pipeline_exists(api, alice, charlie, grant):
    pipeline = services.pipeline_create(
        user=alice, team=alice.memberships.get().team, name="etl", grant=grant, repo_url="/srv/git/etl.git"
    )
    run = PipelineRun.objects.create(pipeline=pipeline, number=1, status=PipelineRun.Status.FAILED, commit="a" * 40)
    client = token_client(api, charlie)
    assert client.get(f"/api/v1/pipelines/{pipeline.uuid}/").status_code == 404
    assert client.get(f"/api/v1/pipeline-runs/{run.uuid}/").status_code == 404
    assert client.post(f"/api/v1/pipeline-runs/{run.uuid}/retry/").status_code == 404
    assert client.get("/api/v1/pipelines/").json()["results"] == []


def test_retry_reruns_the_failed_step_and_its_dependents_only(api, alice, bob, grant):
    pipeline = services.pipeline_create(
        user=alice, team=alice.memberships.get().team, name="etl", grant=grant, repo_url="/srv/git/etl.git"
    )
    spec = {
        "name": "etl",
        "parameters": {},
        "steps": [
            {"name": "a", "script": "#!/bin/bash\n", "outputs": ["data"]},
            {"name": "b", "script": "#!/bin/bash\n", "needs": ["a"]},
            {"name": "c", "script": "#!/bin/bash\n", "needs": ["b"]},
            {"name": "d", "script": "#!/bin/bash\n", "needs": ["a"]},
        ],
    }
    run = PipelineRun.objects.create(
        pipeline=pipeline, number=1, status=PipelineRun.Status.FAILED, commit="a" * 40, spec=spec, failed_step="b"
    )
    states = {
        "a": StepRun.State.COMPLETED,
        "b": StepRun.State.FAILED,
        "c": StepRun.State.CANCELLED,
        "d": StepRun.State.COMPLETED,
    }
    for i, s in enumerate(spec["steps"]):
        StepRun.objects.create(run=run, name=s["name"], position=i, needs=s.get("needs", []), state=states[s["name"]])
    # bob is alice's teammate, but the run runs as alice's grant (its folder is her account's):
    # only she may run its steps again; bob starts a run of his own.
    refused = token_client(api, bob).post(f"/api/v1/pipeline-runs/{run.uuid}/retry/")
    assert refused.status_code == 403 and "only they can retry it" in refused.json()["detail"]
    response = token_client(api, alice).post(f"/api/v1/pipeline-runs/{run.uuid}/retry/")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "running" and body["failed_step"] == ""
    got = {s["name"]: (s["state"], s["attempt"]) for s in body["steps"]}
    assert got == {"a": ("completed", 1), "b": ("waiting", 2), "c": ("waiting", 2), "d": ("completed", 1)}
    assert api.post(f"/api/v1/pipeline-runs/{run.uuid}/retry/").status_code == 409


def test_the_pages_list_the_pipeline_and_show_a_run(client, alice, grant):
    pipeline = services.pipeline_create(
        user=alice, team=alice.memberships.get().team, name="etl", grant=grant, repo_url="/srv/git/etl.git"
    )
    run = PipelineRun.objects.create(
        pipeline=pipeline,
        number=1,
        status=PipelineRun.Status.FAILED,
        commit="b" * 40,
        failed_step="",
        problems=[{"path": "steps.train.needs", "line": 7, "message": "needs 'x', which is not a step."}],
        message="The pipeline file does not validate",
    )
    client.force_login(alice)
    assert "etl" in client.get("/pipelines/").content.decode()
    page = client.get(f"/pipelines/{pipeline.uuid}/").content.decode()
    assert "#1" in page and "bbbbbbbbbbbb" in page and 'id="triggers"' in page
    page = client.get(f"/pipeline-runs/{run.uuid}/").content.decode()
    assert "line 7" in page and "steps.train.needs" in page


def test_the_run_list_costs_the_same_queries_for_more_runs(api, alice, grant, django_assert_max_num_queries):
    pipeline = services.pipeline_create(
        user=alice, team=alice.memberships.get().team, name="etl", grant=grant, repo_url="/srv/git/etl.git"
    )
    client = token_client(api, alice)

    def add_runs(start, count):
        for n in range(start, start + count):
            run = PipelineRun.objects.create(pipeline=pipeline, number=n, commit="d" * 40, triggered_by=alice)
            step = StepRun.objects.create(run=run, name="a", position=0)
            step.outputs.create(name="data", path=f"/r/{n}/data")

    add_runs(1, 2)
    with django_assert_max_num_queries(9):
        assert len(client.get("/api/v1/pipeline-runs/").json()["results"]) == 2
    add_runs(3, 6)
    with django_assert_max_num_queries(9):
        assert len(client.get("/api/v1/pipeline-runs/").json()["results"]) == 8
