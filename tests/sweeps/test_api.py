"""The sweeps API and pages: create, validate, see, stop, extend; only a team member sees a
sweep and only its owner changes it."""

from pathlib import Path

import pytest

from apps.accounts import services as account_services
from apps.audit.models import AuditEvent
from apps.jobs.models import Job
from apps.sweeps import services
from apps.sweeps.models import Sweep, Trial

from .conftest import experiment

pytestmark = pytest.mark.django_db


def token_client(api, user):
    _, secret = account_services.token_create(user=user, name="t")
    api.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    return api


def test_it_creates_a_sweep_with_its_trials_asked_up_front(api, alice, grant):
    response = token_client(api, alice).post(
        "/api/v1/sweeps/", {"cluster": "hpc", "spec": experiment(trials=5)}, format="json"
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["status"], body["algorithm"], body["max_trial_count"]) == ("running", "random", 5)
    sweep = Sweep.objects.get(uuid=body["id"])
    values = list(sweep.trials.order_by("number").values_list("params", flat=True))
    assert len(values) == 5 and len({v["lr"] for v in values}) == 5
    assert all(0.01 <= v["lr"] <= 0.1 for v in values)
    assert AuditEvent.objects.filter(action="sweep.created", subject_id=str(sweep.uuid)).exists()


def test_validate_answers_every_problem_with_its_field_path(api, alice, grant):
    bad = experiment().replace("min: '0.01'", "min: '0.5'")
    response = token_client(api, alice).post("/api/v1/sweeps/validate/", {"cluster": "hpc", "spec": bad}, format="json")
    assert response.status_code == 200
    assert response.json()["problems"] == [
        {"path": "spec.parameters[0].feasibleSpace.min", "message": "0.5 is greater than max 0.1."}
    ]
    good = token_client(api, alice).post(
        "/api/v1/sweeps/validate/", {"cluster": "hpc", "spec": experiment()}, format="json"
    )
    assert good.json()["ok"] is True and good.json()["first_array"] == 4


def test_a_bad_spec_is_a_400_with_the_problems_never_a_traceback(api, alice, grant):
    response = token_client(api, alice).post(
        "/api/v1/sweeps/", {"cluster": "hpc", "spec": "spec: [oops"}, format="json"
    )
    assert response.status_code == 400
    assert "not valid YAML" in str(response.json())
    assert not Sweep.objects.exists()


def test_the_grant_refuses_an_array_larger_than_it_allows_with_the_numbers(api, alice, grant):
    response = token_client(api, alice).post(
        "/api/v1/sweeps/", {"cluster": "hpc", "spec": experiment(trials=11)}, format="json"
    )
    assert response.status_code == 400
    text = str(response.json())
    assert "11" in text and "10" in text


def test_the_grant_counts_the_sweeps_array_as_one_more_active_job(alice, grant):
    from tests.registry.conftest import make_job

    for _ in range(3):
        make_job(alice, status=Job.Status.RUNNING, grant=grant)
    result = services.sweep_validate(user=alice, cluster=grant.cluster, spec_text=experiment())
    assert any("3 active jobs" in p["message"] and "limit of 3" in p["message"] for p in result["problems"])


def test_a_teammate_sees_a_sweep_but_only_the_owner_stops_it_and_a_stranger_sees_nothing(
    api, alice, bob, charlie, grant
):
    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=experiment())
    assert token_client(api, bob).get(f"/api/v1/sweeps/{sweep.uuid}/").status_code == 200
    assert token_client(api, bob).post(f"/api/v1/sweeps/{sweep.uuid}/stop/").status_code == 403
    assert token_client(api, charlie).get(f"/api/v1/sweeps/{sweep.uuid}/").status_code == 404
    assert token_client(api, charlie).get(f"/api/v1/sweeps/{sweep.uuid}/trials/").status_code == 404


def test_stopping_a_sweep_cancels_its_waiting_trials_and_queued_array(api, alice, grant):
    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=experiment())
    job = Job.objects.create(
        owner=alice,
        grant=grant,
        cluster=grant.cluster,
        name="lr-0",
        script="#!/bin/bash\n",
        marker="m-stop",
        cluster_username="alice01",
        workdir="/w",
        stdout_path="/w/o",
        stderr_path="/w/e",
    )
    sweep.trials.update(job=job, task_id=0, state=Trial.State.PENDING)
    response = token_client(api, alice).post(f"/api/v1/sweeps/{sweep.uuid}/stop/")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "stopped"
    assert set(sweep.trials.values_list("state", flat=True)) == {"cancelled"}
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert token_client(api, alice).post(f"/api/v1/sweeps/{sweep.uuid}/stop/").status_code == 409


