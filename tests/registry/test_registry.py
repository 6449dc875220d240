"""Registering models: services, API and pages. Registration talks to the real MLflow
server; the rest needs only the database."""

import pytest

from apps.audit.models import AuditEvent
from apps.jobs.models import Job
from apps.registry import services
from apps.registry.models import ModelVersion, RegisteredModel
from apps.registry.ownership import registered_model_ensure

from .conftest import make_job, make_model_version, make_run, unique_name


@pytest.fixture
def completed_job(alice, team, mlflow, experiment_id, tmp_path):
    run_id = make_run(mlflow, experiment_id, tmp_path, metrics={"accuracy": 0.93, "loss": 0.2})
    return make_job(
        alice,
        team=team,
        mlflow_run_id=run_id,
        mlflow_experiment_id=experiment_id,
        metrics={"accuracy": 0.93, "loss": 0.2},
    )


# ---------------------------------------------------------------- registering (real MLflow)


@pytest.mark.mlflow
def test_it_registers_a_jobs_logged_model_here_and_in_mlflow(api, alice, completed_job, mlflow):
    name = unique_name()
    api.force_authenticate(alice)
    response = api.post(f"/api/v1/models/{name}/versions/", {"job": str(completed_job.uuid)}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["number"] == 1 and body["job"] == str(completed_job.uuid)
    assert body["source_uri"] == f"runs:/{completed_job.mlflow_run_id}/model"
    assert body["sha256"] == mlflow.model_sha256(body["source_uri"])
    assert body["artifact_uri"].endswith("/model")
    assert body["metrics"] == {"accuracy": 0.93, "loss": 0.2}
    model = RegisteredModel.objects.get(name=name)
    assert model.team == completed_job.team and model.created_by == alice
    [found] = mlflow.search_model_versions(name)
    assert (found.version, found.run_id) == ("1", completed_job.mlflow_run_id)
    assert found.source == body["artifact_uri"]
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"model.created", "model_version.registered"} <= actions


@pytest.mark.mlflow
def test_registering_the_same_job_twice_returns_the_same_version(api, alice, bob, completed_job, mlflow):
    name = unique_name()
    first = services.model_version_register(user=alice, model_name=name, job=completed_job)
    again = services.model_version_register(user=bob, model_name=name, job=completed_job)  # a teammate
    assert again.pk == first.pk
    api.force_authenticate(alice)
    response = api.post(f"/api/v1/models/{name}/versions/", {"job": str(completed_job.uuid)}, format="json")
    assert response.status_code == 200 and response.json()["number"] == first.number
    assert ModelVersion.objects.count() == 1
    assert len(mlflow.search_model_versions(name)) == 1


@pytest.mark.mlflow
def test_a_retry_after_a_crash_reuses_the_version_mlflow_already_made(alice, completed_job, mlflow):
    name = unique_name()
    # What the attempt that crashed did in MLflow: the hub's model (tagged), then the version.
    registered_model_ensure(client=mlflow, name=name)
    mlflow.register_model(name, f"runs:/{completed_job.mlflow_run_id}/model", completed_job.mlflow_run_id)
    version = services.model_version_register(user=alice, model_name=name, job=completed_job)
    assert version.number == 1
    assert len(mlflow.search_model_versions(name)) == 1


@pytest.mark.mlflow
def test_a_second_job_becomes_version_two(alice, team, completed_job, mlflow, experiment_id, tmp_path):
    name = unique_name()
    other = make_job(alice, team=team, mlflow_run_id=make_run(mlflow, experiment_id, tmp_path))
    v1 = services.model_version_register(user=alice, model_name=name, job=completed_job)
    v2 = services.model_version_register(user=alice, model_name=name, job=other)
    assert (v1.number, v2.number) == (1, 2)
    assert v1.sha256 != v2.sha256


@pytest.mark.mlflow
def test_a_job_that_logged_no_model_is_refused_with_a_clear_message(api, alice, team, mlflow, experiment_id, tmp_path):
    run_id = make_run(mlflow, experiment_id, tmp_path, model=False)
    job = make_job(alice, team=team, name="no-model", mlflow_run_id=run_id)
    api.force_authenticate(alice)
    response = api.post(f"/api/v1/models/{unique_name()}/versions/", {"job": str(job.uuid)}, format="json")
    assert response.status_code == 409
    assert "no-model" in response.json()["detail"] and "logged no MLflow model" in response.json()["detail"]
    assert not ModelVersion.objects.exists() and not RegisteredModel.objects.exists()


