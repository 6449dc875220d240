"""POST /api/v1/jobs/batch/: many plain jobs in one request, all or none, each refused job
named by its index with its problems; one audit append and a task per batch of AXLE_SUBMIT_BATCH."""

import pytest

from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_verify
from apps.jobs.models import Job
from tests.factories import ClusterFactory, ClusterGrantFactory, local_state

pytestmark = pytest.mark.django_db

SCRIPT = "#!/bin/bash\n#SBATCH --partition=debug\n#SBATCH --time=5\nhostname\n"


@pytest.fixture
def grant(alice):
    cluster = ClusterFactory(name="hpc", job_root="/scratch/{username}/axle", state=local_state())
    return ClusterGrantFactory(
        user=alice,
        cluster=cluster,
        cluster_username="alice_hpc",
        allowed_partitions=["debug"],
        max_cpus=1,
        max_mem_mb=2048,
        max_time_minutes=10,
        max_array_size=10,
    )


def post(api, user, jobs, cluster="hpc"):
    api.force_authenticate(user)
    return api.post("/api/v1/jobs/batch/", {"cluster": cluster, "jobs": jobs}, format="json")


def test_a_batch_records_every_job_with_its_checks_events_and_tasks(api, alice, grant, settings):
    from django_q.models import OrmQ

    settings.AXLE_SUBMIT_BATCH = 2
    jobs = [{"name": f"b-{i}", "script": SCRIPT, "parameters": {"I": i}} for i in range(5)]
    answer = post(api, alice, jobs)
    assert answer.status_code == 201, answer.content
    body = answer.json()["jobs"]
    assert [j["name"] for j in body] == [f"b-{i}" for i in range(5)]
    made = list(Job.objects.filter(owner=alice).order_by("pk"))
    assert [j.name for j in made] == [f"b-{i}" for i in range(5)]
    assert {str(j.uuid) for j in made} == {j["id"] for j in body}
    for i, job in enumerate(made):
        assert job.status == Job.Status.QUEUED and job.grant == grant and job.cluster_username == "alice_hpc"
        assert job.parameters == {"I": str(i)} and job.marker == f"axle-{job.uuid.hex}"
        assert job.effective_request.get("partition") == "debug"
        assert job.workdir == f"{grant.job_root}/{job.uuid}"
    created = AuditEvent.objects.filter(action="job.created").order_by("seq")
    assert [e.subject_id for e in created] == [str(j.uuid) for j in made]
    assert audit_verify().ok
    # Tests run tasks inline on commit (sync): the task rows are not in the broker's table;
    # what is queued is one task per AXLE_SUBMIT_BATCH (2) jobs, checked on the service below.
    assert not OrmQ.objects.exists()


def test_the_service_queues_one_task_per_submission_batch(alice, grant, settings, django_capture_on_commit_callbacks):
    from apps.core import tasks
    from apps.jobs import services

    settings.AXLE_SUBMIT_BATCH = 2
    queued = []
    real = tasks.async_task
    try:
        tasks.async_task = lambda *args, **kwargs: queued.append(args)
        with django_capture_on_commit_callbacks(execute=True):
            made = services.job_create_many(
                user=alice, cluster=grant.cluster, jobs=[{"script": SCRIPT} for _ in range(5)]
            )
    finally:
        tasks.async_task = real
    assert [(a[1], a[4]) for a in queued] == [
        ("apps.jobs.tasks.job_submit", (made[0].pk,)),
        ("apps.jobs.tasks.job_submit", (made[2].pk,)),
        ("apps.jobs.tasks.job_submit", (made[4].pk,)),
    ]


def test_one_job_that_does_not_fit_refuses_the_batch_and_names_it(api, alice, grant):
    jobs = [
        {"name": "ok", "script": SCRIPT},
        {"name": "greedy", "script": SCRIPT.replace("--time=5", "--time=600")},
        {"name": "ok2", "script": SCRIPT},
        {"name": "elsewhere", "script": SCRIPT.replace("debug", "gpu")},
    ]
    answer = post(api, alice, jobs)
    assert answer.status_code == 400, answer.content
    refused = answer.json()["jobs"]
    assert [r["index"] for r in refused] == [1, 3]
    assert refused[0]["problems"] and refused[0]["problems"][0]["line"] == 3
    assert any("partition" in p["message"].lower() for p in refused[1]["problems"])
    assert not Job.objects.exists() and not AuditEvent.objects.filter(action="job.created").exists()


def test_a_schema_error_in_one_item_is_reported_at_its_index(api, alice, grant):
    answer = post(api, alice, [{"script": SCRIPT}, {"script": "hostname\n"}])
    assert answer.status_code == 400, answer.content
    assert "jobs" in str(answer.json()) and "interpreter" in str(answer.json())
    assert not Job.objects.exists()


def test_the_active_job_limit_counts_the_whole_batch(api, alice, grant):
    grant.max_active_jobs = 3
    grant.save()
    answer = post(api, alice, [{"script": SCRIPT} for _ in range(4)])
    assert answer.status_code == 400 and "none was created" in answer.json()["detail"]
    assert not Job.objects.exists()
    assert post(api, alice, [{"script": SCRIPT} for _ in range(3)]).status_code == 201
    assert Job.objects.count() == 3


def test_empty_and_oversized_batches_and_no_grant_are_refused(api, alice, bob, grant):
    assert post(api, alice, []).status_code == 400
    assert post(api, alice, [{"script": SCRIPT}] * 1001).status_code == 400
    assert post(api, bob, [{"script": SCRIPT}]).status_code in (403, 404)
    assert not Job.objects.exists()
