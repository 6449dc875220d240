"""The grant holds when the script leaves things to Slurm's defaults, asks for whole nodes,
plays with file name patterns, floods the parser, or uses options slurmrestd cannot take
(issue 9). Grant as in the issue: partition debug, 1 CPU, 2048 MB, 10 minutes."""

import pytest

from apps.clusters.models import Cluster
from apps.core.errors import ValidationFailed
from apps.jobs import services
from apps.jobs.models import Job
from apps.jobs.validation import MAX_SCRIPT_BYTES
from tests.factories import ClusterFactory, ClusterGrantFactory, local_state


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


def create(api, user, **body):
    api.force_authenticate(user)
    return api.post("/api/v1/jobs/", {"cluster": "hpc", **body}, format="json")


@pytest.mark.django_db
class TestSlurmDefaults:
    def test_a_script_without_time_or_partition_is_recorded_as_slurm_will_run_it(self, alice, grant):
        job = services.job_create(user=alice, cluster=grant.cluster, name="t", script="#!/bin/bash\nhostname\n")
        assert "--time=10" in job.hub_args and "--partition=debug" in job.hub_args
        req = job.effective_request
        assert (req["partition"], req["time_limit_minutes"], req["total_cpus"], req["total_memory_mb"]) == (
            "debug",
            10,
            1,
            1024,
        )

    @pytest.mark.parametrize(
        ("directive", "words"),
        [
            ("--exclusive --mem-per-cpu=2000", ["2 CPUs", "4000 MB"]),
            ("--mincpus=2 --mem-per-cpu=2000", ["2 CPUs", "4000 MB"]),
            ("--time=0", ["no time limit"]),
            ("--time=UNLIMITED", ["no time limit"]),
            ("--time-min=20", ["--time-min"]),
            ("--usage", ["not allowed"]),
        ],
    )
    def test_a_bypass_of_the_grant_is_refused_with_its_line(self, api, alice, grant, directive, words):
        response = create(api, alice, script=f"#!/bin/bash\n#SBATCH {directive}\nhostname\n")
        assert response.status_code == 400
        problems = response.json()["problems"]
        assert {p["line"] for p in problems} == {2}
        for word in words:
            assert any(word in p["message"] for p in problems), problems
        assert not Job.objects.exists()


@pytest.mark.django_db
class TestFilenamePatterns:
    def test_a_job_name_cannot_steer_an_input_path_out_of_the_job_folder(self, api, alice, grant):
        response = create(
            api,
            alice,
            name="../../../../etc/hostname",
            script="#!/bin/bash\n#SBATCH -t 5\n#SBATCH --input=/scratch/alice_hpc/axle/%x\ncat\n",
        )
        assert response.status_code == 400
        [problem] = response.json()["problems"]
        assert problem["line"] == 3 and "outside your job folder" in problem["message"]


