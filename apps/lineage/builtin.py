"""The core kinds: dataset versions, jobs (with their code, image and script) and model
versions. Each expander answers for a whole batch of nodes with one or two queries, and only
with rows the user may see."""

from __future__ import annotations

import posixpath
import uuid

from django.urls import reverse

from apps.datasets.models import DatasetVersion
from apps.jobs.models import Job
from apps.registry.models import ModelVersion
from apps.registry.selectors import visible_jobs

from .graph import Node, register_expander, register_kind

# ---------------------------------------------------------------- nodes


def dataset_version_node(v: DatasetVersion) -> Node:
    return Node(
        id=f"dataset_version:{v.uuid}",
        kind="dataset_version",
        label=f"{v.dataset.name} v{v.number}",
        url=reverse("dataset-version-detail", args=[v.dataset.uuid, v.number]),
        attrs={
            "dataset": v.dataset.name,
            "number": v.number,
            "status": v.status,
            "checksum": v.checksum,
            "location": v.uri or v.path,
        },
    )


def job_node(job: Job) -> Node:
    return Node(
        id=f"job:{job.uuid}",
        kind="job",
        label=job.name,
        url=reverse("job-detail", args=[job.uuid]),
        attrs={
            "status": job.status,
            "cluster": job.cluster.name,
            "owner": job.owner.get_username(),
            "slurm_job_id": job.slurm_job_id,
            "script_sha256": job.script_sha256,
            "mlflow_run_id": job.mlflow_run_id,
            "created_at": job.created_at.isoformat(),
        },
    )


def model_version_node(v: ModelVersion) -> Node:
    return Node(
        id=f"model_version:{v.uuid}",
        kind="model_version",
        label=f"{v.model.name} v{v.number}",
        url=reverse("model-detail", args=[v.model.name]) + f"#v{v.number}",
        attrs={
            "model": v.model.name,
            "number": v.number,
            "sha256": v.sha256,
            "source_uri": v.source_uri,
            "metrics": v.metrics,
        },
    )


def code_node(job: Job) -> Node:
    pinned = job.code_commit or job.code_ref
    name = posixpath.basename(job.code_repo.rstrip("/")).removesuffix(".git") or job.code_repo
    url = job.code_repo if job.code_repo.startswith(("https://", "http://")) else ""
    return Node(
        id=f"code:{job.code_repo}@{pinned}",
        kind="code",
        label=f"{name}@{pinned[:10]}",
        url=url,
        attrs={"repo": job.code_repo, "ref": job.code_ref, "commit": job.code_commit},
    )


def image_node(job: Job) -> Node:
    pinned = job.image_digest or "unverified"
    return Node(
        id=f"image:{job.image_path}@{pinned}",
        kind="image",
        label=f"{posixpath.basename(job.image_path)}@{pinned.removeprefix('sha256:')[:10]}",
        attrs={"path": job.image_path, "digest": job.image_digest},
    )


def script_node(job: Job) -> Node:
    return Node(
        id=f"script:{job.script_sha256}",
        kind="script",
        label=f"script {job.script_sha256[:10]}",
        url=reverse("job-detail", args=[job.uuid]),
        attrs={"sha256": job.script_sha256},
    )


def _jobs(user):
    return visible_jobs(user=user).select_related("cluster", "owner")


def _dataset_versions(user):
    return (
        DatasetVersion.objects.filter(dataset__team__memberships__user=user).select_related("dataset").defer("manifest")
    )


def _model_versions(user):
    return ModelVersion.objects.filter(model__team__memberships__user=user).select_related("model")


# ---------------------------------------------------------------- focus


def _one(qs, id: uuid.UUID):
    return qs.filter(uuid=id).first()


def resolve_dataset_version(*, user, id: uuid.UUID) -> Node | None:
    v = _one(_dataset_versions(user), id)
    return dataset_version_node(v) if v else None


