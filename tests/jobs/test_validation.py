import pytest

from apps.core.errors import PermissionDenied, ValidationFailed
from apps.integrations.slurm import sbatch, states
from apps.jobs import selectors, services, validation
from apps.jobs.models import Job
from tests.factories import ClusterFactory, ClusterGrantFactory

SCRIPT = """#!/bin/bash
#SBATCH --partition=debug
#SBATCH -c 2 --mem=1G
#SBATCH --time=00:30:00
echo hi
"""


@pytest.fixture
def grant(alice):
    cluster = ClusterFactory(name="hpc", job_root="/scratch/{username}/axle")
    return ClusterGrantFactory(
        user=alice,
        cluster=cluster,
        cluster_username="alice_hpc",
        allowed_partitions=["debug"],
        max_cpus=4,
        max_mem_mb=2048,
        max_time_minutes=60,
        max_active_jobs=2,
        max_array_size=10,
    )


@pytest.mark.django_db
class TestValidation:
    def test_a_script_within_the_grant_resolves_to_its_effective_request(self, alice, grant):
        result, _ = services.job_validate(user=alice, cluster=grant.cluster, script=SCRIPT)
        assert result.ok, result.problems
        req = result.effective_request
        assert (req["partition"], req["cpus_per_task"], req["total_memory_mb"], req["time_limit_minutes"]) == (
            "debug",
            2,
            1024,
            30,
        )
        assert req["output"].startswith("/scratch/alice_hpc/axle/")

    def test_each_problem_names_its_line(self, alice, grant):
        script = SCRIPT.replace("--partition=debug", "--partition=batch").replace("-c 2", "-c 16")
        result, _ = services.job_validate(user=alice, cluster=grant.cluster, script=script)
        by_line = {p["line"]: p["message"] for p in result.problems}
        assert "partition 'batch'" in by_line[2]
        assert "16 CPUs" in by_line[3]

    @pytest.mark.parametrize(
        "directive",
        [
            "#SBATCH --uid=0",
            "#SBATCH --chdir=/tmp",
            "#SBATCH --output=/etc/passwd",
            "#SBATCH --export=AXLE_SECRET",
            "#SBATCH --get-user-env",
            "#SBATCH --account=physics",
        ],
    )
    def test_it_refuses_options_that_change_identity_or_escape(self, alice, grant, directive):
        script = SCRIPT.replace("#SBATCH --time=00:30:00", f"#SBATCH --time=00:30:00\n{directive}")
        result, _ = services.job_validate(user=alice, cluster=grant.cluster, script=script)
        assert [p["line"] for p in result.problems] == [5], result.problems

    def test_directives_after_the_first_command_are_ignored_like_sbatch_does(self, alice, grant):
        script = SCRIPT + "#SBATCH --partition=batch\n"
        result, _ = services.job_validate(user=alice, cluster=grant.cluster, script=script)
        assert result.ok and result.effective_request["partition"] == "debug"

    def test_a_user_without_a_grant_is_told_so(self, bob, grant):
        result, _ = services.job_validate(user=bob, cluster=grant.cluster, script=SCRIPT)
        assert any("no active grant" in p["message"] for p in result.problems)

    def test_parameters_must_be_plain_environment_names(self, alice, grant):
        result, _ = services.job_validate(
            user=alice,
            cluster=grant.cluster,
            script=SCRIPT,
            parameters={"LR": 0.1, "bad-name": 1, "SLURM_JOB_ID": 3, "nested": {"a": 1}},
        )
        messages = " ".join(p["message"] for p in result.problems)
        assert "bad-name" in messages and "SLURM_JOB_ID" in messages and "nested" in messages and "LR" not in messages

    @pytest.mark.parametrize(
        "name", ["PATH", "LD_PRELOAD", "PYTHONPATH", "BASH_ENV", "MLFLOW_TRACKING_URI", "http_proxy"]
    )
    def test_a_parameter_cannot_change_how_programs_run(self, alice, grant, name):
        result, _ = services.job_validate(
            user=alice, cluster=grant.cluster, script=SCRIPT, parameters={name: "/tmp/x", "EPOCHS": 3}
        )
        assert [p["message"].split()[1] for p in result.problems] == [name]
        assert validation.validate_parameters({name: "/tmp/x", "EPOCHS": 3}, validation.Validation()) == {"EPOCHS": "3"}

    def test_a_parameter_value_may_hold_anything_but_nul(self, alice, grant):
        value = "a b; $(id) `id` 'q' \"d\"\nline, two=3"
        result, _ = services.job_validate(
            user=alice, cluster=grant.cluster, script=SCRIPT, parameters={"NOTE": value, "BAD": "a\x00b"}
        )
        assert validation.validate_parameters({"NOTE": value}, validation.Validation()) == {"NOTE": value}
        assert [p["message"] for p in result.problems] == [
            "The value of BAD contains a NUL character, which no environment can hold."
        ]


