"""`SlurmClient` over slurmrestd (Slurm 22.05, OpenAPI plugin v0.0.38), authenticated with a
JWT for one cluster user: a token the user gave, or one minted here from the cluster's
HS256 key (short-lived, for this username only).

Two things slurmrestd does differently from sbatch, both handled here so the hub sees
the same job on either transport:

* slurmrestd 22.05 does not read the ``#SBATCH`` lines of the script: every option must be
  a job property. The script is parsed with `sbatch.py` (the same rules as sbatch), the
  hub's options are applied on top, and each option is sent as its property.
* It has no file API. `files` is a paired `ClusterFiles` (the SSH file layer for the same
  user, when the grant also holds an SSH key); without one, its every method raises
  `UnsupportedOperation` saying what the grant lacks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Self

import jwt
import requests

from . import config, environment, policy, sbatch
from .base import (
    AmbiguousSubmitError,
    ClusterFiles,
    ClusterState,
    FairShare,
    JobInfo,
    NoClusterFiles,
    NodeInfo,
    PartitionInfo,
    SlurmError,
    SlurmRejected,
    StartEstimate,
    SubmitRequest,
    TransportError,
    UnsupportedOperation,
    UsageWindow,
    bounded,
    current_deadline,
    deadline_at,
    submit_refusal,
)
from .parsing import SqueueMemo, gpus_in_gres

log = logging.getLogger(__name__)

DEFAULT_API_VERSION = "v0.0.38"
TOKEN_LIFETIME_SECONDS = 300
# Submissions of one batch in flight at once: slurmrestd 22.05 serves a few connections in
# parallel (its thread pool), and slurmctld serializes submissions anyway.
SUBMIT_CONCURRENCY = 4
# The queue: how far before its last request the hub asks for changes (clock differences
# between hub and controller), and how long an unchanged answer is used at most.
QUEUE_CLOCK_MARGIN = 10
QUEUE_MAX_AGE = 300
_NOT_MODIFIED = "_axle_not_modified"
# slurmrestd 22.05 keeps what an answer made it allocate for as long as its process lives
# (measured: +420 MiB per 31 MB answer of the 10,000-job queue, never given back; bench/README.md
# "slurmrestd memory"). Served in inetd mode, one process per connection (compose/local/stack.sh,
# or a systemd socket with Accept=yes), the process and its memory end when the connection
# closes: so the client closes its connection after an answer this big, and after this many
# requests whatever their size. Against a long-lived slurmrestd this costs one TCP handshake.
RECYCLE_ANSWER_BYTES = 1_000_000
RECYCLE_REQUESTS = 100
# Slurm's NO_VAL for 32-bit counts; INFINITE (0xFFFFFFFF) is above it.
NO_VAL = 0xFFFFFFFE

# sbatch long option -> slurmrestd v0.0.38 job property (src/plugins/openapi/v0.0.38/
# jobs.c `job_params`). Properties take the same strings the command line takes.
PROPERTY: dict[str, str] = {
    "account": "account",
    "acctg-freq": "account_gather_frequency",
    "array": "array",
    "batch": "batch_features",
    "begin": "begin_time",
    "bb": "burst_buffer",
    "chdir": "current_working_directory",
    "cluster-constraint": "cluster_constraint",
    "comment": "comment",
    "constraint": "constraints",
    "core-spec": "core_specification",
    "cores-per-socket": "cores_per_socket",
    "cpu-freq": "cpu_frequency",
    "cpus-per-gpu": "cpus_per_gpu",
    "cpus-per-task": "cpus_per_task",
    "deadline": "deadline",
    "delay-boot": "delay_boot",
    "dependency": "dependency",
    "distribution": "distribution",
    "error": "standard_error",
    "exclude": "exclude_nodes",
    "exclusive": "exclusive",
    "get-user-env": "get_user_environment",
    "gpu-bind": "gpu_binding",
    "gpu-freq": "gpu_frequency",
    "gpus": "gpus",
    "gpus-per-node": "gpus_per_node",
    "gpus-per-socket": "gpus_per_socket",
    "gpus-per-task": "gpus_per_task",
    "gres": "gres",
    "gres-flags": "gres_flags",
    "hint": "cpu_binding_hint",
    "hold": "hold",
    "input": "standard_input",
    "job-name": "name",
    "kill-on-invalid-dep": "kill_on_invalid_dependency",
    "licenses": "licenses",
    "mail-type": "mail_type",
    "mail-user": "mail_user",
    "mcs-label": "mcs_label",
    "mem": "memory_per_node",
    "mem-bind": "memory_binding",
    "mem-per-cpu": "memory_per_cpu",
    "mem-per-gpu": "memory_per_gpu",
    "mincpus": "minimum_cpus_per_node",
    "nice": "nice",
    "no-kill": "no_kill",
    "no-requeue": "no_requeue",
    "nodelist": "nodelist",
    "nodes": "nodes",
    "ntasks": "tasks",
    "ntasks-per-core": "tasks_per_core",
    "ntasks-per-gpu": "ntasks_per_gpu",
    "ntasks-per-node": "tasks_per_node",
    "ntasks-per-socket": "tasks_per_socket",
    "open-mode": "open_mode",
    "output": "standard_output",
    "partition": "partition",
    "priority": "priority",
    "profile": "profile",
    "qos": "qos",
    "requeue": "requeue",
    "reservation": "reservation",
    "signal": "signal",
    "sockets-per-node": "sockets_per_node",
    "spread-job": "spread_job",
    "thread-spec": "thread_specification",
    "threads-per-core": "threads_per_core",
    "time": "time_limit",
    "time-min": "time_minimum",
    "tmp": "temporary_disk_per_node",
    "use-min-nodes": "minimum_nodes",
    "wait-all-nodes": "wait_all_nodes",
    "wckey": "wckey",
}
# Options that only change what the sbatch program prints: nothing to send.
IGNORED = {"quiet", "verbose", "parsable", "ignore-pbs", "help", "usage", "version"}
MEMORY_PROPERTIES = ("memory_per_node", "memory_per_cpu", "memory_per_gpu")
FLAG_PROPERTIES = {"hold", "requeue", "no_requeue", "spread_job", "minimum_nodes"}

# sbatch gives a job the submitting shell's environment. A REST submission has no shell,
# and slurmrestd refuses a job with an empty environment, so a job gets this minimum.
BASE_ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


def mint_token(key: bytes, username: str, lifetime: int = TOKEN_LIFETIME_SECONDS) -> str:
    """A slurmrestd JWT for `username` only (auth/jwt reads the `sun` claim)."""
    now = int(time.time())
    return jwt.encode({"iat": now, "exp": now + lifetime, "sun": username}, key, algorithm="HS256")


def job_properties(req: SubmitRequest) -> dict[str, Any]:
    """The v0.0.38 job description that makes slurmrestd do what sbatch would do with
    the same script and command line. Raises SlurmRejected for what sbatch would refuse
    to read and for options slurmrestd 22.05 cannot take. Uses the directives validation
    recorded when the request carries them; reads the script only when it does not."""
    if req.script_directives is not None:
        directives, problems = list(req.script_directives), []  # validation refused any problem
    else:
        directives, problems = sbatch.parse_script(req.script)
    hub = [f"--job-name={req.job_name}"] if req.job_name else []
    hub += [f"--comment={req.comment}"] if req.comment else []
    hub += [f"--chdir={req.workdir}"] if req.workdir else []
    cli, cli_problems = sbatch.parse_command_line([*hub, *req.extra_args])
    fatal = [p for p in problems + cli_problems if "#SBATCH instead" not in p.message]
    if fatal:
        raise SlurmRejected("; ".join(str(p) for p in fatal))
    props: dict[str, Any] = {}
    for d in [*directives, *cli]:
        if d.option in IGNORED:
            continue
        key = PROPERTY.get(d.option)
        refusal = policy.rest_refusal(d.option, d.value)
        if key is None or refusal:
            # A permanent refusal (the job fails with this sentence), never a transport
            # error: retrying cannot make slurmrestd take it. Validation refuses it first.
            raise SlurmRejected(
                f"slurmrestd 22.05 cannot take `{d.text}`"
                + (f" (line {d.line})" if d.line else "")
                + f": {refusal or 'it has no job property for it'}; submit this job through an SSH cluster instead."
            )
        if key == "no_kill" and d.value is None:
            # the same: a bare flag is parsed as --no-kill=true, which it refuses
            props[key] = "set"
            continue
        if key == "exclusive":
            # slurmrestd parses the value as --exclusive=VALUE, and a bare flag as true,
            # which it refuses: plain --exclusive is the value "exclusive".
            props[key] = d.value or "exclusive"
            continue
        if key in MEMORY_PROPERTIES and not d.from_script:
            # like sbatch: a command-line memory option replaces the script's others
            for other in MEMORY_PROPERTIES:
                props.pop(other, None)
        if key in FLAG_PROPERTIES or d.value is None:
            props[key] = True
        else:
            props[key] = d.value
    props["environment"] = {**BASE_ENVIRONMENT, **req.env}
    return props


def _epoch(value: Any) -> datetime | None:
    if isinstance(value, int) and value > 0:
        return datetime.fromtimestamp(value, tz=UTC)
    return None


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def _return_code(exit_code: Mapping[str, Any], state: str) -> int | None:
    """A job's exit code from slurmdbd's answer, or None when the answer cannot be right.

    slurmrestd 22.05 (v0.0.38) answers `{"status": "SUCCESS", "return_code": 0}` for every job,
    one that exited 2 and is FAILED included (sacct says 2:0): a FAILED job shown as "exit code
    0" would be a lie, so it has no exit code over REST then. Later versions give the number as
    `{"set": true, "number": N}`."""
    code = exit_code.get("return_code")
    if isinstance(code, dict):
        code = code.get("number") if code.get("set", True) else None
    if not isinstance(code, int):
        return None
    if code == 0 and state == "FAILED":
        return None
    return code


class RestClient:
    """slurmrestd for one cluster user. Reuses one HTTP session (keep-alive)."""

    def __init__(
        self,
        base_url: str,
        username: str,
        *,
        token: str | None = None,
        jwt_key: bytes | None = None,
        api_version: str = DEFAULT_API_VERSION,
        timeout: float = 30.0,
        files: ClusterFiles | None = None,
        session: requests.Session | None = None,
    ) -> None:
        if not token and not jwt_key:
            raise ValueError("RestClient needs a token or a JWT signing key")
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._token = token
        self._jwt_key = jwt_key
        self._minted_at = 0.0
        self.api_version = api_version
        self.timeout = timeout
        self._files = files or NoClusterFiles(f"A REST-only grant ({username} at {self.base_url})")
        self._session = session or requests.Session()
        self._requests_on_connection = 0
        # (user, time of the last full answer, time of the last request, its jobs)
        self._queue_cache: tuple[str, float, float, list[JobInfo]] | None = None

    def __repr__(self) -> str:  # never the token
        return f"RestClient({self.username}@{self.base_url})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()
        self._requests_on_connection = 0
        closer = getattr(self._files, "close", None)
        if closer:
            closer()

    # ---------------------------------------------------------------- HTTP

    def _headers(self) -> dict[str, str]:
        # re-mint well before expiry so a long poll cycle never sends a stale token
        stale = not self._token or time.time() - self._minted_at > TOKEN_LIFETIME_SECONDS / 2
        if self._jwt_key is not None and stale:
            self._token = mint_token(self._jwt_key, self.username)
            self._minted_at = time.time()
        assert self._token
        return {
            "X-SLURM-USER-NAME": self.username,
            "X-SLURM-USER-TOKEN": self._token,
            "Accept": "application/json",
        }

    def _url(self, plugin: str, path: str) -> str:
        return f"{self.base_url}/{plugin}/{self.api_version}/{path.lstrip('/')}"

    def _request(
        self,
        method: str,
        plugin: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        ambiguous: bool = False,
        tolerate: Callable[[int, dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """One call; Slurm's `errors` raise SlurmRejected unless `tolerate(status, body)`
        says the answer is good despite them."""
        url = self._url(plugin, path)
        try:
            response = self._session.request(
                method,
                url,
                headers=self._headers(),
                json=json,
                params=params,
                timeout=bounded(self.timeout),
            )
        except requests.ConnectionError as exc:
            # A refused connection never reached slurmrestd; a reset after sending did.
            if ambiguous and not _never_sent(exc):
                raise AmbiguousSubmitError(
                    f"The connection to {self.base_url} broke during the submission; the job "
                    "may or may not have been submitted."
                ) from None
            raise TransportError(f"Cannot reach {self.base_url}: {exc}", permanent=False) from None
        except requests.Timeout:
            if ambiguous:
                raise AmbiguousSubmitError(
                    f"{self.base_url} did not answer the submission in time; the job may or "
                    "may not have been submitted."
                ) from None
            raise TransportError(f"{self.base_url} did not answer in time.", permanent=False) from None
        except requests.RequestException as exc:
            raise TransportError(f"Request to {self.base_url} failed: {exc}", permanent=False) from None
        self._recycle(len(response.content))
        if response.status_code == 304:  # update_time: nothing changed since
            return {_NOT_MODIFIED: True}
        if response.status_code in (401, 403):
            raise TransportError(
                f"slurmrestd refused the credentials of {self.username} (HTTP {response.status_code}).",
                permanent=True,
            )
        try:
            body = response.json()
        except ValueError:
            body = {}
        errors = [e for e in body.get("errors") or [] if e]
        if errors and tolerate is not None and tolerate(response.status_code, body):
            return body
        if response.status_code >= 500 and not errors:
            raise TransportError(
                f"slurmrestd answered HTTP {response.status_code}: {response.text[:200]}",
                permanent=False,
            )
        if errors or response.status_code >= 400:
            raise SlurmRejected(_error_text(errors) or f"HTTP {response.status_code}")
        return body

    def _recycle(self, answer_bytes: int) -> None:
        """Close the kept-alive connection after a big answer or RECYCLE_REQUESTS requests
        (the answer is read already): an inetd-mode slurmrestd then exits and frees what it
        allocated. The session stays usable; its next request opens a new connection."""
        self._requests_on_connection += 1
        if answer_bytes >= RECYCLE_ANSWER_BYTES or self._requests_on_connection >= RECYCLE_REQUESTS:
            self._session.close()
            self._requests_on_connection = 0

    # ---------------------------------------------------------------- SlurmClient

    def submit(self, req: SubmitRequest) -> str:
        try:
            environment.check(req.env)  # the same names as over SSH, though JSON is no command line
        except environment.EnvironmentRefused as exc:
            raise SlurmRejected(str(exc)) from None
        body = {"script": req.script, "job": job_properties(req)}
        try:
            answer = self._request(
                "POST",
                "slurm",
                "job/submit",
                json=body,
                ambiguous=True,
                tolerate=_submitted_anyway,
            )
        except SlurmRejected as exc:
            # slurmrestd up, slurmctld down: an outage in an error list, not a refusal.
            raise submit_refusal(exc.message) from None
        job_id = answer.get("job_id")
        notes = _error_text([*(answer.get("errors") or []), *(answer.get("warnings") or [])])
        if notes:
            log.info("slurmrestd accepted job %s with a note: %s", job_id, notes)
        if not job_id:
            raise AmbiguousSubmitError(f"slurmrestd answered without a job id: {answer}")
        return str(job_id)

    def submit_many(self, reqs: Sequence[SubmitRequest]) -> dict[str, str | SlurmError]:
        """slurmrestd takes one job per `job/submit` request, so a batch is that many requests,
        sent concurrently (SUBMIT_CONCURRENCY at a time, each thread on its own kept-alive
        session) rather than one after the other; each job's answer is its own."""
        answers: dict[str, str | SlurmError] = {}
        if not reqs:
            return answers
        self._headers()  # mint the token once, before the threads share it
        local = threading.local()
        sessions: list[requests.Session] = []

        at = current_deadline()  # the pool's threads do not inherit this thread's context

        def one(req: SubmitRequest) -> tuple[str, str | SlurmError]:
            if not hasattr(local, "client"):
                session = requests.Session()
                sessions.append(session)
                local.client = RestClient(
                    self.base_url,
                    self.username,
                    token=self._token,
                    jwt_key=self._jwt_key,
                    api_version=self.api_version,
                    timeout=self.timeout,
                    session=session,
                )
                local.client._minted_at = self._minted_at
            try:
                with deadline_at(at):
                    return req.comment, local.client.submit(req)
            except SlurmError as exc:
                return req.comment, exc

        workers = min(SUBMIT_CONCURRENCY, len(reqs))
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="slurmrestd-submit") as pool:
                for marker, answer in pool.map(one, reqs):
                    answers[marker] = answer
        finally:
            for session in sessions:
                session.close()
        return answers

    def queue(self, user: str, *, memo: SqueueMemo | None = None) -> list[JobInfo]:
        """v0.0.38 cannot filter by user: one call, filtered here. The call asks only for
        what changed since the last answer (`update_time`): slurmctld then answers "no
        change" (HTTP 304, no body) unless any job changed, and the last answer stands. A
        full answer costs slurmrestd tens of MB for 10,000 jobs (and 22.05's slurmrestd
        keeps much of what it allocated for it); "no change" costs nothing.

        `update_time` is compared with the controller's clock: the hub asks from
        QUEUE_CLOCK_MARGIN seconds before its own last request, so clocks that differ by
        less never hide a change. The last answer is used for QUEUE_MAX_AGE seconds at most."""
        now = time.time()
        cached = self._queue_cache
        params = None
        if cached is not None and cached[0] == user and now - cached[1] < QUEUE_MAX_AGE:
            params = {"update_time": str(int(cached[2] - QUEUE_CLOCK_MARGIN))}
        answer = self._request("GET", "slurm", "jobs", params=params)
        if answer.get(_NOT_MODIFIED):
            assert cached is not None
            self._queue_cache = (user, cached[1], now, cached[3])
            return list(cached[3])
        jobs = [
            _job_from_slurm(j)
            for j in answer.get("jobs") or []
            if j.get("user_name") == user and j.get("job_state") not in FINISHED_STATES
        ]
        self._queue_cache = (user, now, now, jobs)
        return list(jobs)

    def accounting(self, job_ids: list[str]) -> list[JobInfo]:
        if not job_ids:
            return []
        # v0.0.38's `step` filter is sacct's --jobs: a CSV of ids, an array's id bringing
        # all its tasks (src/plugins/openapi/dbv0.0.38/jobs.c). One call for all of them.
        answer = self._request(
            "GET",
            "slurmdb",
            "jobs",
            params={"step": ",".join(job_ids)},
            tolerate=_nothing_found,
        )
        return [_job_from_slurmdb(j) for j in answer.get("jobs") or []]

    def usage(self, window: UsageWindow) -> list[JobInfo]:
        # slurmdbd reads these as sacct reads -S/-E (Slurm's parse_time): a relative time
        # needs no zone. v0.0.38 filters by account but not by user: users are kept here.
        params = {
            "start_time": f"now-{window.start_seconds_ago}",
            "end_time": f"now-{window.end_seconds_ago}" if window.end_seconds_ago else "now",
        }
        if window.accounts:
            params["account"] = ",".join(window.accounts)
        users = set(window.users) if window.users else (set() if window.accounts else {self.username})
        answer = self._request("GET", "slurmdb", "jobs", params=params, tolerate=_nothing_found)
        jobs = [_job_from_slurmdb(j) for j in answer.get("jobs") or []]
        return [j for j in jobs if not users or j.user in users]

    def find_by_comment(self, marker: str) -> list[JobInfo]:
        return self.find_by_comments([marker]).get(marker, [])

    def find_by_comments(self, markers: Sequence[str]) -> dict[str, list[JobInfo]]:
        """One call for every marker. Only the controller's view: v0.0.38's slurmdb has no
        user or comment filter, so a job that already left the queue is not found here."""
        wanted = set(markers)
        found: dict[str, list[JobInfo]] = {}
        if not wanted:
            return found
        answer = self._request("GET", "slurm", "jobs")
        for j in answer.get("jobs") or []:
            if j.get("comment") in wanted and j.get("user_name") == self.username:
                found.setdefault(j["comment"], []).append(_job_from_slurm(j))
        return found

    def cancel(self, job_id: str) -> None:
        self._request("DELETE", "slurm", f"job/{job_id}")

    def test_only(self, req: SubmitRequest) -> StartEstimate:
        # slurmrestd's job/submit always submits: its OpenAPI (v0.0.38 here) offers no test-only.
        raise UnsupportedOperation(
            f"Slurm's start estimate (sbatch --test-only) is not available over REST (slurmrestd {self.api_version})."
        )

    def fairshare(self) -> list[FairShare]:
        # The v0.0.38 OpenAPI this transport speaks (Slurm 22.05) has no shares endpoint.
        raise UnsupportedOperation(f"Fair-share (sshare) is not available over REST (slurmrestd {self.api_version}).")

    def cancel_many(self, job_ids: Sequence[str]) -> None:
        # slurmrestd's API cancels one job per request (DELETE /job/{id}); there is no batch form.
        for job_id in job_ids:
            self.cancel(job_id)

    @property
    def files(self) -> ClusterFiles:
        return self._files

    def cluster_state(self) -> ClusterState:
        # Nodes carry their partitions; partitions carry defaults and limits. Two calls
        # per cycle however many jobs: the REST form of one sinfo.
        nodes_answer = self._request("GET", "slurm", "nodes")
        parts_answer = self._request("GET", "slurm", "partitions")
        nodes = [_node(n) for n in nodes_answer.get("nodes") or []]
        partitions = []
        for p in parts_answer.get("partitions") or []:
            name = p.get("name", "")
            members = [n for n in nodes if name in n.partitions]
            # v0.0.38 names it max_time_limit, in minutes; -1 is MaxTime=INFINITE
            limit = p.get("max_time_limit")
            flags = p.get("flags") or []
            partitions.append(
                PartitionInfo(
                    name=name,
                    state=_str(p.get("state") or "UP").upper(),
                    is_default="default" in [f.lower() for f in flags] or "DEFAULT" in flags,
                    time_limit_minutes=limit if isinstance(limit, int) and 0 <= limit < NO_VAL else None,
                    nodes=[n.name for n in members],
                    total_cpus=sum(n.cpus for n in members),
                    total_memory_mb=sum(n.memory_mb for n in members),
                    total_gpus=sum(n.gpus for n in members),
                )
            )
            config.rest_partition_config(partitions[-1], p)
        state = ClusterState(partitions=partitions, nodes=nodes)
        config.fill_node_sizes(state)
        return state

    def ping(self) -> None:
        answer = self._request("GET", "slurm", "ping")
        pings = answer.get("pings") or []
        if not any(_str(p.get("ping")).upper() == "UP" for p in pings):
            raise TransportError(f"The Slurm controller does not answer: {pings}", permanent=False)