def test_stopping_a_sweep_cancels_all_its_arrays_with_one_slurm_call(alice, grant, monkeypatch):
    from contextlib import contextmanager

    calls = []

    class Cluster:
        def cancel(self, job_id):
            raise AssertionError("one scancel per array: the batched call serves all")

        def cancel_many(self, job_ids):
            calls.append(sorted(job_ids))

    @contextmanager
    def fake_client(grant):
        yield Cluster()

    monkeypatch.setattr(services, "slurm_client", fake_client)
    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=experiment(trials=2))
    for number, trial in enumerate(sweep.trials.order_by("number")):
        job = Job.objects.create(
            owner=alice,
            grant=grant,
            cluster=grant.cluster,
            name=f"wave-{number}",
            script="#!/bin/bash\n",
            marker=f"m-wave-{number}",
            cluster_username="alice01",
            workdir="/w",
            stdout_path="/w/o",
            stderr_path="/w/e",
            status=Job.Status.RUNNING,
            slurm_job_id=str(700 + number),
        )
        Trial.objects.filter(pk=trial.pk).update(job=job, task_id=0, state=Trial.State.RUNNING)
    assert services.cancel_rest(sweep) == 2
    assert calls == [["700", "701"]]


def test_extending_asks_more_trials_that_continue_the_search(api, alice, grant):
    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=experiment(trials=3))
    first = list(sweep.trials.values_list("params", flat=True))
    response = token_client(api, alice).post(f"/api/v1/sweeps/{sweep.uuid}/extend/", {"trials": 2}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["max_trial_count"] == 5
    params = list(sweep.trials.order_by("number").values_list("params", flat=True))
    assert params[:3] == first and len(params) == 5 and len({p["lr"] for p in params}) == 5
    trials = token_client(api, alice).get(f"/api/v1/sweeps/{sweep.uuid}/trials/").json()
    assert [t["number"] for t in trials] == [0, 1, 2, 3, 4]
    assert AuditEvent.objects.filter(action="sweep.extended", subject_id=str(sweep.uuid)).exists()


def test_a_grid_cannot_grow_beyond_its_points(alice, grant):
    from apps.core.errors import ValidationFailed

    text = experiment(algorithm="grid", trials=3, space={"min": "0.01", "max": "0.05", "step": "0.01"})
    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=text)
    with pytest.raises(ValidationFailed, match="at most 2"):
        services.sweep_extend(user=alice, sweep=sweep, trials=3)


def test_the_pages_list_show_and_offer_a_template(client, alice, grant, django_assert_max_num_queries):
    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=experiment())
    client.force_login(alice)
    assert "lr" in client.get("/sweeps/").content.decode()
    page = client.get(f"/sweeps/{sweep.uuid}/").content.decode()
    assert 'id="trials"' in page and "sweep-chart-data" in page
    form = client.get("/sweeps/new/").content.decode()
    assert "kubeflow.org/v1beta1" in form and "trialParameters.learningRate" in form
    check = client.post("/sweeps/check/", {"cluster": "hpc", "spec": "kind: Experiment\n"}).content.decode()
    assert "metadata.name" in check


def test_the_form_creates_a_sweep(client, alice, grant):
    client.force_login(alice)
    response = client.post("/sweeps/new/", {"cluster": "hpc", "spec": experiment(), "action": "create"})
    assert response.status_code == 302
    assert Sweep.objects.get().name == "lr"


def test_the_home_page_shows_the_teams_sweeps(client, alice, bob, charlie, grant):
    services.sweep_create(user=alice, cluster=grant.cluster, spec_text=experiment())
    client.force_login(bob)
    assert "Recent sweeps" in client.get("/").content.decode() and ">lr</a>" in client.get("/").content.decode()
    client.force_login(charlie)
    assert ">lr</a>" not in client.get("/").content.decode()


def test_the_sweep_page_shows_parameter_importances_once_trials_succeeded(client, alice, grant):
    import yaml

    document = yaml.safe_load(experiment(trials=10))
    document["spec"]["parameters"].append(
        {"name": "momentum", "parameterType": "double", "feasibleSpace": {"min": "0.5", "max": "0.9"}}
    )
    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=yaml.safe_dump(document))
    client.force_login(alice)
    assert 'id="importances"' not in client.get(f"/sweeps/{sweep.uuid}/").content.decode()  # nothing ended yet
    for trial in sweep.trials.all():
        Trial.objects.filter(pk=trial.pk).update(state="succeeded", objective=trial.params["lr"])
    page = client.get(f"/sweeps/{sweep.uuid}/").content.decode()
    assert 'id="importances"' in page
    assert page.index("<th>lr</th>", page.index('id="importances"')) < page.index(
        "<th>momentum</th>", page.index('id="importances"')
    )


