"""`axle`: the portal from a terminal. Tables for people, `--json` for scripts, and exit codes
that say what happened (see `axle --help` and errors.py)."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import __version__
from . import config as config_mod
from .client import JOB_TERMINAL, PIPELINE_SUCCESS, Client, run_state
from .errors import (
    EXIT_INTERRUPTED,
    EXIT_REFUSED,
    EXIT_UNSUCCESSFUL,
    AuthError,
    AxleError,
    RefusedError,
    Unsuccessful,
    UsageError,
)

EXIT_CODES = (
    "Exit codes: 0 done · 1 what you waited for failed (job, sweep, pipeline run, deployment) · "
    "2 wrong usage · 3 not logged in or token refused · 4 no such thing · 5 refused by validation "
    "(problems listed, with line numbers) · 6 not allowed · 7 its state does not allow it · "
    "8 portal, cluster or MLflow unreachable · 130 interrupted."
)

app = typer.Typer(
    name="axle",
    help="Axle from a terminal: submit sbatch scripts, follow their logs, run sweeps and pipelines, "
    "see models and ask for deployments. Log in first with `axle login`.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
sweep_app = typer.Typer(
    help="Hyperparameter sweeps: Katib Experiments run as Slurm job arrays.", no_args_is_help=True, epilog=EXIT_CODES
)
pipeline_app = typer.Typer(
    help="Pipelines: steps chained by Slurm dependencies.", no_args_is_help=True, epilog=EXIT_CODES
)
deploy_app = typer.Typer(
    help="Deployments of model versions, approved by someone else (four eyes).", no_args_is_help=True, epilog=EXIT_CODES
)
app.add_typer(sweep_app, name="sweep")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(deploy_app, name="deploy")

# Piped into a file or another program, a table keeps its rows on one line each.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 250)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JSON = typer.Option(False, "--json", help="Print the API's JSON instead of a table (for scripts).")
JOB_ID = typer.Argument(..., help="Job id (or its first characters, or its Slurm id).")
SWEEP_ID = typer.Argument(..., help="Sweep id (or its first characters).")
RUN_ID = typer.Argument(..., help="The pipeline run's id (or its first characters).")
DEPLOYMENT_ID = typer.Argument(..., help="Deployment id (or its first characters).")
STYLES = {
    "completed": "green",
    "succeeded": "green",
    "live": "green",
    "approved": "green",
    "running": "cyan",
    "deploying": "cyan",
    "pending": "yellow",
    "queued": "yellow",
    "submitting": "yellow",
    "requested": "yellow",
    "failed": "red",
    "rejected": "red",
    "timeout": "red",
    "out_of_memory": "red",
    "node_fail": "red",
    "unknown": "magenta",
    "cancelled": "dim",
    "stopped": "dim",
    "retired": "dim",
    "rolled_back": "dim",
}


# -- helpers ---------------------------------------------------------------------------------
def _client(**kwargs) -> Client:
    return Client.from_config(**kwargs)


def _print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


def _state(value: str) -> Text:
    return Text(value or "-", style=STYLES.get(value or "", ""))


def _short(ident) -> str:
    return str(ident or "")[:8]


def _when(iso: str | None) -> str:
    """One format for every time: local, to the second, with the zone."""
    if not iso:
        return "-"
    try:
        moment = datetime.fromisoformat(str(iso).replace("Z", "+00:00"))
    except ValueError:
        return str(iso)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _elapsed(start: str | None, end: str | None) -> str:
    if not start:
        return "-"
    try:
        a = datetime.fromisoformat(start.replace("Z", "+00:00"))
        b = datetime.fromisoformat(end.replace("Z", "+00:00")) if end else datetime.now(timezone.utc)
    except ValueError:
        return "-"
    seconds = max(0, int((b - a).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value) if value is not None else "-"
    return f"{value:.4g}"


def _metrics(metrics: dict | None, most: int = 3) -> str:
    items = sorted((metrics or {}).items())
    text = ", ".join(f"{k}={_number(v)}" for k, v in items[:most])
    return text + (f" (+{len(items) - most})" if len(items) > most else "")


def _table(*columns: str) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column not in ("NAME", "METRICS", "PARAMETERS"))
    return table


def _fields(rows: list[tuple[str, object]]) -> None:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value if isinstance(value, Text) else Text(str(value if value not in (None, "") else "-")))
    out.print(table)


def _parameters(pairs: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"-p {pair!r}: give parameters as NAME=VALUE, e.g. -p LR=0.1")
        params[name.strip()] = value
    return params


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: the {what} is not UTF-8 text.") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the {what} ({exc.strerror}).") from None


def _refused(exc: RefusedError, source: str) -> RefusedError:
    """The portal's problems, each on a line as a compiler says it: `job.sh:2: message`."""
    lines = []
    for problem in exc.problems:
        where = f"{source}:{problem['line']}:" if problem.get("line") else f"{source}:"
        field = f" {problem['path']}:" if problem.get("path") else ""
        lines.append(f"{where}{field} {problem.get('message', '')}")
    if lines:
        head = exc.message.split(": ", 1)[0].rstrip(".")
        exc.message = f"{head}:\n  " + "\n  ".join(lines)
    return exc


