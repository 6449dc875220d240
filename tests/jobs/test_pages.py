import pytest

from apps.jobs.models import Job
from tests.factories import ClusterFactory, ClusterGrantFactory
from tests.registry.conftest import make_dataset_version

SCRIPT = "#!/bin/bash\n#SBATCH -p debug\n#SBATCH -t 5\nhostname\n"


@pytest.mark.django_db
def test_the_submit_form_records_inputs_and_tracking_choices(client, alice, team):
    cluster = ClusterFactory(name="hpc", job_root="/scratch/{username}/axle")
    ClusterGrantFactory(user=alice, cluster=cluster, cluster_username="alice_hpc", allowed_partitions=["debug"])
    version = make_dataset_version(team, alice, name="digits")
    client.force_login(alice)
    page = client.get("/jobs/new/").content.decode()
    assert "digits v1" in page
    response = client.post(
        "/jobs/new/",
        {
            "cluster": "hpc",
            "name": "with-inputs",
            "script": SCRIPT.replace("\n", "\r\n"),
            "parameters": "LR=0.1",
            "datasets": [str(version.uuid)],
            "code_repo": "https://git.example.org/x.git",
            "code_ref": "main",
            "image": "/shared/img.sif",
            "verify": "on",
            "register": "digits-clf",
            "action": "submit",
        },
    )
    job = Job.objects.get(name="with-inputs")
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.uuid}/"
    assert list(job.dataset_versions.all()) == [version]
    assert (job.code_repo, job.code_ref, job.image_path, job.verify_datasets, job.register_model_as) == (
        "https://git.example.org/x.git",
        "main",
        "/shared/img.sif",
        True,
        "digits-clf",
    )
    assert job.script == SCRIPT and job.parameters == {"LR": "0.1"}


@pytest.mark.django_db
def test_a_foreign_dataset_version_is_refused_on_the_form(client, alice, charlie, team):
    cluster = ClusterFactory(name="hpc", job_root="/scratch/{username}/axle")
    ClusterGrantFactory(user=charlie, cluster=cluster, cluster_username="charlie", allowed_partitions=["debug"])
    version = make_dataset_version(team, alice, name="secret")
    client.force_login(charlie)
    response = client.post(
        "/jobs/new/", {"cluster": "hpc", "script": SCRIPT, "datasets": [str(version.uuid)], "action": "submit"}
    )
    assert response.status_code == 200 and not Job.objects.exists()
    assert "cannot run as written" in response.content.decode()


@pytest.mark.django_db
def test_job_lists_cost_the_same_queries_for_3_or_12_jobs(client, api, alice, team):
    from tests.registry.conftest import make_job

    grant = ClusterGrantFactory(user=alice, cluster=ClusterFactory(name="hpc"))
    version = make_dataset_version(team, alice, name="digits")

    def add(n):
        for _ in range(n):
            make_job(alice, team=team, grant=grant).dataset_versions.add(version)

    def count(fn):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as ctx:
            fn()
        return len(ctx.captured_queries)

    client.force_login(alice)
    api.force_authenticate(alice)
    add(3)
    page_3, api_3 = count(lambda: client.get("/jobs/")), count(lambda: api.get("/api/v1/jobs/"))
    add(9)
    page_12, api_12 = count(lambda: client.get("/jobs/")), count(lambda: api.get("/api/v1/jobs/"))
    assert (page_12, api_12) == (page_3, api_3)
