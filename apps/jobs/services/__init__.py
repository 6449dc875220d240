"""Writes for jobs, one module per step of a job's life:

- `create`: check a script against the grant (parsed once) and record the job;
- `submit`: resolve its inputs on the cluster and deliver it to Slurm;
- `reconcile`: find a job whose submission outcome is unknown by its marker;
- `poll`: one batched tracking cycle per cluster account, folded on by `fold`;
- `cancel`, and `finalize`: the tracking data pulled and mirrored once it ended.

Reads (logs, metrics, artifacts) are in `apps.jobs.selectors`. The rule everywhere: record
the intent and commit, talk to the cluster with no transaction open, then record the result
with a compare-and-swap transition."""

from .cancel import job_cancel, jobs_cancel
from .create import job_create, job_create_many, job_reproduce, job_rerun, job_validate
from .finalize import job_finalize, job_sync_tracking
from .poll import PollStats, jobs_poll
from .reconcile import job_reconcile, jobs_find_stuck, jobs_reconcile_unknown
from .submit import job_submit, jobs_submit_batch, jobs_submit_due

__all__ = [
    "PollStats",
    "job_cancel",
    "job_create",
    "job_create_many",
    "job_finalize",
    "job_reconcile",
    "job_reproduce",
    "job_rerun",
    "job_submit",
    "job_sync_tracking",
    "job_validate",
    "jobs_cancel",
    "jobs_find_stuck",
    "jobs_poll",
    "jobs_reconcile_unknown",
    "jobs_submit_batch",
    "jobs_submit_due",
]