FINISHED_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
}


# slurm_errno.h ESLURM_REST_EMPTY_RESULT: slurmdbd's "Nothing found with query".
ESLURM_REST_EMPTY_RESULT = 9003


def _error_codes(body: Mapping[str, Any]) -> set[Any]:
    return {e.get("error_code", e.get("error_number")) for e in body.get("errors") or [] if e}


def _submitted_anyway(status: int, body: Mapping[str, Any]) -> bool:
    """slurmctld hands out a job id only for a job it created; what comes with it is
    information (e.g. 2042 ESLURM_JOB_HELD, "Job is in held state, pending scheduler
    release", for `--hold`), which slurmrestd 22.05 still lists under `errors`. sbatch
    reports such a job as submitted, and so must we: raising would lose a real job.
    A refusal carries no job id (HTTP 500), so it still raises with Slurm's words."""
    job_id = body.get("job_id")
    return isinstance(job_id, int) and job_id > 0


def _nothing_found(status: int, body: Mapping[str, Any]) -> bool:
    """slurmdbd reports a query that matched no job as an error; it is an empty list."""
    return status < 400 and _error_codes(body) == {ESLURM_REST_EMPTY_RESULT}


def _never_sent(exc: requests.ConnectionError) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("refused", "name or service", "no route", "failed to establish"))


