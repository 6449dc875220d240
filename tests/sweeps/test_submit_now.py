"""A sweep's first wave submitted in its POST, on the real local cluster through both
transports: the trials are known to Slurm when the POST returns; a cluster that does not
answer at once gets the wave queued for a worker, as before; and a request killed after sbatch
leaves one array, found by its marker."""

import os
import shutil
import socket
import tempfile
import threading
import time
from datetime import timedelta

import paramiko
import pytest
import yaml
from django.db import connection
from django.utils import timezone

from apps.accounts import services as account_services
from apps.audit.models import AuditEvent
from apps.clusters.transport import slurm_client
from apps.integrations.slurm import ssh as ssh_module
from apps.integrations.slurm.ssh import SLURM_PROGRAMS
from apps.jobs import tasks as job_tasks
from apps.jobs.models import Job
from apps.jobs.services import submit as submitting
from apps.sweeps import services
from apps.sweeps import tasks as sweep_tasks
from apps.sweeps.models import Sweep, Trial
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SCRIPT = """#!/bin/bash
#SBATCH --partition=debug
#SBATCH --time=00:02:00
#SBATCH --mem=50M
echo "x=${trialParameters.x}"
sleep 60
"""


@pytest.fixture(params=["ssh", "rest"])
def grant(request, alice):
    if local_cluster_env() is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    cluster = make_local_cluster(request.param, f"now-{request.param}")
    return make_local_grant(cluster, alice, "scientist", max_cpus=2, max_array_size=10, max_time_minutes=60)