def test_lineage_leads_from_a_sweep_to_its_job_arrays_and_back(client, alice, charlie, grant):
    from apps.lineage.selectors import lineage

    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=experiment())
    job = Job.objects.create(
        owner=alice,
        grant=grant,
        cluster=grant.cluster,
        name="lr-0",
        script="#!/bin/bash\n",
        marker="m-lineage",
        cluster_username="alice01",
        workdir="/w",
        stdout_path="/w/o",
        stderr_path="/w/e",
        team=sweep.team,
    )
    sweep.trials.update(job=job)
    down = lineage(user=alice, kind="sweep", id=sweep.uuid)
    assert (f"sweep:{sweep.uuid}", f"job:{job.uuid}", "ran_as") in {
        (e.source, e.target, e.relation) for e in down.edges
    }
    up = lineage(user=alice, kind="job", id=job.uuid)
    assert f"sweep:{sweep.uuid}" in up.nodes
    client.force_login(alice)
    assert client.get(f"/lineage/sweep/{sweep.uuid}/").status_code == 200
    client.force_login(charlie)
    assert client.get(f"/lineage/sweep/{sweep.uuid}/").status_code == 404


def hyperband_spec(*, eta="2", r_l="2", trials=10, parallel=2) -> str:
    import yaml

    document = yaml.safe_load((Path(__file__).resolve().parent / "katib" / "examples" / "hyperband.yaml").read_text())
    document["spec"]["trialTemplate"]["trialSpec"] = (
        "#!/bin/bash\n#SBATCH --time=5\necho ${trialParameters.learningRate} ${trialParameters.numberEpochs}\n"
    )
    document["spec"]["algorithm"]["algorithmSettings"] = [
        {"name": "resource_name", "value": "num-epochs"},
        {"name": "eta", "value": eta},
        {"name": "r_l", "value": r_l},
        {"name": "random_state", "value": "3"},
    ]
    document["spec"]["maxTrialCount"] = trials
    document["spec"]["parallelTrialCount"] = parallel
    return yaml.safe_dump(document)


def test_katibs_hyperband_example_validates_and_runs_its_first_rung_as_one_wave(alice, grant):
    result = services.sweep_validate(user=alice, cluster=grant.cluster, spec_text=hyperband_spec(trials=2))
    assert result["ok"], result["problems"]
    assert result["first_array"] == 2  # eta**s_max = 2 configurations in the first bracket
    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=hyperband_spec())
    trials = list(sweep.trials.order_by("number"))
    assert [t.params["num-epochs"] for t in trials] == [1, 1]  # the first rung's budget
    assert [t.values["numberEpochs"] for t in trials] == ["1", "1"]
    assert len({t.params["lr"] for t in trials}) == 2
    assert trials[0].system_attrs == {"hyperband": {"bracket": 1, "rung": 0, "budget": 1}}


def test_the_live_sweep_partial_costs_the_same_queries_for_ten_trials_as_for_forty(client, alice, grant):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(alice)
    grant.max_array_size = None
    grant.save()
    counts = []
    for trials in (10, 40):
        sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=experiment(trials=trials))
        job = Job.objects.create(
            owner=alice,
            grant=grant,
            cluster=grant.cluster,
            name=f"lr-{trials}",
            script="#!/bin/bash\n",
            marker=f"m-live-{trials}",
            cluster_username="alice01",
            workdir="/w",
            stdout_path="/w/o",
            stderr_path="/w/e",
        )
        for trial in sweep.trials.all():
            Trial.objects.filter(pk=trial.pk).update(job=job, task_id=trial.number, state="succeeded", objective=0.1)
        url = f"/sweeps/{sweep.uuid}/?live=stale"
        client.get(url, HTTP_HX_REQUEST="true")  # importances computed and kept
        with CaptureQueriesContext(connection) as queries:
            answer = client.get(url, HTTP_HX_REQUEST="true")
        page = answer.content.decode()
        assert page.lstrip().startswith('<div id="sweep-live"') and 'hx-swap-oob="true"' in page[:300]
        counts.append(len(queries))
        # A poll that holds the current version gets 204 (286 once the sweep ended), unrendered.
        version = answer["ETag"].strip('"')
        with CaptureQueriesContext(connection) as unchanged:
            held = client.get(f"/sweeps/{sweep.uuid}/?live={version}", HTTP_HX_REQUEST="true")
        assert held.status_code in (204, 286) and held.content == b""
        assert len(unchanged) < len(queries)
    assert counts[0] == counts[1], counts


@pytest.mark.parametrize("gap", [False, True])
def test_each_launched_trial_gets_its_index_in_the_array_with_or_without_a_gap_in_the_numbers(alice, grant, gap):
    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=experiment(trials=4, parallel=4))
    if gap:  # a trial that ended before its array was launched is not in it
        sweep.trials.filter(number=1).update(state=Trial.State.CANCELLED)
    job = services.sweep_launch(sweep_id=sweep.pk)
    assert job is not None
    launched = list(sweep.trials.filter(job=job).order_by("number").values_list("number", "task_id"))
    assert launched == ([(0, 0), (2, 1), (3, 2)] if gap else [(0, 0), (1, 1), (2, 2), (3, 3)])
