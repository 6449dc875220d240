import datetime
import difflib
import io
import os
import shutil

from django.contrib import messages
from django.http import FileResponse, Http404, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_GET, require_POST

from apps.clusters.selectors import grant_usable_list
from apps.core.errors import ApplicationError, NotFound
from apps.core.live import is_live_poll, live_answer, live_version
from apps.core.models import parse_uuid
from apps.core.pagination import IdsFirstPaginator
from apps.datasets.models import DatasetVersion

from . import selectors, services, tracking
from .api import job_inputs
from .models import Job

SCRIPT_TEMPLATE = """#!/bin/bash
#SBATCH --job-name=train
#SBATCH --partition=debug
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=512M
#SBATCH --time=00:10:00

# Parameters arrive as environment variables, e.g. $LEARNING_RATE.
echo "Training on $(hostname) with learning rate ${LEARNING_RATE:-0.01}"
sleep 5
echo done
"""


def _parse_parameters(text: str) -> tuple[dict, list[str]]:
    params, errors = {}, []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            errors.append(f"Parameter line {number} needs the form NAME=value.")
            continue
        name, value = line.split("=", 1)
        params[name.strip()] = value.strip()
    return params, errors


def _job(request, job_id) -> Job:
    try:
        return selectors.job_get(user=request.user, job_id=job_id)
    except NotFound:
        raise Http404("No such job.") from None


def _date(value: str):
    try:
        return datetime.date.fromisoformat(value) if value else None
    except ValueError:
        return None


# What a row of the runs table shows (templates/jobs/_job_rows.html) and its live version reads:
# no script, parameters or inputs, and no join to the jobs it was rerun or reproduced from.
ROW_COLUMNS = (
    "id",
    "uuid",
    "name",
    "status",
    "cluster__name",
    "slurm_job_id",
    "reason",
    "exit_code",
    "created_at",
    "started_at",
    "finished_at",
    "accounting",
    "metrics",
    "failure_message",
    "last_error",
)


def job_list(request):
    """The runs table: filters, sort, a chosen metric column, bulk actions; rows stay live."""
    get = request.GET
    filters = {k: get.get(k, "") for k in ("status", "cluster", "q", "since", "until", "sort", "metric")}
    jobs = selectors.job_list(user=request.user, status=filters["status"], cluster=filters["cluster"], q=filters["q"])
    jobs = jobs.select_related(None).select_related("cluster").prefetch_related(None).only(*ROW_COLUMNS)
    jobs = selectors.job_runs_order(
        jobs,
        sort=filters["sort"],
        metric=filters["metric"],
        since=_date(filters["since"]),
        until=_date(filters["until"]),
    )
    page = IdsFirstPaginator(jobs, 25).get_page(get.get("page"))
    rows = list(page)
    version = live_version(
        [
            (str(j.uuid), j.status, j.slurm_job_id, j.reason, j.exit_code, j.metrics, j.last_error)
            + ((j.elapsed_seconds or 0) // 60,)
            for j in rows
        ],
        page.number,
        page.paginator.count,
    )
    query = {k: v for k, v in filters.items() if v}

    def context(**extra):
        # Built only to render: a poll that finds nothing changed (204) needs the rows alone,
        # not the metric names (200 rows' JSON) or the grants.
        return {
            "page": page,
            "rows": rows,
            **filters,
            "filtered": any(filters[k] for k in ("status", "cluster", "q", "since", "until")),
            "statuses": Job.Status.choices,
            "grants": grant_usable_list(user=request.user),
            "metric_names": selectors.job_metric_names(user=request.user),
            "live_version": version,
            "live_url": f"{request.path}?{urlencode({**query, 'page': page.number})}",
            "sort_links": _sort_links(query, filters["sort"]),
            "query_no_page": urlencode(query),
            **extra,
        }

    if is_live_poll(request):
        return live_answer(
            request,
            version=version,
            final=False,
            render=lambda: render(request, "jobs/_rows_live.html", context(oob=True)),
        )
    return render(request, "jobs/list.html", context())


def _sort_links(query: dict, current: str) -> dict:
    """For each sortable column: the URL that sorts by it (flipping the order when it is the
    current one) and its aria-sort state."""
    links = {}
    for column in selectors.RUN_SORTS:
        if current == column:
            target, state = f"-{column}", "ascending"
        elif current == f"-{column}":
            target, state = column, "descending"
        else:
            target, state = (column if column == "name" else f"-{column}"), ""
        links[column] = {"url": "?" + urlencode({**query, "sort": target}), "state": state}
    return links


@require_POST
def job_bulk(request):
    """The runs table's bulk actions on the selected rows: compare them, or cancel them."""
    ids = [i for i in request.POST.getlist("id") if parse_uuid(i)][:50]
    if not ids:
        messages.error(request, "Select one or more jobs first.")
        return redirect("job-list")
    if request.POST.get("action") == "compare":
        return redirect(f"{reverse('job-compare')}?ids={','.join(ids)}")
    jobs = list(selectors.job_list(user=request.user).filter(uuid__in=ids).select_related("grant__cluster"))
    problems = services.jobs_cancel(user=request.user, jobs=jobs)
    done = len(jobs) - len(problems)
    if done:
        messages.success(request, f"Cancellation sent for {done} job{'s' if done != 1 else ''}.")
    names = {str(j.uuid): f"{j.name} ({j.slurm_job_id or 'hub queue'})" for j in jobs}
    for uuid, problem in problems.items():
        messages.error(request, f"{names[uuid]}: {problem}")
    return redirect(request.POST.get("next") if _safe_next(request) else "job-list")


def _safe_next(request) -> bool:
    target = request.POST.get("next", "")
    return url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}) and target.startswith("/jobs/")