def _act(kind: str, ref: str, act: Callable[[Client, str], dict], json_out: bool, said: Callable[[dict], str]) -> None:
    """Do one thing to the job, sweep, pipeline run or deployment `ref` names (an id or its
    first characters); print what the portal answers: its JSON, or the line `said` makes of it."""
    with _client() as client:
        thing = act(client, client.resolve(kind, ref))
    if json_out:
        _print_json(thing)
    else:
        out.print(said(thing), markup=False)


def _unsuccessful(what: str, thing: dict, state: str, detail: str | None = "", *, verb: str = "ended") -> Unsuccessful:
    """`sweep 1a2b3c4d ended failed: why`, for what was waited for and did not end well."""
    return Unsuccessful(f"{what} {_short(thing['id'])} {verb} {state}" + (f": {detail}" if detail else ""))


def _job_line(job: dict) -> str:
    parts = [f"job {_short(job['id'])}", job["status"]]
    if job.get("slurm_job_id"):
        parts.append(f"Slurm {job['slurm_job_id']}")
    if job.get("reason") and job["status"] not in JOB_TERMINAL:
        parts.append(f"({job['reason']})")
    return " ".join(parts)


def _job_end(job: dict) -> None:
    """Say how the job ended; exit 1 unless it completed."""
    if job["status"] == "completed":
        metrics = _metrics(job.get("metrics"), most=6)
        err.print(f"axle: job {_short(job['id'])} completed" + (f": {metrics}" if metrics else ""), markup=False)
        return
    detail = job.get("failure_message") or job.get("last_error") or ""
    code = job.get("exit_code")
    code_text = f" (exit code {code})" if code is not None and job["status"] == "failed" else ""
    raise _unsuccessful("job", job, f"{job['status']}{code_text}", detail)


def _on_job_change(job: dict) -> None:
    if job["status"] not in JOB_TERMINAL:  # the end is said by _job_end, with its metrics or reason
        err.print(f"axle: {_job_line(job)}", markup=False)


# -- account -----------------------------------------------------------------------------------
@app.command()
def login(
    url: str | None = typer.Option(None, "--url", help="The portal's address, e.g. http://127.0.0.1:8000"),
    username: str | None = typer.Option(
        None, "--username", "-u", help="Make a new token from your username and password instead of pasting one."
    ),
):
    """Log in to a portal with an API token (from its /tokens/ page) and keep it for the next commands.

    The token is asked for without echo, or read from standard input (`axle login --url U < token.txt`);
    never pass it as an argument, where others on the machine can read it. It is checked against the
    portal before it is stored, readable by you only, in $XDG_CONFIG_HOME/axle/config.toml."""
    try:
        cfg = config_mod.load()
    except UsageError:  # a damaged file is what logging in again replaces
        cfg = config_mod.Config(url=config_mod.DEFAULT_URL)
    interactive = sys.stdin.isatty()
    if not url:
        url = typer.prompt("Portal URL", default=cfg.url) if interactive else cfg.url
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"{url!r} is not a URL: give it as http(s)://host[:port]")
    if username:
        password = typer.prompt("Password", hide_input=True) if interactive else sys.stdin.readline().rstrip("\n")
        with Client(url) as anonymous:
            try:
                made = anonymous.token_obtain(
                    username=username, password=password, name=f"axle CLI on {socket.gethostname()}"[:100]
                )
            except AuthError:
                raise AuthError(f"The portal at {url} refused that username and password.") from None
        token = made["token"]
    else:
        if interactive:
            token = typer.prompt(f"API token (make one at {url}/tokens/)", hide_input=True)
        else:
            token = sys.stdin.readline()
        token = token.strip()
        if not token:
            raise UsageError("No token given: paste it at the prompt or send it on standard input.")
    with Client(url, token) as client:
        try:
            me = client.me()
        except AuthError:
            raise AuthError(f"The portal at {url} refused this token: it is wrong, revoked or expired.") from None
    path = config_mod.save(url=url, token=token, username=me["username"])
    err.print(f"Logged in to {url} as {me['username']}; token kept in {path} (readable by you only).", markup=False)