@pytest.fixture
def silent_port():
    """A port that accepts connections and never says a word: a cluster too slow to answer."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield listener.getsockname()[1]
    listener.close()


@pytest.fixture
def ssh_grant(alice):
    if local_cluster_env() is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    cluster = make_local_cluster("ssh", "now-fake-sbatch")
    return make_local_grant(cluster, alice, "scientist", max_cpus=2, max_array_size=10, max_time_minutes=60)


@pytest.fixture
def fake_sbatch(ssh_grant):
    """Point the SSH cluster at a Slurm bin folder whose sbatch is the given shell script (the
    login node shares this machine's /tmp); the other programs are the real ones."""
    folder = tempfile.mkdtemp(prefix="axle-fake-slurm-", dir="/tmp")
    os.chmod(folder, 0o755)
    for program in SLURM_PROGRAMS - {"sbatch"}:
        os.symlink(f"/usr/bin/{program}", f"{folder}/{program}")

    def install(body: str):
        with open(f"{folder}/sbatch", "w") as f:
            f.write("#!/bin/bash\n" + body)
        os.chmod(f"{folder}/sbatch", 0o755)
        ssh_grant.cluster.slurm_bin_dir = folder
        ssh_grant.cluster.save(update_fields=["slurm_bin_dir"])
        ssh_grant.refresh_from_db()
        return ssh_grant

    yield install
    shutil.rmtree(folder)


def spec(name: str, trials: int) -> str:
    doc = {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": name},
        "spec": {
            "objective": {"type": "minimize", "objectiveMetricName": "loss"},
            "algorithm": {"algorithmName": "grid"},
            "parallelTrialCount": trials,
            "maxTrialCount": trials,
            "parameters": [
                {"name": "x", "parameterType": "discrete", "feasibleSpace": {"list": [str(i) for i in range(trials)]}}
            ],
            "trialTemplate": {"trialParameters": [{"name": "x", "reference": "x"}]},
        },
    }
    return yaml.safe_dump(doc)


def post(api, grant, name: str, trials: int = 3):
    _, secret = account_services.token_create(user=grant.user, name=name)
    api.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    return api.post(
        "/api/v1/sweeps/",
        {"cluster": grant.cluster.name, "spec": spec(name, trials), "script": SCRIPT},
        format="json",
    )


def on_slurm(grant, job: Job) -> set[str]:
    """The array ids Slurm knows the job's marker under (squeue first, then accounting)."""
    with slurm_client(grant) as client:
        return {j.array_job_id or j.job_id for j in client.find_by_comment(job.marker)}


def cancel(grant, job: Job) -> None:
    if job.slurm_job_id:
        with slurm_client(grant) as client:
            client.cancel(job.slurm_job_id)


def test_the_post_submits_the_first_wave_and_its_trials_are_on_slurm_when_it_returns(api, grant):
    response = post(api, grant, "now")
    assert response.status_code == 201, response.json()
    assert response.json()["launch"] == "submitted"
    sweep = Sweep.objects.get(uuid=response.json()["id"])
    job = Job.objects.get(trials__sweep=sweep, trials__number=0)
    try:
        assert job.status == Job.Status.PENDING and job.slurm_job_id
        assert set(sweep.trials.values_list("state", "job_id")) == {(Trial.State.PENDING, job.pk)}
        with slurm_client(grant) as client:
            tasks = [j for j in client.queue(grant.cluster_username) if j.array_job_id == job.slurm_job_id]
        assert len(tasks) >= 1 and on_slurm(grant, job) == {job.slurm_job_id}
        # The worker's launch and the job's own queued task find nothing left to do.
        sweep_tasks.sweep_launch(sweep.pk)
        job_tasks.job_submit(job.pk)
        assert Job.objects.filter(trials__sweep=sweep).distinct().count() == 1
        assert on_slurm(grant, job) == {job.slurm_job_id}
    finally:
        cancel(grant, job)


def test_the_post_sends_its_waves_submission_before_its_transaction_and_only_the_go_after(api, ssh_grant, monkeypatch):
    # The login node starts the wave's shell, reads its program and starts sbatch while the
    # transaction runs; sbatch gets its script at the go, sent once the transaction has
    # committed, on that same command: no second command is started.
    seen = []
    depth = len(connection.atomic_blocks)  # the test's own (pytest-django's) transaction
    exec_command, send, create = paramiko.Channel.exec_command, paramiko.Channel.sendall, services.job_create

    request = ssh_module._exec_request

    def named(command):
        return "batch command" if command.startswith("/bin/sh -c 'set +xv; read") else command

    def started(channel, command):
        seen.append(named(command))
        return exec_command(channel, command)

    def requested(channel, command):  # a program sent ahead asks without waiting for the answer
        seen.append(named(command))
        return request(channel, command)

    def in_transaction(**kwargs):
        seen.append("transaction")
        return create(**kwargs)

    def sent(channel, data):
        if not (data.startswith(b"AXLE-END-") and data.count(b"\n") == 1):
            # The program, sent by a thread of its own once the login host started the command
            # (noted once all of it went).
            send(channel, data)
            seen.append(("program", threading.current_thread().name))
            return None
        inside = len(connection.atomic_blocks) > depth
        seen.append(("go", inside, Job.objects.filter(name__startswith="ahead").count()))
        return send(channel, data)

    monkeypatch.setattr(paramiko.Channel, "exec_command", started)
    monkeypatch.setattr(ssh_module, "_exec_request", requested)
    monkeypatch.setattr(paramiko.Channel, "sendall", sent)
    monkeypatch.setattr(services, "job_create", in_transaction)
    response = post(api, ssh_grant, "ahead")
    monkeypatch.undo()
    assert response.status_code == 201, response.json()
    job = Job.objects.get(trials__sweep__uuid=response.json()["id"], trials__number=0)
    try:
        assert response.json()["launch"] == "submitted" and job.slurm_job_id
        # The command asked for and its program handed to a thread of its own before the
        # transaction (which goes on meanwhile), the go after its commit (the job there),
        # outside any transaction of the request's, after the whole program.
        program = ("program", "axle-ssh-send")
        assert seen.count(program) == 1 and seen.index(program) < seen.index(("go", False, 1)), seen
        assert [e for e in seen if e != program] == ["batch command", "transaction", ("go", False, 1)], seen
        assert on_slurm(ssh_grant, job) == {job.slurm_job_id}
    finally:
        cancel(ssh_grant, job)


def test_a_cluster_that_does_not_answer_at_once_gets_the_wave_queued_and_a_worker_submits_it(
    api, grant, silent_port, settings, django_capture_on_commit_callbacks
):
    settings.AXLE_SWEEP_SUBMIT_WAIT_SECONDS = 0.5
    cluster = grant.cluster
    real = (cluster.login_port, cluster.rest_url)
    cluster.login_port = silent_port
    cluster.rest_url = f"http://127.0.0.1:{silent_port}"
    cluster.save(update_fields=["login_port", "rest_url"])
    grant.refresh_from_db()
    started = time.monotonic()
    with django_capture_on_commit_callbacks() as queued:
        response = post(api, grant, "later")
    took = time.monotonic() - started
    assert response.status_code == 201, response.json()
    assert response.json()["launch"] == "queued"
    assert took < 3, f"the POST waited {took:.1f}s on a cluster that does not answer"
    assert len(queued) == 1  # the sweep's launch, for a worker
    sweep = Sweep.objects.get(uuid=response.json()["id"])
    assert not Job.objects.filter(trials__sweep=sweep).exists()
    # The cluster answers again; the worker's launch submits the wave.
    cluster.login_port, cluster.rest_url = real
    cluster.save(update_fields=["login_port", "rest_url"])
    grant.refresh_from_db()
    sweep_tasks.sweep_launch(sweep.pk)
    job = Job.objects.get(trials__sweep=sweep, trials__number=0)
    try:
        assert job.status == Job.Status.PENDING and job.slurm_job_id
        assert on_slurm(grant, job) == {job.slurm_job_id}
    finally:
        cancel(grant, job)


def test_a_request_killed_after_sbatch_leaves_one_array_found_by_its_marker(api, grant, monkeypatch):
    real_transition = submitting.transition_many

    def die_after_sbatch(**kwargs):
        if kwargs.get("action") == "job.submitted":
            raise SystemExit("portal process killed")
        return real_transition(**kwargs)

    monkeypatch.setattr(submitting, "transition_many", die_after_sbatch)
    with pytest.raises(SystemExit):
        post(api, grant, "killed")
    monkeypatch.setattr(submitting, "transition_many", real_transition)
    sweep = Sweep.objects.get(name="killed", owner=grant.user)
    job = Job.objects.get(trials__sweep=sweep, trials__number=0)
    assert job.status == Job.Status.SUBMITTING and not job.slurm_job_id
    try:
        # The worker's launch, and the job's own queued task: neither sends a second array.
        assert services.sweep_launch(sweep_id=sweep.pk) is None
        sweep_tasks.sweep_launch(sweep.pk)
        job_tasks.job_submit(job.pk)
        Job.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(minutes=10))
        job_tasks.jobs_tick()  # the stuck submission is found by its marker, never sent again
        job.refresh_from_db()
        assert job.slurm_job_id and job.status not in (Job.Status.SUBMITTING, Job.Status.QUEUED), job.status
        assert Job.objects.filter(trials__sweep=sweep).distinct().count() == 1
        assert on_slurm(grant, job) == {job.slurm_job_id}
    finally:
        job.refresh_from_db()
        cancel(grant, job)