def job_new(request):
    grants = list(grant_usable_list(user=request.user))
    rerun_of = None
    initial = {
        "script": SCRIPT_TEMPLATE,
        "name": "",
        "parameters": "LEARNING_RATE=0.01",
        "cluster": "",
        "datasets": [],
        "code_repo": "",
        "code_ref": "",
        "image": "",
        "verify": "",
        "register": "",
    }
    if request.GET.get("from"):
        rerun_of = _job(request, request.GET["from"])
        params = "\n".join(f"{k}={v}" for k, v in rerun_of.parameters.items())
        initial = {
            "script": rerun_of.script,
            "name": rerun_of.name,
            "parameters": params,
            "cluster": rerun_of.cluster.name,
            "datasets": [str(v.uuid) for v in rerun_of.dataset_versions.all()],
            "code_repo": rerun_of.code_repo,
            "code_ref": rerun_of.code_ref,
            "image": rerun_of.image_path,
            "verify": "on" if rerun_of.verify_datasets else "",
            "register": rerun_of.register_model_as,
        }
    versions = (
        DatasetVersion.objects.filter(dataset__team__memberships__user=request.user, status=DatasetVersion.Status.READY)
        .select_related("dataset", "cluster")
        .defer("manifest")
        .order_by("dataset__name", "-number")
    )
    context = {"grants": grants, "form": initial, "problems": [], "errors": [], "dataset_versions": versions}
    if request.method == "POST":
        # Browsers send a textarea with CRLF line breaks, which sbatch refuses; the user typed LF.
        form = {
            k: request.POST.get(k, "").replace("\r\n", "\n")
            for k in ("script", "name", "parameters", "cluster", "code_repo", "code_ref", "image", "verify", "register")
        }
        form["datasets"] = request.POST.getlist("datasets")
        context["form"] = form
        params, errors = _parse_parameters(form["parameters"])
        grant = next((g for g in grants if g.cluster.name == form["cluster"]), None)
        if grant is None:
            errors.append("Pick a cluster you hold an active grant on.")
        if errors:
            context["errors"] = errors
        elif request.POST.get("action") == "validate":
            result, _ = services.job_validate(
                user=request.user, cluster=grant.cluster, script=form["script"], parameters=params
            )
            context.update(problems=result.problems, effective=result.effective_request, validated=result.ok)
        else:
            try:
                job = services.job_create(
                    user=request.user,
                    cluster=grant.cluster,
                    name=form["name"],
                    script=form["script"],
                    parameters=params,
                    dataset_versions=form["datasets"],
                    code={"repo": form["code_repo"], "ref": form["code_ref"]} if form["code_repo"].strip() else None,
                    image=form["image"],
                    verify_datasets=bool(form["verify"]),
                    register_model_as=form["register"],
                )
            except ApplicationError as exc:
                context["problems"] = exc.extra.get("problems") or [{"line": None, "message": exc.message}]
                context["effective"] = exc.extra.get("effective_request")
            else:
                messages.success(request, f"Job “{job.name}” queued for {job.cluster.name}.")
                return redirect("job-detail", job_id=job.uuid)
    return render(request, "jobs/new.html", context)