@pytest.mark.mlflow
def test_automatic_registration_runs_as_the_jobs_owner(alice, completed_job):
    name = unique_name()
    Job.objects.filter(pk=completed_job.pk).update(register_model_as=name)
    version = services.model_version_register_from_job(job_id=completed_job.pk)
    assert version.created_by == alice and version.model.name == name
    assert services.model_version_register_from_job(job_id=completed_job.pk).pk == version.pk


@pytest.mark.mlflow
def test_a_failed_automatic_registration_is_on_the_jobs_audit_trail(alice, team, mlflow, experiment_id, tmp_path):
    job = make_job(
        alice,
        team=team,
        mlflow_run_id=make_run(mlflow, experiment_id, tmp_path, model=False),
        register_model_as=unique_name(),
    )
    assert services.model_version_register_from_job(job_id=job.pk) is None
    event = AuditEvent.objects.get(action="model_version.register_failed")
    assert event.subject_id == str(job.uuid) and "logged no MLflow model" in event.after["error"]


# ---------------------------------------------------------------- refusals before MLflow


def test_it_refuses_a_job_that_did_not_complete(api, alice, team):
    job = make_job(alice, team=team, status=Job.Status.FAILED, mlflow_run_id="abc")
    api.force_authenticate(alice)
    response = api.post("/api/v1/models/m1/versions/", {"job": str(job.uuid)}, format="json")
    assert response.status_code == 409
    assert "failed" in response.json()["detail"] and "completed" in response.json()["detail"]


def test_it_refuses_a_job_without_an_mlflow_run(api, alice, team):
    job = make_job(alice, team=team, mlflow_run_id="")
    api.force_authenticate(alice)
    response = api.post("/api/v1/models/m1/versions/", {"job": str(job.uuid)}, format="json")
    assert response.status_code == 409 and "no MLflow run" in response.json()["detail"]


def test_charlie_cannot_register_someone_elses_job(api, alice, charlie, team):
    job = make_job(alice, team=team, mlflow_run_id="abc")
    api.force_authenticate(charlie)
    response = api.post("/api/v1/models/m1/versions/", {"job": str(job.uuid)}, format="json")
    assert response.status_code == 404


def test_a_name_taken_by_another_team_is_refused(api, alice, charlie):
    from tests.factories import MembershipFactory, TeamFactory

    other = TeamFactory(name="nlp")
    MembershipFactory(user=charlie, team=other)
    RegisteredModel.objects.create(name="shared-name", team=other, created_by=charlie)
    job = make_job(alice, team=alice.memberships.get().team, mlflow_run_id="abc")
    api.force_authenticate(alice)
    response = api.post("/api/v1/models/shared-name/versions/", {"job": str(job.uuid)}, format="json")
    assert response.status_code == 409 and "taken by another team" in response.json()["detail"]


def test_bad_model_names_are_refused(alice, team):
    job = make_job(alice, team=team, mlflow_run_id="abc")
    for name in ["", "has space", "-dash-first", "a/b", "register", "x" * 201]:
        with pytest.raises(services.ValidationFailed):
            services.model_version_register(user=alice, model_name=name, job=job)


def test_a_version_cannot_be_changed(alice, team):
    version = make_model_version(make_job(alice, team=team), alice)
    version.sha256 = "0" * 64
    with pytest.raises(Exception, match="immutable"):
        version.save()


# ---------------------------------------------------------------- reading


def test_charlie_cannot_see_visions_models(api, alice, charlie, team):
    make_model_version(make_job(alice, team=team), alice, name="vision-clf")
    api.force_authenticate(charlie)
    assert api.get("/api/v1/models/").json()["results"] == []
    assert api.get("/api/v1/models/vision-clf/").status_code == 404
    assert api.get("/api/v1/models/vision-clf/versions/").status_code == 404
    assert api.get("/api/v1/models/vision-clf/versions/1/").status_code == 404


def test_a_teammate_sees_the_model_with_its_versions(api, alice, bob, team):
    job = make_job(alice, team=team, mlflow_run_id="r1")
    make_model_version(job, alice, name="vision-clf", metrics={"accuracy": 0.9})
    make_model_version(make_job(alice, team=team, mlflow_run_id="r2"), alice, name="vision-clf")
    api.force_authenticate(bob)
    listed = api.get("/api/v1/models/").json()["results"]
    assert [(m["name"], m["version_count"], m["latest_version"]) for m in listed] == [("vision-clf", 2, 2)]
    detail = api.get("/api/v1/models/vision-clf/").json()
    assert [v["number"] for v in detail["versions"]] == [2, 1]
    assert detail["versions"][1]["job"] == str(job.uuid) and detail["versions"][1]["metrics"] == {"accuracy": 0.9}
    assert api.get("/api/v1/models/vision-clf/versions/1/").json()["mlflow_run_id"] == "r1"