def test_an_unexpected_error_in_the_posts_submission_answers_unknown_and_the_wave_is_sent_once(api, grant, monkeypatch):
    def broken(**kwargs):
        raise ValueError("filedescriptor out of range in select()")

    monkeypatch.setattr(services, "job_submit_taken", broken)
    response = post(api, grant, "broken")
    # The sweep exists: a 500 would make a retrying client create a second one.
    assert response.status_code == 201, response.content
    assert response.json()["launch"] == "unknown" and "marker" in response.json()["launch_message"]
    assert Sweep.objects.filter(name="broken", owner=grant.user).count() == 1
    sweep = Sweep.objects.get(uuid=response.json()["id"])
    job = Job.objects.get(trials__sweep=sweep, trials__number=0)
    # Whether sbatch ran is not known to the request: the marker search decides.
    assert job.status == Job.Status.UNKNOWN and not job.slurm_job_id
    try:
        # Nothing on Slurm under the marker once the grace has passed: queued again, sent once.
        Job.objects.filter(pk=job.pk).update(unknown_since=timezone.now() - timedelta(minutes=5))
        job_tasks.jobs_reconcile()
        job.refresh_from_db()
        assert job.status == Job.Status.QUEUED
        job_tasks.job_submit(job.pk)
        job.refresh_from_db()
        assert job.status == Job.Status.PENDING and job.slurm_job_id
        assert on_slurm(grant, job) == {job.slurm_job_id}
    finally:
        job.refresh_from_db()
        cancel(grant, job)


