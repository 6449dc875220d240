"""The one-host Slurm site of compose/local behaves like a real one.

Plain pytest, no Django: these tests read <stack>/cluster.env, written by
`compose/local/stack.sh up`, and talk to the real daemons as root (the hub's view).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shlex
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

STACK_DIR = Path(os.environ.get("AXLE_STACK_DIR", "/var/lib/axle"))
CLUSTER_ENV = Path(os.environ.get("AXLE_LOCAL_CLUSTER_ENV", STACK_DIR / "cluster.env"))

pytestmark = pytest.mark.skipif(
    not CLUSTER_ENV.exists(),
    reason=f"{CLUSTER_ENV} is missing: start the stack with compose/local/stack.sh up",
)


def _read_env() -> dict[str, str]:
    env: dict[str, str] = {}
    if not CLUSTER_ENV.exists():
        return env
    for line in CLUSTER_ENV.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        words = shlex.split(value)
        env[key.strip()] = words[0] if len(words) == 1 else " ".join(words)
    return env


ENV = _read_env()
USER = "scientist"


def _slurm_env() -> dict[str, str]:
    return {**os.environ, "SLURM_CONF": ENV.get("AXLE_LOCAL_SLURM_CONF", "")}


def ssh(
    *command: str, user: str = USER, known_hosts: str | None = None, timeout: int = 60
) -> subprocess.CompletedProcess[str]:
    """Runs `command` on the login node as `user` with the hub's key, trusting only known hosts."""
    argv = [
        "ssh",
        "-p", ENV["AXLE_LOCAL_SSH_PORT"],
        "-i", f"{ENV['AXLE_LOCAL_KEYS_DIR']}/{user}/id_ed25519",
        "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts or ENV['AXLE_LOCAL_SSH_KNOWN_HOSTS']}",
        "-o", "ConnectTimeout=10",
        f"{user}@{ENV['AXLE_LOCAL_SSH_HOST']}",
        shlex.join(command),
    ]  # fmt: skip
    return subprocess.run(
        argv,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def wait_for_sacct_state(job_id: str, *, timeout: float = 90) -> dict[str, str]:
    """Polls sacct (over SSH, as the user) until the job's allocation is in a terminal state."""
    deadline = time.monotonic() + timeout
    row: dict[str, str] = {}
    while time.monotonic() < deadline:
        out = ssh(
            "sacct",
            "-X",
            "-n",
            "-P",
            "-j",
            job_id,
            "-o",
            "JobID,State,ExitCode,Account",
        ).stdout
        for line in out.splitlines():
            jid, state, exit_code, account = line.split("|")
            if jid == job_id:
                row = {"state": state, "exit_code": exit_code, "account": account}
        if row.get("state", "").split(" ")[0] in {
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "OUT_OF_MEMORY",
        }:
            return row
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s; last seen {row}")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_token(username: str, *, key: bytes | None = None, lifespan: int = 300) -> str:
    """A JWT the way slurmrestd accepts it: HS256 over the cluster key, claims exp, iat, sun."""
    if key is None:
        key = Path(ENV["AXLE_LOCAL_JWT_KEY_FILE"]).read_bytes()
    now = int(time.time())
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64url(json.dumps({"exp": now + lifespan, "iat": now, "sun": username}).encode())
    signature = b64url(hmac.new(key, f"{header}.{claims}".encode(), hashlib.sha256).digest())
    return f"{header}.{claims}.{signature}"


def scontrol_token(username: str) -> str:
    out = subprocess.run(
        ["scontrol", "token", f"username={username}", "lifespan=300"],
        capture_output=True, text=True, check=True, env=_slurm_env(), timeout=30,
    ).stdout  # fmt: skip
    return out.strip().removeprefix("SLURM_JWT=")


def rest(method: str, path: str, token: str, body: dict | None = None, user: str = USER) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{ENV['AXLE_LOCAL_REST_URL']}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "X-SLURM-USER-NAME": user,
            "X-SLURM-USER-TOKEN": token,
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return error.code, {"raw": raw.decode(errors="replace")}


STACK_SH = Path(__file__).resolve().parents[2] / "compose" / "local" / "stack.sh"


def _pids() -> dict[str, str]:
    return {p.stem: p.read_text().strip() for p in (STACK_DIR / "run").glob("*.pid")}


# ---------------------------------------------------------------- the script


@pytest.mark.slurm
def test_status_reports_every_part_up():
    result = subprocess.run([str(STACK_SH), "status"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
    for part in ("munge", "slurmdbd", "slurmctld", "slurmd", "slurmrestd", "sshd", "mlflow"):
        assert any(line.split()[:2] == [part, "up"] for line in result.stdout.splitlines()), result.stdout


@pytest.mark.slurm
@pytest.mark.slow
def test_a_second_up_restarts_nothing():
    before = _pids()
    started = time.monotonic()
    result = subprocess.run(
        [str(STACK_SH), "up"], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 60
    assert _pids() == before
    assert "==> slurmctld ... ok" in result.stdout


# ---------------------------------------------------------------- Slurm itself


@pytest.mark.slurm
def test_the_node_is_idle_in_both_partitions():
    out = subprocess.run(
        ["sinfo", "-h", "-o", "%P|%T|%l|%N"],
        capture_output=True, text=True, check=True, env=_slurm_env(), timeout=30,
    ).stdout  # fmt: skip
    partitions = {line.split("|")[0]: line.split("|") for line in out.splitlines()}
    assert set(partitions) == {"debug*", "batch"}
    for _name, state, _limit, node in partitions.values():
        # Jobs of other suites may be running; the node must be usable, not down or drained.
        assert state in {"idle", "mixed", "allocated", "completing"}, out
        assert node == socket.gethostname().split(".")[0]
    assert partitions["debug*"][2] == "1:00:00"
    assert partitions["batch"][2] == "1-00:00:00"


@pytest.mark.slurm
def test_the_cluster_allows_large_job_counts_and_arrays():
    out = subprocess.run(
        ["scontrol", "show", "config"],
        capture_output=True,
        text=True,
        check=True,
        env=_slurm_env(),
        timeout=30,
    ).stdout
    config = {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in out.splitlines()) if v}
    assert int(config["MaxJobCount"]) >= 50000
    assert int(config["MaxArraySize"]) >= 10001
    assert config["ClusterName"] == "local"
    assert "auth/jwt" in config["AuthAltTypes"]


@pytest.mark.slurm
def test_a_user_submits_over_ssh_and_the_job_completes_in_sacct():
    submitted = ssh("sbatch", "--parsable", "--wrap", "hostname")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]
    assert job_id.isdigit()

    row = wait_for_sacct_state(job_id)
    assert row["state"] == "COMPLETED"
    assert row["exit_code"] == "0:0"
    assert row["account"] == "vision"  # the user's default account

    output = ssh("cat", f"slurm-{job_id}.out")
    assert output.returncode == 0, output.stderr
    assert output.stdout.strip() == socket.gethostname()


@pytest.mark.slurm
def test_the_login_node_needs_no_setup_for_slurm_commands():
    for command in (["squeue", "--me"], ["sacct", "-X", "-n"], ["sinfo", "-h"]):
        result = ssh(*command)
        assert result.returncode == 0, f"{command}: {result.stderr}"


@pytest.mark.slurm
def test_an_unknown_host_key_is_refused(tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    result = ssh("true", known_hosts=str(empty))
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr


@pytest.mark.slurm
def test_the_published_fingerprint_is_the_login_nodes_host_key():
    scanned = subprocess.run(
        ["ssh-keyscan", "-t", "ed25519", "-p", ENV["AXLE_LOCAL_SSH_PORT"], ENV["AXLE_LOCAL_SSH_HOST"]],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", "-"],
        input=scanned,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    assert fingerprint == ENV["AXLE_LOCAL_SSH_HOST_FINGERPRINT"]
    assert (
        Path(ENV["AXLE_LOCAL_SSH_KNOWN_HOSTS"])
        .read_text()
        .startswith(f"[{ENV['AXLE_LOCAL_SSH_HOST']}]:{ENV['AXLE_LOCAL_SSH_PORT']} ssh-ed25519 ")
    )


@pytest.mark.slurm
def test_a_key_the_user_does_not_hold_is_refused(tmp_path):
    stranger = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    argv = [
        "ssh", "-p", ENV["AXLE_LOCAL_SSH_PORT"], "-i", str(stranger),
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={ENV['AXLE_LOCAL_SSH_KNOWN_HOSTS']}",
        f"{USER}@{ENV['AXLE_LOCAL_SSH_HOST']}", "true",
    ]  # fmt: skip
    result = subprocess.run(
        argv,
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 255
    assert "Permission denied" in result.stderr


@pytest.mark.slurm
def test_the_cluster_python_serves_every_user():
    code = "import mlflow, sklearn; print(mlflow.__version__, sklearn.__version__)"
    result = ssh(ENV["AXLE_LOCAL_PYTHON"], "-c", code, user="approver")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[1] == "1.9.1"


@pytest.mark.slurm
def test_slurm_rejects_a_job_charged_to_a_foreign_account():
    result = ssh("sbatch", "--parsable", "--account", "research", "--wrap", "hostname")
    assert result.returncode != 0
    assert "Invalid account" in result.stderr


@pytest.mark.slurm
@pytest.mark.slow
def test_a_jobs_memory_high_water_mark_is_recorded():
    python = ENV["AXLE_LOCAL_PYTHON"]
    code = "import time; b = bytearray(64 * 1024 * 1024); time.sleep(4)"
    submitted = ssh("sbatch", "--parsable", "--wrap", shlex.join([python, "-c", code]))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert wait_for_sacct_state(job_id)["state"] == "COMPLETED"
    out = ssh("sacct", "-n", "-P", "-j", f"{job_id}.batch", "-o", "MaxRSS").stdout.strip()
    assert out.endswith("K"), out
    assert int(out[:-1]) >= 64 * 1024


@pytest.mark.slurm
def test_the_hub_keys_are_root_only_and_scratch_belongs_to_the_user():
    keys = Path(ENV["AXLE_LOCAL_KEYS_DIR"])
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    key = keys / USER / "id_ed25519"
    assert key.stat().st_uid == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    scratch = Path(ENV["AXLE_LOCAL_SCRATCH_ROOT"]) / USER
    written = ssh("touch", str(scratch / "probe"))
    assert written.returncode == 0, written.stderr
    assert (scratch / "probe").stat().st_uid == int(ssh("id", "-u").stdout)


# ---------------------------------------------------------------- slurmrestd


@pytest.mark.slurm
def test_slurmrestd_serves_diag_to_a_token_from_scontrol():
    version = ENV["AXLE_LOCAL_REST_API_VERSION"]
    status, body = rest("GET", f"/slurm/{version}/diag", scontrol_token(USER))
    assert status == 200, body
    assert body["errors"] == []
    assert body["meta"]["Slurm"]["release"].startswith("22.05")


@pytest.mark.slurm
def test_slurmrestd_submits_and_lists_with_a_token_signed_by_the_cluster_key():
    version = ENV["AXLE_LOCAL_REST_API_VERSION"]
    token = hs256_token(USER)
    name = f"rest-{uuid.uuid4().hex[:8]}"
    job = {
        "script": "#!/bin/bash\nhostname\n",
        "job": {
            "name": name,
            "current_working_directory": f"{ENV['AXLE_LOCAL_SCRATCH_ROOT']}/{USER}",
            "environment": {"PATH": "/usr/bin:/bin"},
        },
    }
    status, body = rest("POST", f"/slurm/{version}/job/submit", token, job)
    assert status == 200, body
    assert body["errors"] == []
    job_id = body["job_id"]

    assert wait_for_sacct_state(str(job_id))["state"] == "COMPLETED"
    # Ask for this job only: an unfiltered listing is bounded by a default time window and
    # the benchmarks leave thousands of records behind.
    # slurmdbd may briefly hold a provisional record (name "allocation") after sacct already
    # shows the job completed; wait for the final one, boundedly.
    deadline = time.monotonic() + 20
    while True:
        status, body = rest("GET", f"/slurmdb/{version}/jobs?step={job_id}", token)
        assert status == 200, body
        mine = [(j["name"], j["user"], j["account"]) for j in body["jobs"] if j["job_id"] == job_id]
        if mine == [(name, USER, "vision")] or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert mine == [(name, USER, "vision")]


@pytest.mark.slurm
def test_slurmrestd_refuses_a_token_signed_by_another_key():
    version = ENV["AXLE_LOCAL_REST_API_VERSION"]
    status, body = rest("GET", f"/slurm/{version}/diag", hs256_token(USER, key=os.urandom(32)))
    # 22.05 forwards the token to slurmctld, whose refusal comes back as a failed request.
    assert status in {401, 403, 500}
    assert body.get("errors"), body


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


@pytest.mark.slurm
def test_slurmrestd_serves_each_connection_from_a_process_that_ends_with_it():
    """Issue 14: slurmrestd 22.05 keeps what an answer made it allocate, so the stack runs it in
    inetd mode: a supervisor accepts on loopback and starts one slurmrestd per connection,
    which exits (its memory with it) when the client closes. Still loopback and JWT only."""
    supervisor = int(_pids()["slurmrestd"])
    cmdline = Path(f"/proc/{supervisor}/cmdline").read_bytes().split(b"\0")
    assert cmdline[0].endswith(b"systemd-socket-activate"), cmdline
    assert b"--accept" in cmdline and b"--inetd" in cmdline
    assert f"--listen=127.0.0.1:{ENV['AXLE_LOCAL_REST_URL'].rsplit(':', 1)[1]}".encode() in cmdline
    assert cmdline[cmdline.index(b"-a") + 1] == b"rest_auth/jwt"  # never rest_auth/local
    version = ENV["AXLE_LOCAL_REST_API_VERSION"]
    host, port = ENV["AXLE_LOCAL_REST_URL"].removeprefix("http://").rsplit(":", 1)
    token = hs256_token(USER)
    before = _children(supervisor)
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        request = (
            f"GET /slurm/{version}/ping HTTP/1.1\r\nHost: {host}\r\nX-SLURM-USER-NAME: {USER}\r\n"
            f"X-SLURM-USER-TOKEN: {token}\r\n\r\n"
        ).encode()
        conn.sendall(request)
        assert conn.recv(64).startswith(b"HTTP/1.1 200")
        serving = _children(supervisor) - before
        assert len(serving) == 1, serving  # this connection's own process, alive while it is open
        [child] = serving
        assert Path(f"/proc/{child}/comm").read_text().strip() == "slurmrestd"
        assert os.stat(f"/proc/{child}").st_uid == os.stat(f"/proc/{supervisor}").st_uid != 0
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists(), "the connection's slurmrestd outlived its connection"
    # and a bad token is still refused by the per-connection process
    status, body = rest("GET", f"/slurm/{version}/diag", hs256_token(USER, key=os.urandom(32)))
    assert status in {401, 403, 500} and body.get("errors"), body


# ---------------------------------------------------------------- MLflow


@pytest.mark.mlflow
def test_mlflow_records_an_experiment_and_a_run_through_its_rest_api():
    base = ENV["AXLE_MLFLOW_TRACKING_URI"]

    def call(path: str, payload: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"{base}/api/2.0/mlflow/{path}",
            data=json.dumps(payload).encode() if payload is not None else None,
            method="POST" if payload is not None else "GET",
            headers={"Content-Type": "application/json", **login},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    # The hub's login (MLflow runs its basic-auth app; tests/conftest.py reads the password).
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    login = {"Authorization": f"Basic {token}"} if user else {}

    with urllib.request.urlopen(f"{base}/health", timeout=10) as response:
        assert response.status == 200

    name = f"stack-test-{uuid.uuid4().hex[:8]}"
    experiment_id = call("experiments/create", {"name": name})["experiment_id"]
    run = call(
        "runs/create",
        {"experiment_id": experiment_id, "start_time": int(time.time() * 1000)},
    )["run"]
    run_id = run["info"]["run_id"]
    call(
        "runs/log-metric",
        {"run_id": run_id, "key": "loss", "value": 0.25, "timestamp": 0, "step": 1},
    )
    call("runs/update", {"run_id": run_id, "status": "FINISHED"})

    fetched = call(f"runs/get?run_id={run_id}")["run"]
    assert fetched["info"]["experiment_id"] == experiment_id
    assert fetched["info"]["status"] == "FINISHED"
    assert {"key": "loss", "value": 0.25} in [
        {"key": m["key"], "value": m["value"]} for m in fetched["data"]["metrics"]
    ]
    # Artifacts go through the server (--serve-artifacts), not to a path on the client.
    assert fetched["info"]["artifact_uri"].startswith("mlflow-artifacts:/")