# How often an open job page polls. What it shows changes at most once per tracking cycle
# (apps.jobs.tasks.jobs_track runs one every 5 s: status, Slurm's reason and accounting, the
# timeline), so a poll every 5 s sees each cycle's change, at most 5 s after the cycle made it
# (2.5 s on average, 1 s later than a 3 s poll did, for 60 % of the requests). The curves the
# job logs to MLflow itself come with the same poll (selectors.job_curves_version).
JOB_POLL_EVERY = "5s"


def _job_state(job: Job, last_seq: int | None) -> str:
    """The version of everything the job page's live regions show (apps.core.live): the
    job's live fields (selectors.JOB_LIVE_FIELDS) and its timeline's last event (append-only:
    a new event has a higher seq, see selectors.job_live_head)."""
    return live_version(
        job.status,
        job.slurm_job_id,
        job.slurm_state,
        job.reason,
        job.estimated_start,
        job.exit_code,
        job.accounting,
        job.failure_message,
        job.last_error,
        job.mlflow_run_id,
        job.metrics,
        job.finalized_at,
        job.started_at,
        last_seq,
    )


def _job_final(job: Job) -> bool:
    # Final once nothing more can change: ended, and its tracking data mirrored (or none).
    return job.is_terminal and (bool(job.finalized_at) or not (job.mlflow_run_id or tracking.run_pending(job)))


def job_detail(request, job_id):
    if is_live_poll(request):
        # Every open job page polls (every 5 s) and almost every answer is "unchanged": decide
        # that from the few columns the version covers, one aggregate of the timeline and (while
        # the run can gain points) the latest metric points, and load the whole job only to
        # render a change. When only the curves changed, the regions are not rendered again.
        try:
            head = selectors.job_live_head(user=request.user, job_id=job_id)
        except NotFound:
            raise Http404("No such job.") from None
        curves = selectors.job_curves_version(job=head)  # first: it may find the job's run
        state = _job_state(head, head.last_event_seq)
        version = _job_version(state, curves)
        only_curves = request.GET.get("live", "").partition(".")[0] == state

        def render_change():
            if only_curves:
                context = {"job": head, "curves": curves, "live_version": version, "live_final": _job_final(head)}
                return render(request, "jobs/_curves_live.html", {**context, "live_every": JOB_POLL_EVERY, "oob": True})
            return _job_page(request, job_id, template="jobs/_live.html", oob=True, curves=curves)

        return live_answer(request, version=version, final=_job_final(head), render=render_change)
    return _job_page(request, job_id, template="jobs/detail.html")


def _job_version(state: str, curves: str) -> str:
    """The job page's live version: its regions' state, then what its charts show (the
    poll renders only the part that changed)."""
    return f"{state}.{curves}"


def _job_page(request, job_id, *, template: str, oob: bool = False, curves: str | None = None):
    job = _job(request, job_id)
    if curves is None:
        curves = selectors.job_curves_version(job=job)  # first: it may find the job's run
    timeline = list(selectors.job_timeline(job=job))
    context = {
        "job": job,
        "timeline": timeline,
        "tasks": job.tasks.all()[:500],
        "task_count": job.tasks.count(),
        "curves": curves,
        "live_version": _job_version(_job_state(job, timeline[-1].seq if timeline else None), curves),
        "live_final": _job_final(job),
        "live_every": JOB_POLL_EVERY,
        "mlflow_run_url": selectors.job_mlflow_run_url(job=job),
        "oob": oob,
    }
    if not oob:
        context.update(
            inputs=job_inputs(job),
            reproductions=job.reproductions.order_by("created_at"),
            streams=("stdout", "stderr"),
        )
    return render(request, template, context)