def resolve_job(*, user, id: uuid.UUID) -> Node | None:
    job = _one(_jobs(user), id)
    return job_node(job) if job else None


def resolve_model_version(*, user, id: uuid.UUID) -> Node | None:
    v = _one(_model_versions(user), id)
    return model_version_node(v) if v else None


# ---------------------------------------------------------------- expanders


def dataset_version_jobs(*, user, ids):
    """dataset_version -input_of-> job"""
    through = Job.dataset_versions.through
    jobs = {j.pk: j for j in _jobs(user).filter(dataset_versions__uuid__in=ids).distinct()}
    rows = through.objects.filter(datasetversion__uuid__in=ids, job_id__in=list(jobs)).values_list(
        "datasetversion__uuid", "job_id"
    )
    for dv_uuid, job_id in rows:
        yield str(dv_uuid), job_node(jobs[job_id]), "input_of"


def job_inputs(*, user, ids):
    """dataset_version -input_of-> job, code -code_of-> job, image -image_of-> job,
    script -script_of-> job, original -reproduced_as-> job, original -rerun_as-> job"""
    jobs = list(_jobs(user).filter(uuid__in=ids).select_related("reproduced_from", "rerun_of"))
    through = Job.dataset_versions.through
    versions = {v.pk: v for v in _dataset_versions(user).filter(jobs__uuid__in=ids).distinct()}
    for job_uuid, dv_id in through.objects.filter(job__uuid__in=ids, datasetversion_id__in=list(versions)).values_list(
        "job__uuid", "datasetversion_id"
    ):
        yield str(job_uuid), dataset_version_node(versions[dv_id]), "input_of"
    parent_ids = [j.reproduced_from_id for j in jobs if j.reproduced_from_id] + [
        j.rerun_of_id for j in jobs if j.rerun_of_id
    ]
    parents = {j.pk: j for j in _jobs(user).filter(pk__in=parent_ids)} if parent_ids else {}
    for job in jobs:
        key = str(job.uuid)
        if job.script_sha256:
            yield key, script_node(job), "script_of"
        if job.code_repo:
            yield key, code_node(job), "code_of"
        if job.image_path:
            yield key, image_node(job), "image_of"
        if job.reproduced_from_id in parents:
            yield key, job_node(parents[job.reproduced_from_id]), "reproduced_as"
        if job.rerun_of_id in parents:
            yield key, job_node(parents[job.rerun_of_id]), "rerun_as"


def job_outputs(*, user, ids):
    """job -produced-> model_version, job -reproduced_as-> reproduction, job -rerun_as-> rerun"""
    for v in _model_versions(user).filter(job__uuid__in=ids).select_related("job"):
        yield str(v.job.uuid), model_version_node(v), "produced"
    for job in _jobs(user).filter(reproduced_from__uuid__in=ids).select_related("reproduced_from"):
        yield str(job.reproduced_from.uuid), job_node(job), "reproduced_as"
    for job in _jobs(user).filter(rerun_of__uuid__in=ids).select_related("rerun_of"):
        yield str(job.rerun_of.uuid), job_node(job), "rerun_as"


def model_version_job(*, user, ids):
    """job -produced-> model_version"""
    versions = list(ModelVersion.objects.filter(uuid__in=ids).values_list("uuid", "job_id"))
    jobs = {j.pk: j for j in _jobs(user).filter(pk__in=[job_id for _, job_id in versions])}
    for v_uuid, job_id in versions:
        if job_id in jobs:
            yield str(v_uuid), job_node(jobs[job_id]), "produced"


register_kind("dataset_version", resolve=resolve_dataset_version)
register_kind("job", resolve=resolve_job)
register_kind("model_version", resolve=resolve_model_version)
register_expander("dataset_version", "downstream", dataset_version_jobs)
register_expander("job", "upstream", job_inputs)
register_expander("job", "downstream", job_outputs)
register_expander("model_version", "upstream", model_version_job)
