"""Sweeps in lineage: sweep -ran_as-> job (each job array a sweep launched), so a model a
trial's array produced traces back to the sweep that searched for it."""

from __future__ import annotations

import uuid

from django.urls import reverse

from apps.jobs.models import Job
from apps.sweeps.models import Sweep
from apps.sweeps.selectors import sweep_list

from .builtin import _jobs, job_node
from .graph import Node, register_expander, register_kind


def sweep_node(sweep: Sweep) -> Node:
    return Node(
        id=f"sweep:{sweep.uuid}",
        kind="sweep",
        label=sweep.name,
        url=reverse("sweep-detail", args=[sweep.uuid]),
        attrs={
            "status": sweep.status,
            "algorithm": sweep.algorithm,
            "trials": sweep.max_trial_count,
            "best": sweep.best_value,
            "cluster": sweep.cluster.name,
            "mlflow_run_id": sweep.mlflow_run_id,
        },
    )


def resolve_sweep(*, user, id: uuid.UUID) -> Node | None:
    sweep = sweep_list(user=user).filter(uuid=id).first()
    return sweep_node(sweep) if sweep else None


def sweep_jobs(*, user, ids):
    """sweep -ran_as-> job"""
    sweeps = {s.pk: s for s in sweep_list(user=user).filter(uuid__in=ids)}
    rows = Job.objects.filter(trials__sweep_id__in=list(sweeps)).values_list("trials__sweep_id", "pk").distinct()
    jobs = {j.pk: j for j in _jobs(user).filter(pk__in=[job_id for _, job_id in rows])}
    for sweep_id, job_id in rows:
        if job_id in jobs:
            yield str(sweeps[sweep_id].uuid), job_node(jobs[job_id]), "ran_as"


def job_sweep(*, user, ids):
    """sweep -ran_as-> job"""
    rows = Job.objects.filter(uuid__in=ids, trials__isnull=False).values_list("uuid", "trials__sweep_id").distinct()
    sweeps = {s.pk: s for s in sweep_list(user=user).filter(pk__in=[sweep_id for _, sweep_id in rows])}
    for job_uuid, sweep_id in rows:
        if sweep_id in sweeps:
            yield str(job_uuid), sweep_node(sweeps[sweep_id]), "ran_as"


register_kind("sweep", resolve=resolve_sweep)
register_expander("sweep", "downstream", sweep_jobs)
register_expander("job", "upstream", job_sweep)