@require_GET
def job_logs(request, job_id):
    """The log tail: the next chunk of each stream asked for (``stdout=<offset>``,
    ``stderr=<offset>``), read through one connection in one request; htmx puts each chunk at
    the end of its stream (out of band) and replaces this request's span with the next one."""
    try:
        job = selectors.job_for_log(user=request.user, job_id=job_id)
    except NotFound:
        raise Http404("No such job.") from None
    offsets = {stream: _whole(request.GET[stream]) for stream in LOG_STREAMS if stream in request.GET}
    task = request.GET.get("task") or None
    idle = min(_whole(request.GET.get("idle", "0")), LOG_IDLE_SLOW)
    try:
        results = selectors.job_logs_read(job=job, offsets=offsets, task=task)
    except ApplicationError as exc:
        results = dict.fromkeys(offsets, exc)
    streams, follow = [], {}
    for stream, offset in offsets.items():
        chunk, error, retry = results[stream], "", False
        if isinstance(chunk, ApplicationError):
            # A running job's tail goes on after a failure that may pass: its note is replaced by
            # the next read, and the lines come back once the cluster answers again.
            error, retry = chunk.message, bool(chunk.extra.get("retry")) and not job.is_terminal
            chunk = selectors.LogChunk("", offset)
        if retry or not error and not (job.is_terminal and not chunk.text):
            follow[stream] = (chunk, offset)
        streams.append({"stream": stream, "chunk": chunk, "error": error, "retry": retry})
    text = any(s["chunk"].text for s in streams)
    next_url = ""
    if follow:
        query = {stream: chunk.next_offset for stream, (chunk, _) in follow.items()}
        query.update(task=task or "", idle=0 if text else min(idle + 1, LOG_IDLE_SLOW))
        next_url = f"{reverse('job-logs', args=[job.uuid])}?{urlencode(query)}"
    retry = any(s["retry"] for s in streams)
    return render(
        request,
        "jobs/_log_chunk.html",
        {
            "job": job,
            "streams": streams,
            "next_url": next_url,
            "next_read": f"load delay:{LOG_WAIT_RETRY}s" if retry else _log_next_read(job, follow.values(), idle),
        },
    )


def _whole(value: str) -> int:
    try:
        return max(int(value), 0)
    except ValueError:
        return 0


LOG_STREAMS = ("stdout", "stderr")
#: The log tail of a running job: the next read LOG_WAIT seconds after one that reached the end
#: of the files (with new text or without), at once only after a whole chunk (more is waiting),
#: and LOG_WAIT_IDLE seconds once LOG_IDLE_SLOW reads in a row found nothing. Each read is an
#: SFTP request per stream on the cluster's login node, both streams in one request to the
#: portal (each stream asked on its own before: ~100 requests/s of 155 for 200 open job pages).
#: 5 s, the job page's own poll (JOB_POLL_EVERY): a line shows at most 5 s after it is written
#: (3 s before), and 200 open pages ask ~43 log requests/s instead of ~60, which took the
#: portal's p95 under 300 ms on 2 cores (bench/README.md, "Log tail over SFTP").
LOG_WAIT = 5
LOG_WAIT_IDLE = 6
LOG_IDLE_SLOW = 5
LOG_WAIT_RETRY = 10


def _log_next_read(job, chunks, idle: int) -> str:
    """The htmx trigger of the next read: "load" (at once) or "load delay:Ns"; `chunks` are
    the (chunk, offset asked) of the streams followed."""
    chunks = list(chunks)
    if job.is_terminal and any(chunk.text for chunk, _ in chunks):
        return "load"  # the rest of a finished log, at once
    if any(chunk.text and chunk.next_offset - offset >= selectors.LOG_CHUNK - 4 for chunk, offset in chunks):
        return "load"  # a whole chunk (less a cut multi-byte character): more is waiting
    if any(chunk.text for chunk, _ in chunks) or idle + 1 < LOG_IDLE_SLOW:
        return f"load delay:{LOG_WAIT}s"
    return f"load delay:{LOG_WAIT_IDLE}s"