def test_a_model_is_created_empty_through_the_api(api, alice, charlie, team):
    api.force_authenticate(alice)
    response = api.post("/api/v1/models/", {"name": "iris-clf", "description": "Iris", "team": "vision"}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["team"] == "vision" and response.json()["version_count"] == 0
    assert api.post("/api/v1/models/", {"name": "iris-clf", "team": "vision"}, format="json").status_code == 409
    api.force_authenticate(charlie)
    assert api.post("/api/v1/models/", {"name": "other", "team": "vision"}, format="json").status_code == 404
    assert AuditEvent.objects.filter(action="model.created").count() == 1


# ---------------------------------------------------------------- pages


def test_the_model_page_puts_versions_metrics_side_by_side(client, alice, team, django_assert_max_num_queries):
    for acc, loss in [(0.8, 0.5), (0.9, 0.3), (0.95, None)]:
        metrics = {"accuracy": acc, **({"loss": loss} if loss is not None else {})}
        make_model_version(make_job(alice, team=team), alice, name="iris-clf", metrics=metrics)
    client.force_login(alice)
    with django_assert_max_num_queries(12):
        page = client.get("/models/iris-clf/")
    html = page.content.decode()
    assert page.status_code == 200
    header = html[html.index("<thead>") : html.index("</thead>")]
    assert header.index(">accuracy<") < header.index(">loss<")
    for number in (1, 2, 3):
        assert f'id="v{number}"' in html
    row3 = html[html.index('id="v3"') : html.index("</tr>", html.index('id="v3"'))]
    assert "0.95" in row3 and "—" in row3 and "/lineage/model_version/" in row3
    assert client.get("/models/").status_code == 200 and "iris-clf" in client.get("/models/").content.decode()


def test_another_teams_model_page_is_not_found(client, alice, charlie, team):
    make_model_version(make_job(alice, team=team), alice, name="iris-clf")
    client.force_login(charlie)
    assert client.get("/models/iris-clf/").status_code == 404


def test_the_register_form_shows_errors_inline(client, alice, team):
    job = make_job(alice, team=team, status=Job.Status.RUNNING)
    client.force_login(alice)
    page = client.post("/models/register/", {"job": str(job.uuid), "name": "iris-clf"})
    assert page.status_code == 400
    assert 'role="alert"' in page.content.decode() and "only a completed job" in page.content.decode()
    page = client.post("/models/register/", {"job": "not-a-job", "name": "iris-clf"})
    assert page.status_code == 400 and "No job" in page.content.decode()


@pytest.mark.mlflow
def test_the_register_form_redirects_to_the_model_page(client, alice, completed_job):
    name = unique_name()
    client.force_login(alice)
    response = client.post("/models/register/", {"job": str(completed_job.uuid), "name": name})
    assert response.status_code == 302 and response["Location"] == f"/models/{name}/#v1"


@pytest.mark.mlflow
def test_registrations_an_outage_left_undone_are_retried(alice, team, completed_job, mlflow, monkeypatch):
    from django.utils import timezone

    from apps.integrations.mlflow.client import TrackingClient
    from apps.jobs import tracking

    name = unique_name()
    Job.objects.filter(pk=completed_job.pk).update(register_model_as=name, finalized_at=timezone.now())
    refused = make_job(alice, team=team, register_model_as=unique_name(), finalized_at=timezone.now(), mlflow_run_id="")
    assert services.model_version_register_from_job(job_id=refused.pk) is None  # refused for good, on record

    monkeypatch.setattr(tracking, "client", lambda: TrackingClient("http://127.0.0.1:9", timeout=2))
    with pytest.raises(services.Unavailable):
        services.model_version_register_from_job(job_id=completed_job.pk)
    assert services.model_versions_register_pending() == 0
    assert not AuditEvent.objects.filter(action="model_version.register_failed", subject_id=str(completed_job.uuid))

    monkeypatch.undo()
    assert services.model_versions_register_pending() == 1
    assert ModelVersion.objects.get().job == completed_job
    assert services.model_versions_register_pending() == 0
    assert AuditEvent.objects.filter(action="model_version.register_failed", subject_id=str(refused.uuid)).count() == 1