@pytest.mark.django_db
class TestCreation:
    def test_a_valid_job_is_recorded_with_its_inputs_and_queued(self, alice, grant):
        job = services.job_create(user=alice, cluster=grant.cluster, name="t", script=SCRIPT, parameters={"LR": 0.1})
        assert job.status == Job.Status.QUEUED
        assert job.parameters == {"LR": "0.1"}
        assert job.marker == f"axle-{job.uuid.hex}" and job.cluster_username == "alice_hpc"
        assert job.stdout_path == f"/scratch/alice_hpc/axle/{job.uuid}/slurm-%j.out"
        assert job.hub_args == [f"--output={job.stdout_path}", f"--error={job.stderr_path}"]

    def test_creating_a_job_parses_its_script_once(self, alice, grant, monkeypatch):
        parses = []
        real = sbatch.parse_script

        def counting(script):
            parses.append(script)
            return real(script)

        monkeypatch.setattr(sbatch, "parse_script", counting)
        script = SCRIPT.replace("echo hi", "#SBATCH --array=0-3\necho hi")
        job = services.job_create(user=alice, cluster=grant.cluster, name="t", script=script)
        assert parses == [script]
        assert job.stdout_path == f"/scratch/alice_hpc/axle/{job.uuid}/slurm-%A_%a.out"

    def test_an_invalid_job_is_refused_with_every_problem(self, api, alice, grant):
        api.force_authenticate(alice)
        response = api.post(
            "/api/v1/jobs/", {"cluster": "hpc", "script": SCRIPT.replace("-c 2", "-c 64")}, format="json"
        )
        assert response.status_code == 400
        assert response.json()["problems"][0]["line"] == 3
        assert not Job.objects.exists()

    def test_the_active_jobs_limit_is_enforced(self, alice, grant):
        for _ in range(2):
            services.job_create(user=alice, cluster=grant.cluster, name="t", script=SCRIPT)
        with pytest.raises(ValidationFailed, match="active jobs"):
            services.job_create(user=alice, cluster=grant.cluster, name="t", script=SCRIPT)

    def test_an_expired_grant_cannot_submit(self, alice, grant):
        from django.utils import timezone

        grant.valid_until = timezone.now()
        grant.save()
        with pytest.raises(PermissionDenied):
            services.job_create(user=alice, cluster=grant.cluster, name="t", script=SCRIPT)

    def test_another_users_job_answers_404(self, api, alice, bob, grant):
        job = services.job_create(user=alice, cluster=grant.cluster, name="t", script=SCRIPT)
        api.force_authenticate(bob)
        for path in (
            "",
            "logs/",
        ):
            assert api.get(f"/api/v1/jobs/{job.uuid}/{path}").status_code == 404
        assert api.post(f"/api/v1/jobs/{job.uuid}/cancel/").status_code == 404
        assert api.post(f"/api/v1/jobs/{job.uuid}/rerun/").status_code == 404

    def test_a_queued_job_is_cancelled_in_the_hub_without_slurm(self, api, alice, grant):
        job = services.job_create(user=alice, cluster=grant.cluster, name="t", script=SCRIPT)
        api.force_authenticate(alice)
        response = api.post(f"/api/v1/jobs/{job.uuid}/cancel/")
        assert response.status_code == 200 and response.json()["status"] == "cancelled"


@pytest.mark.parametrize(
    "slurm,hub",
    [
        ("PENDING", "pending"),
        ("RUNNING", "running"),
        ("COMPLETING", "running"),
        ("COMPLETED", "completed"),
        ("CANCELLED by 1000", "cancelled"),
        ("TIMEOUT", "timeout"),
        ("OUT_OF_MEMORY", "out_of_memory"),
        ("NODE_FAIL", "node_fail"),
        ("FAILED", "failed"),
        ("BOOT_FAIL", "failed"),
        ("WHATEVER", None),
    ],
)
def test_slurm_states_map_to_the_hubs(slurm, hub):
    assert states.hub_state(slurm) == hub
    assert hub is None or Job.Status(hub)  # every value is one of the job's statuses


@pytest.mark.parametrize(
    "rows,combined",
    [
        (["COMPLETED", "RUNNING", "PENDING"], "running"),
        (["COMPLETED", "PENDING"], "pending"),
        (["COMPLETED", "CANCELLED by 1000", "FAILED"], "failed"),
        (["COMPLETED", "TIMEOUT", "FAILED"], "timeout"),
        (["NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT"], "out_of_memory"),
        (["COMPLETED", "COMPLETED"], "completed"),
        (["WHATEVER"], None),
    ],
)
def test_an_arrays_tasks_combine_into_the_most_telling_state(rows, combined):
    assert states.combined_state(rows) == combined


def test_a_log_chunk_never_ends_inside_a_character():
    data = "héllo €".encode()
    assert selectors._incomplete_utf8_tail(data) == 0
    assert selectors._incomplete_utf8_tail(data[:-1]) == 2
    assert selectors._incomplete_utf8_tail(data[:-2]) == 1
    assert selectors._incomplete_utf8_tail(b"abc") == 0


@pytest.mark.django_db
def test_dos_line_breaks_are_refused_before_slurm_sees_them(alice, grant):
    result, _ = services.job_validate(user=alice, cluster=grant.cluster, script=SCRIPT.replace("\n", "\r\n"))
    assert [p["message"] for p in result.problems] == [
        "The script has DOS line breaks (\\r\\n); sbatch refuses them. Save it with UNIX line breaks."
    ]