def test_the_post_records_the_sweep_its_trials_and_its_wave_submitting_in_one_transaction(
    api, grant, monkeypatch, django_capture_on_commit_callbacks
):
    seen = {}
    real = services.job_submit_taken

    def at_sbatch(*, job):
        # What the database holds when the request goes to the cluster.
        row = Job.objects.get(pk=job.pk)
        sweep = Sweep.objects.get(trials__job=row, trials__number=0)
        seen.update(
            status=row.status,
            attempts=row.attempts,
            waves=sweep.waves,
            trials=set(sweep.trials.values_list("state", "job_id")),
            tasks=list(sweep.trials.order_by("number").values_list("task_id", flat=True)),
        )
        return real(job=job)

    monkeypatch.setattr(services, "job_submit_taken", at_sbatch)
    with django_capture_on_commit_callbacks() as queued:
        response = post(api, grant, "onetx")
    assert response.status_code == 201, response.content
    assert response.json()["launch"] == "submitted"
    job = Job.objects.get(trials__sweep__uuid=response.json()["id"], trials__number=0)
    try:
        assert seen == {
            "status": Job.Status.SUBMITTING,
            "attempts": 1,
            "waves": 1,
            "trials": {(Trial.State.PENDING, job.pk)},
            "tasks": [0, 1, 2],
        }
        # One take, one answer: the job's lifecycle as a worker's submission records it.
        actions = list(
            AuditEvent.objects.filter(subject_type="jobs.job", subject_id=str(job.uuid))
            .order_by("seq")
            .values_list("action", flat=True)
        )
        assert actions == ["job.created", "job.submitting", "job.submitted"]
        # No task was queued (the sweep's launch, the job's submission): this request sent it.
        assert queued == []
    finally:
        cancel(grant, job)


def test_a_failure_inside_the_posts_transaction_leaves_no_sweep_no_trial_and_no_wave(api, grant, monkeypatch):
    def broken(entries):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(services, "audit_record_many", broken)
    with pytest.raises(RuntimeError):
        post(api, grant, "rolledback")
    assert not Sweep.objects.filter(name="rolledback").exists()
    assert not Trial.objects.filter(sweep__name="rolledback").exists()
    assert not Job.objects.filter(name="rolledback-0").exists()


def test_a_failure_inside_the_posts_transaction_closes_the_submission_sent_ahead_at_once(api, fake_sbatch, monkeypatch):
    # The wave's sbatch is started before the transaction and waits for its script. A
    # transaction that fails sends no go: the program sent ahead is closed then (not at the
    # connection's next submission or end), its sbatch reads an empty script and nothing waits.
    folder = tempfile.mkdtemp(prefix="axle-unstaged-", dir="/tmp")
    os.chmod(folder, 0o777)  # the login node's account writes there
    log = f"{folder}/sbatch.log"

    def lines() -> list[str]:
        return open(log).read().splitlines() if os.path.exists(log) else []

    def waited(what: str) -> list[str]:
        end = time.monotonic() + 10
        while not any(line.startswith(what) for line in lines()) and time.monotonic() < end:
            time.sleep(0.02)
        return lines()

    grant = fake_sbatch(f'echo started >>{log}\nscript=$(cat)\necho "ended ${{#script}}" >>{log}\necho 4242\n')

    def broken(entries):
        assert waited("started") == ["started"]  # sbatch is up, waiting for its script
        raise RuntimeError("the database went away")

    monkeypatch.setattr(services, "audit_record_many", broken)
    try:
        with pytest.raises(RuntimeError):
            post(api, grant, "unstaged")
        assert waited("ended") == ["started", "ended 0"]
        assert not Job.objects.filter(name="unstaged-0").exists()
    finally:
        shutil.rmtree(folder)