@app.command()
def logout():
    """Forget the stored token (revoke it on the portal's /tokens/ page too)."""
    path = config_mod.forget()
    err.print(f"Removed {path}." if path else "Not logged in.", markup=False)


@app.command()
def whoami(json_out: bool = JSON):
    """Who the stored token acts as, on which portal."""
    cfg = config_mod.require_token(config_mod.load())
    with Client(cfg.url, cfg.token) as client:
        me = client.me()
    if json_out:
        return _print_json({**me, "url": cfg.url})
    teams = ", ".join(f"{t['team']} ({t['role']})" for t in me.get("teams", [])) or "-"
    _fields([("user", me["username"]), ("portal", cfg.url), ("teams", teams), ("token from", cfg.source)])


@app.command()
def clusters(json_out: bool = JSON):
    """Clusters you may see, and your grant on each."""
    with _client() as client:
        items = client.clusters()
    if json_out:
        return _print_json(items)
    table = _table("NAME", "TRANSPORT", "REACHABLE", "YOUR GRANT", "AS")
    for c in items:
        grant = c.get("my_grant") or {}
        reachable = (c.get("health") or {}).get("reachable")
        table.add_row(
            Text(c["name"]),
            c.get("transport", ""),
            {True: "yes", False: "no"}.get(reachable, "?"),
            _state(grant.get("status", "")) if grant else Text("none (request access on its page)"),
            Text(grant.get("cluster_username", "") or "-"),
        )
    out.print(table)


