import hashlib
import io
import os
import shutil

from django.contrib import messages
from django.http import FileResponse, Http404, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import get_conditional_response
from django.utils.http import quote_etag
from django.views.decorators.http import require_GET, require_POST

from apps.clusters.selectors import grant_usable_list
from apps.core.errors import ApplicationError, NotFound
from apps.core.pagination import IdsFirstPaginator
from apps.datasets.models import DatasetVersion

from . import selectors, services
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


def job_list(request):
    status = request.GET.get("status", "")
    cluster = request.GET.get("cluster", "")
    fragment = bool(request.headers.get("HX-Request"))
    if fragment:
        # The open list asks every few seconds: when none of the user's jobs changed since
        # the last answer, 304 (one index read, nothing rendered).
        changed = selectors.job_list_changed_at(user=request.user)
        etag = hashlib.sha256(f"{request.user.pk}|{changed}|{request.get_full_path()}".encode()).hexdigest()[:32]
        if (unchanged := get_conditional_response(request, etag=quote_etag(etag))) is not None:
            return unchanged
    jobs = selectors.job_list(user=request.user, status=status, cluster=cluster, q=request.GET.get("q", ""))
    page = IdsFirstPaginator(jobs, 25).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "status": status,
        "cluster": cluster,
        "q": request.GET.get("q", ""),
        "statuses": Job.Status.choices,
        "grants": grant_usable_list(user=request.user),
    }
    if fragment:
        response = render(request, "jobs/_job_rows.html", context)
        response["ETag"] = quote_etag(etag)
        response["Cache-Control"] = "private, no-cache"
        return response
    return render(request, "jobs/list.html", context)


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


def job_detail(request, job_id):
    job = _job(request, job_id)
    status_part = request.headers.get("HX-Request") and request.GET.get("part") == "status"
    if status_part and not job.is_array:
        # Polled every few seconds while the page is open: 304 until the job changes. (An
        # array's tasks change without the job row, so an array's part is always rendered.)
        etag = quote_etag(f"{job.uuid}-{job.status}-{job.updated_at.timestamp()}")
        if (unchanged := get_conditional_response(request, etag=etag)) is not None:
            return unchanged
    context = {
        "job": job,
        "timeline": selectors.job_timeline(job=job),
        "tasks": job.tasks.all()[:500],
        "task_count": job.tasks.count(),
        "inputs": job_inputs(job),
        "reproductions": job.reproductions.order_by("created_at"),
    }
    if status_part:
        response = render(request, "jobs/_status.html", context)
        if not job.is_array:
            response["ETag"] = etag
            response["Cache-Control"] = "private, no-cache"
        return response
    return render(request, "jobs/detail.html", context)


@require_GET
def job_log(request, job_id, stream):
    """A chunk of log from ``offset`` on, for the live tail (htmx appends it)."""
    job = _job(request, job_id)
    try:
        offset = max(int(request.GET.get("offset", "0")), 0)
    except ValueError:
        offset = 0
    task = request.GET.get("task") or None
    try:
        chunk = selectors.job_log_read(job=job, stream=stream, offset=offset, task=task)
        error = ""
    except ApplicationError as exc:
        chunk, error = selectors.LogChunk("", offset), exc.message
    return render(
        request,
        "jobs/_log_chunk.html",
        {
            "job": job,
            "stream": stream,
            "chunk": chunk,
            "error": error,
            "task": task or "",
            "done": job.is_terminal and not chunk.text and not chunk.missing,
        },
    )


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


def job_compare(request):
    """Inputs diffed and final metrics side by side for two or more of the user's jobs."""
    ids = [i for i in request.GET.getlist("id") + request.GET.get("ids", "").split(",") if i.strip()]
    jobs, missing = [], []
    for ident in ids[:10]:
        try:
            jobs.append(selectors.job_get(user=request.user, job_id=ident.strip()))
        except NotFound:
            missing.append(ident)
    rows = []
    if jobs:
        inputs = [job_inputs(j) for j in jobs]
        fields = [
            ("Cluster", lambda j, i: i["cluster"]),
            ("Partition", lambda j, i: i["partition"]),
            ("Script sha256", lambda j, i: j.script_sha256[:16]),
            (
                "Code",
                lambda j, i: (
                    f"{i['code']['repo']}@{(i['code']['commit'] or i['code']['ref'])[:12]}" if i["code"] else ""
                ),
            ),
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
    metric_names = sorted({k for j in jobs for k in (j.metrics or {})})
    metric_rows = [(m, [j.metrics.get(m) for j in jobs]) for m in metric_names]
    return render(
        request,
        "jobs/compare.html",
        {
            "jobs": jobs,
            "rows": rows,
            "metric_rows": metric_rows,
            "missing": missing,
            "recent": selectors.job_list(user=request.user)[:30],
        },
    )