def test_a_request_killed_before_sbatch_leaves_the_wave_to_the_stuck_check_which_sends_it_once(api, grant, monkeypatch):
    def killed(*, job):
        raise SystemExit("portal process killed")

    monkeypatch.setattr(services, "job_submit_taken", killed)
    with pytest.raises(SystemExit):
        post(api, grant, "killedbefore")
    monkeypatch.undo()
    sweep = Sweep.objects.get(name="killedbefore", owner=grant.user)
    job = Job.objects.get(trials__sweep=sweep, trials__number=0)
    assert job.status == Job.Status.SUBMITTING and not job.slurm_job_id
    try:
        # The worker's launch and the job's own task leave it alone: it is not queued.
        assert services.sweep_launch(sweep_id=sweep.pk) is None
        job_tasks.job_submit(job.pk)
        assert Job.objects.get(pk=job.pk).status == Job.Status.SUBMITTING
        # Its lease died with the request: the stuck check takes it, the marker search finds
        # nothing once its grace has passed, and it is sent again, once.
        Job.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(minutes=10))
        job_tasks.jobs_tick()
        job.refresh_from_db()
        assert job.status == Job.Status.UNKNOWN, job.status
        Job.objects.filter(pk=job.pk).update(unknown_since=timezone.now() - timedelta(minutes=5))
        job_tasks.jobs_reconcile()
        job_tasks.job_submit(job.pk)
        job.refresh_from_db()
        assert job.status == Job.Status.PENDING and job.slurm_job_id, job.status
        assert Job.objects.filter(trials__sweep=sweep).distinct().count() == 1
        assert on_slurm(grant, job) == {job.slurm_job_id}
    finally:
        job.refresh_from_db()
        cancel(grant, job)


def test_the_posts_sql_stays_within_its_budget(api, grant, django_assert_max_num_queries):
    post(api, grant, "warm")  # the pooled connection and the user's token, as on a running hub
    _, secret = account_services.token_create(user=grant.user, name="budget")
    api.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    with django_assert_max_num_queries(30):
        response = api.post(
            "/api/v1/sweeps/",
            {"cluster": grant.cluster.name, "spec": spec("budget", 3), "script": SCRIPT},
            format="json",
        )
    assert response.json()["launch"] == "submitted"
    for sweep in Sweep.objects.filter(name__in=["warm", "budget"]):
        cancel(grant, Job.objects.get(trials__sweep=sweep, trials__number=0))


def test_a_wave_slurm_refuses_in_the_post_is_answered_failed_with_slurms_words(api, fake_sbatch):
    refusal = "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified"
    grant = fake_sbatch(f"cat >/dev/null\necho '{refusal}' >&2\nexit 1\n")
    response = post(api, grant, "refused")
    assert response.status_code == 201, response.content
    assert response.json()["launch"] == "failed"
    assert refusal in response.json()["launch_message"]


def test_a_slow_sbatch_holds_the_post_no_longer_than_its_bound_and_the_wave_is_unknown(api, fake_sbatch, settings):
    settings.AXLE_SWEEP_SUBMIT_WAIT_SECONDS = 1.0
    # Answers nothing for 20 s over a connection that was made at once; submits nothing.
    grant = fake_sbatch("cat >/dev/null\nsleep 20\nexit 1\n")
    started = time.monotonic()
    response = post(api, grant, "slow")
    took = time.monotonic() - started
    assert response.status_code == 201, response.content
    assert took < 1.0 + services.SUBMIT_GRACE_SECONDS + 2, f"the POST waited {took:.1f}s on a slow sbatch"
    body = response.json()
    assert body["launch"] == "unknown" and "marker" in body["launch_message"]
    job = Job.objects.get(trials__sweep__uuid=body["id"], trials__number=0)
    assert job.status == Job.Status.UNKNOWN and not job.slurm_job_id


def test_the_dashboard_form_sends_the_first_wave_as_the_api_does(client, grant):
    doc = yaml.safe_load(spec("formnow", 2))
    doc["spec"]["trialTemplate"]["trialSpec"] = SCRIPT
    client.force_login(grant.user)
    response = client.post(
        "/sweeps/new/", {"cluster": grant.cluster.name, "spec": yaml.safe_dump(doc), "action": "create"}, follow=True
    )
    assert response.status_code == 200
    sweep = Sweep.objects.get(name="formnow")
    job = Job.objects.get(trials__sweep=sweep, trials__number=0)
    try:
        assert "its first trials are on the cluster" in response.content.decode()
        assert job.status == Job.Status.PENDING and job.slurm_job_id
        assert on_slurm(grant, job) == {job.slurm_job_id}
    finally:
        cancel(grant, job)