# -- jobs ------------------------------------------------------------------------------------
@app.command()
def submit(
    script: Path = typer.Argument(..., help="The sbatch script.", exists=True, dir_okay=False, readable=True),
    cluster: str = typer.Option(..., "--cluster", "-c", help="Cluster name (see `axle clusters`)."),
    param: list[str] = typer.Option([], "--param", "-p", help="NAME=VALUE, exported to the job; repeat it."),
    name: str = typer.Option("", "--name", "-n", help="Job name (default: the script's file name)."),
    dataset: list[str] = typer.Option([], "--dataset", help="A dataset version id used as input; repeat it."),
    code_repo: str = typer.Option("", "--code-repo", help="Git repository the job's code comes from."),
    code_ref: str = typer.Option("", "--code-ref", help="Branch, tag or commit of --code-repo."),
    image: str = typer.Option("", "--image", help="Apptainer image on the cluster."),
    register_as: str = typer.Option("", "--register-as", help="Register the model the job logs under this name."),
    check: bool = typer.Option(False, "--check", help="Only check the script against your grant; submit nothing."),
    wait: bool = typer.Option(False, "--wait", "-w", help="Wait until the job ends; exit 1 unless it completed."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Print the job's output as it comes, until it ends."),
    json_out: bool = JSON,
):
    """Submit an sbatch script to a cluster you hold a grant on.

    It is checked against your grant first: a refused script lists its problems by line and exits 5."""
    text = _read(script, "script")
    parameters = _parameters(param)
    with _client() as client:
        if check:
            result = client.job_validate(cluster=cluster, script=text, parameters=parameters)
            if json_out:
                _print_json(result)
            if not result["ok"]:
                raise _refused(
                    RefusedError("The script does not fit your grant", problems=result["problems"]), str(script)
                )
            if not json_out:
                request = result.get("effective_request") or {}
                err.print(
                    f"{script} fits your grant on {cluster}: "
                    + ", ".join(f"{k}={v}" for k, v in request.items() if v not in (None, "", [])),
                    markup=False,
                )
            return
        code = {"repo": code_repo, "ref": code_ref} if code_repo else None
        try:
            job = client.job_submit(
                cluster=cluster,
                script=text,
                name=name or script.stem,
                parameters=parameters,
                dataset_versions=dataset,
                code=code,
                image=image,
                register_model_as=register_as,
            )
        except RefusedError as exc:
            raise _refused(exc, str(script)) from None
        if not (wait or follow):
            if json_out:
                return _print_json(job)
            out.print(
                f"Submitted job {job['id']} ({job['name']}) to {job['cluster']} as {job['cluster_username']}: "
                f"{job['status']}.\nFollow it with: axle logs -f {_short(job['id'])}",
                markup=False,
            )
            return
        err.print(f"axle: submitted job {job['id']} to {job['cluster']}", markup=False)
        final = _follow(client, job["id"], to_stderr=json_out) if follow else _wait_job(client, job["id"])
        if json_out:
            _print_json(final)
        _job_end(final)


def _wait_job(client: Client, job_id: str) -> dict:
    if err.is_terminal:
        with err.status("waiting for the job…") as status:
            return client.job_wait(job_id, on_change=lambda j: status.update(Text(_job_line(j))))
    return client.job_wait(job_id, on_change=_on_job_change)


def _follow(client: Client, job_id: str, *, to_stderr: bool = False, streams=("stdout", "stderr")) -> dict:
    for stream, text in client.job_follow(job_id, streams=streams, on_change=_on_job_change):
        target = sys.stderr if (to_stderr or stream == "stderr") else sys.stdout
        target.write(text)
        target.flush()
    return client.last_job


@app.command()
def jobs(
    status: str = typer.Option("", "--status", "-s", help="active, or one state: running, completed, failed…"),
    cluster: str = typer.Option("", "--cluster", "-c", help="Only jobs on this cluster."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=1000, help="How many, newest first."),
    json_out: bool = JSON,
):
    """Your jobs, newest first."""
    with _client() as client:
        items = client.jobs(status=status, cluster=cluster, limit=limit)
    if json_out:
        return _print_json(items)
    table = _table("ID", "NAME", "STATUS", "CLUSTER", "SLURM ID", "SUBMITTED", "ELAPSED", "METRICS")
    for j in items:
        table.add_row(
            _short(j["id"]),
            Text(j["name"]),
            _state(j["status"]),
            Text(j["cluster"]),
            j.get("slurm_job_id") or "-",
            _when(j.get("submitted_at") or j.get("created_at")),
            _elapsed(j.get("started_at"), j.get("finished_at")),
            Text(_metrics(j.get("metrics"))),
        )
    out.print(table)
    if not items:
        err.print("No jobs" + (" match." if status or cluster else " yet: submit one with `axle submit`."))


@app.command()
def status(job_id: str = JOB_ID, json_out: bool = JSON):
    """A job's state, inputs, times and metrics."""
    with _client() as client:
        job = client.job(client.resolve("job", job_id))
    if json_out:
        return _print_json(job)
    code = job.get("exit_code")
    rows = [
        ("job", f"{job['id']}  {job['name']}"),
        ("status", _state(job["status"])),
        ("cluster", f"{job['cluster']} as {job['cluster_username']}"),
        ("slurm", f"{job.get('slurm_job_id') or '-'} {job.get('slurm_state') or ''}".strip()),
        ("reason", job.get("reason")),
        ("created", _when(job.get("created_at"))),
        ("started", _when(job.get("started_at"))),
        ("finished", _when(job.get("finished_at"))),
        ("elapsed", _elapsed(job.get("started_at"), job.get("finished_at"))),
        ("exit code", code if code is not None and job["status"] not in ("cancelled",) else "-"),
        ("parameters", ", ".join(f"{k}={v}" for k, v in (job.get("parameters") or {}).items())),
        ("metrics", _metrics(job.get("metrics"), most=20)),
        ("mlflow run", job.get("mlflow_run_id")),
    ]
    for key in ("failure_message", "last_error"):
        if job.get(key):
            rows.append((key.replace("_", " "), Text(job[key], style="red")))
    _fields(rows)


@app.command()
def logs(
    job_id: str = JOB_ID,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new output until the job ends."),
    stream: str = typer.Option("both", "--stream", help="stdout, stderr or both (stderr goes to your stderr)."),
):
    """A job's output. With -f, follow it until the job ends; then exit 1 unless it completed."""
    if stream not in ("stdout", "stderr", "both"):
        raise UsageError("--stream is stdout, stderr or both.")
    streams = ("stdout", "stderr") if stream == "both" else (stream,)
    with _client() as client:
        ident = client.resolve("job", job_id)
        if follow:
            _job_end(_follow(client, ident, streams=streams))
            return
        for name in streams:
            offset, notes = 0, ""
            while True:
                chunk = client.job_logs(ident, stream=name, offset=offset)
                target = sys.stderr if name == "stderr" else sys.stdout
                target.write(chunk.get("text", ""))
                target.flush()
                notes = chunk.get("message") or notes
                if not chunk.get("text") or chunk["next_offset"] <= offset:
                    break
                offset = chunk["next_offset"]
            if notes and name == streams[0]:
                err.print(f"axle: {name}: {notes}", markup=False)


@app.command()
def cancel(
    job_ids: list[str] = typer.Argument(..., help="Job ids (or their first characters, or Slurm ids)."),
    json_out: bool = JSON,
):
    """Cancel jobs (scancel as your cluster account)."""
    done = []
    with _client() as client:
        for ref in job_ids:
            job = client.job_cancel(client.resolve("job", ref))
            done.append(job)
            if not json_out:
                out.print(f"job {_short(job['id'])} ({job['name']}): {job['status']}", markup=False)
    if json_out:
        _print_json(done if len(done) > 1 else done[0])


# -- sweeps ----------------------------------------------------------------------------------
@sweep_app.command("submit")
def sweep_submit(
    experiment: Path = typer.Argument(
        ..., help="A Katib Experiment (kubeflow.org/v1beta1), YAML.", exists=True, dir_okay=False
    ),
    script: Path | None = typer.Option(
        None,
        "--script",
        help="The trial's sbatch script (else spec.trialTemplate.trialSpec).",
        exists=True,
        dir_okay=False,
    ),
    cluster: str = typer.Option(..., "--cluster", "-c", help="Cluster name (see `axle clusters`)."),
    team: str | None = typer.Option(None, "--team", help="Team that owns the sweep (default: yours)."),
    wait: bool = typer.Option(False, "--wait", "-w", help="Wait until the sweep ends; exit 1 unless it succeeded."),
    json_out: bool = JSON,
):
    """Start a sweep; a spec the portal refuses lists each problem with its field path and exits 5."""
    spec = _read(experiment, "experiment")
    trial = _read(script, "script") if script else None
    with _client() as client:
        try:
            sweep = client.sweep_submit(cluster=cluster, spec=spec, script=trial, team=team)
        except RefusedError as exc:
            raise _refused(exc, str(experiment)) from None
        if wait:
            sweep = client.sweep_wait(
                sweep["id"], on_change=lambda s: err.print(f"axle: sweep {_short(s['id'])} {s['status']}")
            )
    if json_out:
        _print_json(sweep)
    else:
        out.print(
            f"Sweep {sweep['id']} ({sweep['name']}, {sweep['algorithm']}, up to {sweep['max_trial_count']} trials) "
            f"on {sweep['cluster']}: {sweep['status']}.\nSee it with: axle sweep status {_short(sweep['id'])}",
            markup=False,
        )
    if wait and sweep["status"] != "succeeded":
        raise _unsuccessful("sweep", sweep, sweep["status"], sweep.get("message"))


@sweep_app.command("status")
def sweep_status(sweep_id: str = SWEEP_ID, json_out: bool = JSON):
    """A sweep and its trials."""
    with _client() as client:
        ident = client.resolve("sweep", sweep_id)
        sweep, trials = client.sweep(ident), client.sweep_trials(ident)
    if json_out:
        return _print_json({**sweep, "trials": trials})
    _fields(
        [
            ("sweep", f"{sweep['id']}  {sweep['name']}"),
            ("status", _state(sweep["status"])),
            ("cluster", sweep["cluster"]),
            ("algorithm", sweep["algorithm"]),
            ("trials", f"{len(trials)} of up to {sweep['max_trial_count']}"),
            ("best", _number(sweep.get("best_value"))),
            ("message", sweep.get("message")),
        ]
    )
    table = _table("#", "STATE", "PARAMETERS", "OBJECTIVE", "SLURM TASK")
    for t in trials:
        table.add_row(
            str(t["number"]),
            _state(t["state"]),
            Text(", ".join(f"{k}={_number(v)}" for k, v in (t.get("params") or {}).items())),
            _number(t.get("objective")),
            t.get("slurm_task") or "-",
        )
    out.print(table)


@sweep_app.command("list")
def sweep_list(
    status: str = typer.Option("", "--status", "-s", help="running, succeeded, failed or stopped."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=1000),
    json_out: bool = JSON,
):
    """Your sweeps, newest first."""
    with _client() as client:
        items = client.sweeps(status=status, limit=limit)
    if json_out:
        return _print_json(items)
    table = _table("ID", "NAME", "STATUS", "CLUSTER", "ALGORITHM", "TRIALS", "BEST", "CREATED")
    for s in items:
        table.add_row(
            _short(s["id"]),
            Text(s["name"]),
            _state(s["status"]),
            Text(s["cluster"]),
            s["algorithm"],
            str(s["max_trial_count"]),
            _number(s.get("best_value")),
            _when(s.get("created_at")),
        )
    out.print(table)


@sweep_app.command("stop")
def sweep_stop(sweep_id: str = SWEEP_ID, json_out: bool = JSON):
    """Stop a sweep: cancel its trials that have not ended."""
    _act("sweep", sweep_id, Client.sweep_stop, json_out, lambda s: f"sweep {_short(s['id'])}: {s['status']}")


# -- pipelines -------------------------------------------------------------------------------
@pipeline_app.command("run")
def pipeline_run(
    name: str = typer.Argument(..., help="The pipeline's name."),
    commit: str = typer.Option("", "--commit", help="Run the pipeline file at this commit (default: its branch)."),
    param: list[str] = typer.Option([], "--param", "-p", help="NAME=VALUE over the file's parameters; repeat it."),
    wait: bool = typer.Option(False, "--wait", "-w", help="Wait until the run ends; exit 1 unless it succeeded."),
    json_out: bool = JSON,
):
    """Start a run of a pipeline; a pipeline file the portal refuses lists its problems and exits 5."""
    with _client() as client:
        pipeline = client.pipeline_by_name(name)
        try:
            run = client.pipeline_run(pipeline["id"], commit=commit, parameters=_parameters(param))
        except RefusedError as exc:
            raise _refused(exc, pipeline.get("path") or name) from None
        if not json_out:
            err.print(f"axle: pipeline {name}: run {run['id']} {run_state(run)}", markup=False)
        if wait:
            run = client.pipeline_run_wait(run["id"], on_change=_on_run_change)
    if json_out:
        _print_json(run)
    elif wait:
        _run_table(run)
    else:
        out.print(f"See it with: axle pipeline status {_short(run['id'])}", markup=False)
    if wait and run_state(run) not in PIPELINE_SUCCESS:
        detail = run.get("message") or (f"step {run['failed_step']} failed" if run.get("failed_step") else "")
        raise _unsuccessful("pipeline run", run, run_state(run), detail)


def _on_run_change(run: dict) -> None:
    steps = ", ".join(f"{s['name']} {run_state(s)}" for s in run.get("steps") or [])
    err.print(
        f"axle: pipeline run {_short(run['id'])} {run_state(run)}" + (f" ({steps})" if steps else ""), markup=False
    )


def _run_table(run: dict) -> None:
    _fields(
        [
            ("run", f"{run['id']}  {run.get('pipeline_name', '')} #{run.get('number', '')}"),
            ("state", _state(run_state(run))),
            ("commit", run.get("commit")),
            ("created", _when(run.get("created_at"))),
            ("finished", _when(run.get("finished_at"))),
            ("message", run.get("message")),
        ]
    )
    steps = run.get("steps") or []
    if steps:
        table = _table("STEP", "STATE", "JOB", "SLURM ID", "MESSAGE")
        for s in steps:
            table.add_row(
                Text(str(s.get("name") or "-")),
                _state(run_state(s)),
                _short(s.get("job")) or "-",
                str(s.get("slurm_job_id") or "-"),
                Text(("cached. " if s.get("cached") else "") + (s.get("message") or "")),
            )
        out.print(table)


@pipeline_app.command("runs")
def pipeline_runs(
    name: str | None = typer.Argument(None, help="Only this pipeline's runs."),
    status: str = typer.Option("", "--status", "-s", help="running, succeeded, failed or cancelled."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=1000),
    json_out: bool = JSON,
):
    """Pipeline runs, newest first."""
    with _client() as client:
        pipeline_id = client.pipeline_by_name(name)["id"] if name else ""
        items = client.pipeline_runs(pipeline=pipeline_id, status=status, limit=limit)
    if json_out:
        return _print_json(items)
    table = _table("ID", "PIPELINE", "#", "STATE", "COMMIT", "CREATED", "FINISHED")
    for r in items:
        table.add_row(
            _short(r["id"]),
            Text(str(r.get("pipeline_name") or r.get("pipeline") or "-")),
            str(r.get("number") or "-"),
            _state(run_state(r)),
            (r.get("commit") or "-")[:12],
            _when(r.get("created_at")),
            _when(r.get("finished_at")),
        )
    out.print(table)


@pipeline_app.command("list")
def pipeline_list(json_out: bool = JSON):
    """Pipelines you may see."""
    with _client() as client:
        items = client.pipelines()
    if json_out:
        return _print_json(items)
    table = _table("NAME", "TEAM", "CLUSTER", "REPOSITORY", "BRANCH", "FILE")
    for p in items:
        table.add_row(
            Text(p["name"]),
            Text(p.get("team", "")),
            Text(p.get("cluster", "")),
            Text(p.get("repo_url", "")),
            Text(p.get("branch", "")),
            Text(p.get("path", "")),
        )
    out.print(table)


@pipeline_app.command("status")
def pipeline_status(run_id: str = RUN_ID, json_out: bool = JSON):
    """A pipeline run and its steps."""
    with _client() as client:
        run = client.pipeline_run_get(client.resolve("pipeline run", run_id))
    if json_out:
        return _print_json(run)
    _run_table(run)


@pipeline_app.command("cancel")
def pipeline_cancel(run_id: str = RUN_ID, json_out: bool = JSON):
    """Cancel a pipeline run: every step's job on Slurm that has not ended."""
    _act("pipeline run", run_id, Client.pipeline_run_cancel, json_out, _run_line)


@pipeline_app.command("retry")
def pipeline_retry(run_id: str = RUN_ID, json_out: bool = JSON):
    """Run a failed pipeline run's failed steps (and what needs them) again."""
    _act("pipeline run", run_id, Client.pipeline_run_retry, json_out, _run_line)


def _run_line(run: dict) -> str:
    return f"pipeline run {_short(run['id'])}: {run_state(run)}"


# -- models and deployments ------------------------------------------------------------------
@app.command()
def models(name: str | None = typer.Argument(None, help="A model's name: list its versions."), json_out: bool = JSON):
    """Registered models, or one model's versions."""
    with _client() as client:
        data = client.model(name) if name else client.models()
    if json_out:
        return _print_json(data)
    if name:
        table = _table("VERSION", "JOB", "METRICS", "SHA256", "BY", "CREATED")
        for v in data.get("versions", []):
            table.add_row(
                str(v["number"]),
                _short(v["job"]),
                Text(_metrics(v.get("metrics"), most=4)),
                v.get("sha256", "")[:12],
                Text(v.get("created_by", "")),
                _when(v.get("created_at")),
            )
    else:
        table = _table("NAME", "TEAM", "VERSIONS", "LATEST", "CREATED")
        for m in data:
            table.add_row(
                Text(m["name"]),
                Text(m.get("team", "")),
                str(m.get("version_count") if m.get("version_count") is not None else "-"),
                str(m.get("latest_version") or "-"),
                _when(m.get("created_at")),
            )
    out.print(table)


def _deployment_rows(d: dict) -> list[tuple[str, object]]:
    approvals = "; ".join(
        f"{a['approver']} {a['decision']}" + (f" ({a['comment']})" if a.get("comment") else "")
        for a in d.get("approvals", [])
    )
    return [
        ("deployment", d["id"]),
        ("model", f"{d['model']} v{d['version']}"),
        ("environment", d["environment"]),
        ("status", _state(d["status"])),
        ("requested by", d.get("requested_by")),
        ("reason", d.get("reason")),
        (
            "approvals",
            f"{len(d.get('approvals', []))} of {d.get('required_approvals')}: {approvals}"
            if approvals
            else f"0 of {d.get('required_approvals')}",
        ),
        ("url", d.get("url")),
        ("live since", _when(d.get("live_at"))),
        ("last error", d.get("last_error")),
    ]


@deploy_app.command("request")
def deploy_request(
    model: str = typer.Argument(..., help="The registered model's name."),
    version: int = typer.Argument(..., help="The model version's number.", min=1),
    environment: str = typer.Option(..., "--env", "-e", help="Environment: staging, production… (see the portal)."),
    reason: str = typer.Option(..., "--reason", "-r", help="Why, for the approver."),
    canary: int | None = typer.Option(None, "--canary", min=1, max=99, help="Percent of traffic (KServe only)."),
    json_out: bool = JSON,
):
    """Ask for a model version to be deployed; someone else approves it (`axle deploy approve`)."""
    with _client() as client:
        d = client.deployment_request(
            model=model, version=version, environment=environment, reason=reason, canary_percent=canary
        )
    if json_out:
        return _print_json(d)
    out.print(
        f"Deployment {d['id']} of {d['model']} v{d['version']} to {d['environment']}: {d['status']}"
        f" (needs {d.get('required_approvals')} approval(s) from someone else).",
        markup=False,
    )


@deploy_app.command("approve")
def deploy_approve(
    deployment_id: str = DEPLOYMENT_ID,
    comment: str = typer.Option("", "--comment", "-m", help="What you checked."),
    json_out: bool = JSON,
):
    """Approve a deployment someone else asked for."""
    _act(
        "deployment",
        deployment_id,
        partial(Client.deployment_approve, comment=comment),
        json_out,
        lambda d: (
            f"Approved: deployment {_short(d['id'])} of {d['model']} v{d['version']} to {d['environment']}: "
            f"{d['status']}."
        ),
    )


@deploy_app.command("reject")
def deploy_reject(
    deployment_id: str = DEPLOYMENT_ID,
    comment: str = typer.Option("", "--comment", "-m", help="Why."),
    json_out: bool = JSON,
):
    """Reject a deployment someone else asked for."""
    _act(
        "deployment",
        deployment_id,
        partial(Client.deployment_reject, comment=comment),
        json_out,
        lambda d: f"Rejected: deployment {_short(d['id'])} is {d['status']}.",
    )


@deploy_app.command("status")
def deploy_status(
    deployment_id: str = DEPLOYMENT_ID,
    wait: bool = typer.Option(
        False, "--wait", "-w", help="Wait until it is live, failed or rejected; exit 1 unless live."
    ),
    json_out: bool = JSON,
):
    """A deployment's state and approvals."""
    with _client() as client:
        ident = client.resolve("deployment", deployment_id)
        d = (
            client.deployment_wait(
                ident, on_change=lambda x: err.print(f"axle: deployment {_short(x['id'])} {x['status']}", markup=False)
            )
            if wait
            else client.deployment(ident)
        )
    if json_out:
        _print_json(d)
    else:
        _fields(_deployment_rows(d))
    if wait and d["status"] != "live":
        raise _unsuccessful("deployment", d, d["status"], d.get("last_error"), verb="is")


@deploy_app.command("list")
def deploy_list(
    status: str = typer.Option("", "--status", "-s", help="requested, live, failed…"),
    environment: str = typer.Option("", "--env", "-e", help="Only this environment."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=1000),
    json_out: bool = JSON,
):
    """Deployments you may see, newest first."""
    with _client() as client:
        items = client.deployments(status=status, environment=environment, limit=limit)
    if json_out:
        return _print_json(items)
    table = _table("ID", "MODEL", "ENV", "STATUS", "APPROVALS", "REQUESTED BY", "CREATED")
    for d in items:
        table.add_row(
            _short(d["id"]),
            Text(f"{d['model']} v{d['version']}"),
            Text(d["environment"]),
            _state(d["status"]),
            f"{len(d.get('approvals', []))}/{d.get('required_approvals')}",
            Text(d.get("requested_by", "")),
            _when(d.get("created_at")),
        )
    out.print(table)


def _version(value: bool):
    if value:
        out.print(f"axle {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
):
    pass


# -- entry point -----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    """Run the command line; every error becomes one readable message and an exit code."""
    try:
        result = app(args=argv, prog_name="axle", standalone_mode=False)
    except KeyboardInterrupt:
        err.print("\naxle: interrupted (what was submitted goes on; `axle jobs` shows it)")
        sys.exit(EXIT_INTERRUPTED)
    except AxleError as exc:
        err.print(Text(f"axle: {exc.message}", style="red" if exc.exit_code != EXIT_REFUSED else "yellow"))
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        # `axle jobs | head`: the reader left; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except Exception as exc:
        # Click's (or Typer's own copy of Click's) usage errors and aborts, by what they do.
        if type(exc).__name__ == "Abort":
            err.print("\naxle: interrupted")
            sys.exit(EXIT_INTERRUPTED)
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        # A bug: one line, and the traceback only when asked for.
        if os.environ.get("AXLE_DEBUG"):
            raise
        err.print(Text(f"axle: unexpected error ({type(exc).__name__}: {exc}); AXLE_DEBUG=1 shows where."))
        sys.exit(EXIT_UNSUCCESSFUL)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