@pytest.mark.django_db
class TestBoundedParsing:
    def test_fifty_huge_array_lines_are_refused_quickly_and_clearly(self, api, alice, grant):
        script = "#!/bin/bash\n" + "#SBATCH --array=0-999999999\n" * 50 + "hostname\n"
        response = create(api, alice, script=script)
        assert response.status_code == 400
        [problem] = response.json()["problems"]
        assert problem["line"] == 51 and "array range" in problem["message"]

    def test_a_script_over_the_size_cap_is_refused(self, api, alice, grant):
        script = "#!/bin/bash\n" + "#SBATCH -N 1\n" * (MAX_SCRIPT_BYTES // 12)
        response = create(api, alice, script=script)
        assert response.status_code == 400
        assert "larger than" in response.json()["problems"][0]["message"]


@pytest.mark.django_db
class TestRestClusters:
    @pytest.mark.parametrize("directive", ["--export=ALL", "--container=/img", "--bbf=bb", "--nodefile=nodes"])
    def test_an_option_slurmrestd_cannot_take_is_refused_at_validation(self, alice, grant, directive):
        Cluster.objects.filter(pk=grant.cluster.pk).update(transport=Cluster.Transport.REST)
        grant.cluster.refresh_from_db()
        script = f"#!/bin/bash\n#SBATCH -t 5\n#SBATCH {directive}\nhostname\n"
        result, _ = services.job_validate(user=alice, cluster=grant.cluster, script=script)
        assert [p["line"] for p in result.problems] == [3]
        assert "slurmrestd" in result.problems[0]["message"]

    def test_the_same_option_is_fine_on_an_ssh_cluster(self, alice, grant):
        script = "#!/bin/bash\n#SBATCH -t 5\n#SBATCH --export=ALL\nhostname\n"
        result, _ = services.job_validate(user=alice, cluster=grant.cluster, script=script)
        assert result.ok, result.problems


@pytest.mark.django_db
class TestControlCharacters:
    @pytest.mark.parametrize("name", ["two\nlines", "tab\there", "bell\x07", "esc\x1b[31m"])
    def test_the_api_refuses_a_job_name_with_a_control_character(self, api, alice, grant, name):
        response = create(api, alice, name=name, script="#!/bin/bash\n#SBATCH -t 5\nhostname\n")
        assert response.status_code == 400
        assert "control character" in str(response.json())
        assert not Job.objects.exists()

    def test_the_service_refuses_it_too(self, alice, grant):
        with pytest.raises(ValidationFailed, match="control character"):
            services.job_create(user=alice, cluster=grant.cluster, name="a\nb", script="#!/bin/bash\n#SBATCH -t 5\n")

    def test_the_form_shows_why(self, client, alice, grant):
        client.force_login(alice)
        response = client.post(
            "/jobs/new/",
            {"cluster": "hpc", "name": "fake\n123 alice RUNNING", "script": "#!/bin/bash\n#SBATCH -t 5\nhostname\n"},
        )
        assert response.status_code == 200
        assert "control character" in response.content.decode()
        assert not Job.objects.exists()


@pytest.mark.django_db
class TestUnknownConfiguration:
    """Without the partitions' defaults the hub cannot see what Slurm gives a job: a new
    cluster, or one cached before the hub read the defaults, is refused until it is read."""

    @pytest.fixture
    def refreshes(self, monkeypatch):
        from apps.jobs import validation

        queued = []
        monkeypatch.setattr(validation, "enqueue", lambda path, *args: queued.append((path, args)))
        return queued

    OLD_STATE = {"partitions": [{"name": "debug", "is_default": True, "time_limit_minutes": 60, "nodes": ["vm"]}]}

    @pytest.mark.parametrize("state", [{}, OLD_STATE], ids=["never read", "read by an older hub"])
    @pytest.mark.parametrize(
        "script",
        ["#!/bin/bash\nhostname\n", "#!/bin/bash\n#SBATCH -t 5 -p debug --exclusive --mem-per-cpu=2000\nhostname\n"],
        ids=["no partition", "exclusive"],
    )
    def test_it_refuses_a_job_until_the_configuration_is_read(self, alice, grant, refreshes, state, script):
        Cluster.objects.filter(pk=grant.cluster_id).update(state=state)
        grant.cluster.refresh_from_db()
        with pytest.raises(ValidationFailed, match="configuration has not been read yet; try again in a minute"):
            services.job_create(user=alice, cluster=grant.cluster, name="t", script=script)
        assert not Job.objects.exists()
        assert refreshes == [("apps.clusters.tasks.cluster_refresh_health", (grant.cluster_id,))]

    def test_validation_alone_says_it_as_a_problem(self, api, alice, grant, refreshes):
        Cluster.objects.filter(pk=grant.cluster_id).update(state={})
        api.force_authenticate(alice)
        body = api.post(
            "/api/v1/jobs/validate/", {"cluster": "hpc", "script": "#!/bin/bash\nhostname\n"}, format="json"
        ).json()
        assert any("has not been read yet" in p["message"] for p in body["problems"]), body

    def test_a_partition_the_configuration_does_not_list_is_refused(self, alice, grant, refreshes):
        grant.allowed_partitions = ["debug", "gpu"]
        grant.save()
        with pytest.raises(ValidationFailed, match="has no partition gpu"):
            services.job_create(user=alice, cluster=grant.cluster, name="t", script="#!/bin/bash\n#SBATCH -p gpu\nid\n")
        assert refreshes


@pytest.mark.django_db
class TestGrantRecheckedAtSubmission:
    """A job keeps the request checked when it was created; the grant of the moment of
    submission decides whether it reaches Slurm."""

    def submit(self, job):
        from apps.jobs.services import job_submit

        return job_submit(job_id=job.pk)

    def created(self, alice, grant, script="#!/bin/bash\nhostname\n"):
        return services.job_create(user=alice, cluster=grant.cluster, name="t", script=script)

    def test_a_grant_narrowed_after_creation_fails_the_job_with_a_sentence(self, alice, grant):
        job = self.created(alice, grant)  # --time=10 from the grant of then
        grant.max_time_minutes = 5
        grant.save()
        job = self.submit(job)
        assert job.status == Job.Status.FAILED and not job.slurm_job_id
        assert "no longer fits your grant" in job.failure_message
        assert "10 minutes of wall time, more than your grant's limit of 5 minutes" in job.failure_message

    def test_a_grant_expired_after_creation_fails_the_job(self, alice, grant):
        from datetime import timedelta

        from django.utils import timezone

        job = self.created(alice, grant)
        grant.valid_until = timezone.now() - timedelta(minutes=1)
        grant.save()
        job = self.submit(job)
        assert job.status == Job.Status.FAILED and "expired" in job.failure_message

    def test_a_partition_taken_from_the_grant_fails_the_job(self, alice, grant):
        grant.allowed_partitions = ["debug", "batch"]
        grant.save()
        job = self.created(alice, grant, "#!/bin/bash\n#SBATCH -p batch -t 5\nhostname\n")
        grant.allowed_partitions = ["debug"]
        grant.save()
        job = self.submit(job)
        assert job.status == Job.Status.FAILED and "partition 'batch'" in job.failure_message


@pytest.mark.django_db(transaction=True)
def test_two_creations_at_once_cannot_both_pass_the_active_job_limit(monkeypatch, alice):
    import threading

    from django.db import connection, transaction

    from apps.clusters.models import ClusterGrant
    from apps.jobs.services import create as create_service

    monkeypatch.setattr(create_service, "enqueue", lambda *args: None)
    grant = ClusterGrantFactory(user=alice, cluster=ClusterFactory(name="hpc"), max_active_jobs=1)
    script = "#!/bin/bash\n#SBATCH -t 5\nhostname\n"
    inside, errors = threading.Event(), []

    def first_creation_still_committing():
        # Another request creating a job: its row exists but is not committed yet.
        try:
            with transaction.atomic():
                ClusterGrant.objects.select_for_update().get(pk=grant.pk)
                services.job_create(user=alice, cluster=grant.cluster, name="first", script=script)
                inside.set()
                threading.Event().wait(0.5)
        except Exception as exc:  # pragma: no cover - shown by the assertion below
            errors.append(exc)
            inside.set()
        finally:
            connection.close()

    other = threading.Thread(target=first_creation_still_committing)
    other.start()
    assert inside.wait(10)
    with pytest.raises(ValidationFailed, match="already have 1 active jobs"):
        services.job_create(user=alice, cluster=grant.cluster, name="second", script=script)
    other.join()
    assert errors == [] and list(Job.objects.values_list("name", flat=True)) == ["first"]


@pytest.mark.django_db
def test_a_blank_partition_list_means_the_default_partition_only(alice, grant):
    grant.allowed_partitions, grant.allowed_accounts = [], []
    grant.save()
    job = services.job_create(user=alice, cluster=grant.cluster, name="t", script="#!/bin/bash\n#SBATCH -t 5\nid\n")
    assert job.effective_request["partition"] == "debug" and "--partition=debug" in job.hub_args
    for directive, refused in (("-p debug", "partition 'debug'"), ("-A vision", "account 'vision'")):
        with pytest.raises(ValidationFailed, match=refused):
            services.job_create(
                user=alice, cluster=grant.cluster, name="t", script=f"#!/bin/bash\n#SBATCH -t 5 {directive}\nid\n"
            )


@pytest.mark.django_db
def test_a_grant_stored_with_a_username_slurm_would_widen_takes_no_jobs(alice, grant):
    from apps.clusters.models import ClusterGrant

    ClusterGrant.objects.filter(pk=grant.pk).update(cluster_username="alice_hpc,bob")  # stored before the rule
    grant.refresh_from_db()
    with pytest.raises(ValidationFailed, match="not a plain name"):
        services.job_create(user=alice, cluster=grant.cluster, name="t", script="#!/bin/bash\n#SBATCH -t 5\nid\n")