@require_GET
def job_log_download(request, job_id, stream):
    job = _job(request, job_id)
    task = request.GET.get("task") or None

    def chunks():
        offset = 0
        while True:
            chunk = selectors.job_log_read(job=job, stream=stream, offset=offset, task=task)
            if not chunk.text and chunk.next_offset == offset:
                return
            yield chunk.text.encode("utf-8")
            offset = chunk.next_offset

    try:
        selectors.job_log_read(job=job, stream=stream, offset=0, task=task, limit=1)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("job-detail", job_id=job.uuid)
    response = StreamingHttpResponse(chunks(), content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{job.slurm_job_id or job.uuid}-{stream}.log"'
    return response


@require_POST
def job_cancel(request, job_id):
    job = _job(request, job_id)
    try:
        services.job_cancel(user=request.user, job=job)
        messages.success(request, "Cancellation sent to Slurm.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("job-detail", job_id=job.uuid)


@require_POST
def job_rerun(request, job_id):
    job = _job(request, job_id)
    try:
        new = services.job_rerun(user=request.user, job=job)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("job-detail", job_id=job.uuid)
    messages.success(request, f"Running “{new.name}” again as a new job.")
    return redirect("job-detail", job_id=new.uuid)


@require_POST
def job_reproduce(request, job_id):
    job = _job(request, job_id)
    try:
        new = services.job_reproduce(user=request.user, job=job)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("job-detail", job_id=job.uuid)
    messages.success(request, "Reproducing with identical recorded inputs.")
    return redirect("job-detail", job_id=new.uuid)


@require_GET
def job_artifacts(request, job_id):
    """The run's artifacts (htmx fragment), listed from the hub's MLflow."""
    job = _job(request, job_id)
    try:
        entries = selectors.job_artifacts(job=job, path=request.GET.get("path", ""))
        error = ""
    except ApplicationError as exc:
        entries, error = [], exc.message
    return render(request, "jobs/_artifacts.html", {"job": job, "entries": entries, "error": error})


class _RemovedWhenClosed(io.FileIO):
    """The downloaded artifact's temporary folder goes once the response has been sent."""

    def close(self):
        super().close()
        shutil.rmtree(os.path.dirname(self.name), ignore_errors=True)


@require_GET
def job_artifact_download(request, job_id):
    job = _job(request, job_id)
    try:
        path, name = selectors.job_artifact_file(job=job, path=request.GET.get("path", ""))
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("job-detail", job_id=job.uuid)
    return FileResponse(_RemovedWhenClosed(path), as_attachment=True, filename=name)


def _script_diff(base: Job, other: Job) -> str:
    if base.script == other.script:
        return ""
    return "".join(
        difflib.unified_diff(
            base.script.splitlines(keepends=True),
            other.script.splitlines(keepends=True),
            fromfile=f"{base.name} ({base.slurm_job_id or 'no Slurm id'})",
            tofile=f"{other.name} ({other.slurm_job_id or 'no Slurm id'})",
        )
    )


def job_compare(request):
    """Runs side by side, as MLflow compares them: curves overlaid, inputs diffed (parameters,
    script, code commit, image, datasets), final metrics with their differences to the first."""
    ids = [i.strip() for i in request.GET.getlist("id") + request.GET.get("ids", "").split(",") if i.strip()]
    jobs, missing = [], []
    for ident in dict.fromkeys(ids[:10]):
        try:
            jobs.append(selectors.job_get(user=request.user, job_id=ident))
        except NotFound:
            missing.append(ident)
    rows, diffs = [], []
    if jobs:
        inputs = [job_inputs(j) for j in jobs]
        fields = [
            ("Slurm id", lambda j, i: j.slurm_job_id),
            ("Cluster", lambda j, i: i["cluster"]),
            ("Partition", lambda j, i: i["partition"]),
            ("Script sha256", lambda j, i: j.script_sha256[:16]),
            ("Code repository", lambda j, i: i["code"]["repo"] if i["code"] else ""),
            ("Code commit", lambda j, i: ((i["code"]["commit"] or i["code"]["ref"])[:12]) if i["code"] else ""),
            ("Image", lambda j, i: f"{i['image']['path']} {i['image']['digest'][:19]}" if i["image"] else ""),
            ("Datasets", lambda j, i: ", ".join(f"{d['dataset']} v{d['number']}" for d in i["dataset_versions"])),
            ("Status", lambda j, i: j.get_status_display()),
        ]
        for label, get in fields:
            values = [str(get(j, i) or "") for j, i in zip(jobs, inputs, strict=True)]
            rows.append((label, values, len(set(values)) > 1))
        for name in sorted({k for j in jobs for k in j.parameters}):
            values = [str(j.parameters.get(name, "—")) for j in jobs]
            rows.append((f"param {name}", values, len(set(values)) > 1))
        diffs = [(j, d) for j in jobs[1:] if (d := _script_diff(jobs[0], j))]
    metric_rows = []
    for name in sorted({k for j in jobs for k in (j.metrics or {})}):
        values = [j.metrics.get(name) for j in jobs]
        base = values[0]
        cells = []
        for value in values:
            delta = None
            if isinstance(base, int | float) and isinstance(value, int | float):
                delta = value - base
            cells.append({"value": value, "delta": delta})
        metric_rows.append((name, cells, len({repr(v) for v in values}) > 1))
    curves = [
        {"label": f"{j.name} · {j.slurm_job_id or 'no Slurm id'}", "url": reverse("api-job-metrics", args=[j.uuid])}
        for j in jobs
    ]
    return render(
        request,
        "jobs/compare.html",
        {
            "jobs": jobs,
            "rows": rows,
            "diffs": diffs,
            "metric_rows": metric_rows,
            "missing": missing,
            "curves": curves,
            "selected": {str(j.uuid) for j in jobs},
            "recent": selectors.job_list(user=request.user)[:30],
        },
    )