def _error_text(errors: Iterable[Mapping[str, Any]]) -> str:
    parts = []
    for e in errors:
        text = e.get("error") or e.get("description") or ""
        if text and text not in parts:
            parts.append(str(text))
    return "; ".join(parts)


def _job_from_slurm(j: Mapping[str, Any]) -> JobInfo:
    task = j.get("array_task_id")
    array_job = j.get("array_job_id") or 0
    pending_range = j.get("array_task_string") or ""
    is_array = task is not None or bool(pending_range)
    limit = j.get("time_limit")
    start = _epoch(j.get("start_time"))
    now = datetime.now(tz=UTC)
    elapsed = None
    if j.get("job_state") == "RUNNING" and start:
        elapsed = int((now - start).total_seconds())
    return JobInfo(
        job_id=str(j.get("job_id")),
        array_job_id=str(array_job) if is_array and array_job else None,
        array_task_id=(str(task) if task is not None else pending_range) if is_array else None,
        name=_str(j.get("name")),
        comment=_str(j.get("comment")),
        state=_str(j.get("job_state")),
        reason="" if j.get("state_reason") in (None, "None") else _str(j.get("state_reason")),
        user=_str(j.get("user_name")),
        account=_str(j.get("account")),
        partition=_str(j.get("partition")),
        submit_time=_epoch(j.get("submit_time")),
        start_time=start,
        end_time=_epoch(j.get("end_time")),
        node_list=_str(j.get("nodes")),
        elapsed_seconds=elapsed,
        time_limit_minutes=limit if isinstance(limit, int) and limit < 2**31 - 1 else None,
        alloc_cpus=j.get("cpus"),
        num_nodes=j.get("node_count"),
        work_dir=_str(j.get("current_working_directory")),
    )


def _job_from_slurmdb(j: Mapping[str, Any]) -> JobInfo:
    times = j.get("time") or {}
    state = j.get("state") or {}
    array = j.get("array") or {}
    exit_code = j.get("exit_code") or {}
    total = times.get("total") or {}
    tres = j.get("tres") or {}
    allocated = {
        t.get("type") + ("/" + t["name"] if t.get("name") else ""): t.get("count") for t in tres.get("allocated") or []
    }
    max_rss = None
    for step in j.get("steps") or []:
        for t in ((step.get("tres") or {}).get("requested") or {}).get("max") or []:
            if t.get("type") == "mem" and isinstance(t.get("count"), int):
                max_rss = max(max_rss or 0, t["count"])
    task = array.get("task_id")
    array_job = array.get("job_id") or 0
    signal = (exit_code.get("signal") or {}).get("signal_id")
    comment = j.get("comment")
    current = _str(state.get("current"))
    return JobInfo(
        job_id=str(j.get("job_id")),
        array_job_id=str(array_job) if array_job else None,
        array_task_id=str(task) if array_job and task is not None else None,
        name=_str(j.get("name")),
        comment=_str(comment.get("job") if isinstance(comment, dict) else comment),
        state=current,
        reason="" if state.get("reason") in (None, "None") else _str(state.get("reason")),
        user=_str(j.get("user")),
        account=_str(j.get("account")),
        partition=_str(j.get("partition")),
        submit_time=_epoch(times.get("submission")),
        start_time=_epoch(times.get("start")),
        end_time=_epoch(times.get("end")),
        node_list="" if j.get("nodes") in (None, "None assigned") else _str(j.get("nodes")),
        elapsed_seconds=times.get("elapsed"),
        time_limit_minutes=times.get("limit"),
        exit_code=_return_code(exit_code, current),
        exit_signal=signal if isinstance(signal, int) else None,
        cpu_time_seconds=(total.get("seconds") or 0) + (total.get("microseconds") or 0) / 1e6 if total else None,
        max_rss_bytes=max_rss,
        alloc_cpus=allocated.get("cpu"),
        alloc_gpus=allocated.get("gres/gpu", 0) if allocated else None,
        alloc_mem_mb=allocated.get("mem"),
        num_nodes=allocated.get("node"),
        work_dir=_str(j.get("working_directory")),
    )


def _node(n: Mapping[str, Any]) -> NodeInfo:
    gres = _str(n.get("gres"))
    state = n.get("state")
    if isinstance(state, list):
        state = "+".join(state)
    return NodeInfo(
        name=_str(n.get("name")),
        state=_str(state).upper(),
        cpus=int(n.get("cpus") or 0),
        memory_mb=int(n.get("real_memory") or 0),
        gpus=gpus_in_gres(gres),
        gres=gres,
        partitions=list(n.get("partitions") or []),
        cpus_allocated=n.get("alloc_cpus"),
        free_memory_mb=n.get("free_memory") if isinstance(n.get("free_memory"), int) else None,
        reason=_str(n.get("reason")),
    )
