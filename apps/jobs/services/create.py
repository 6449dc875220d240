"""Creating a job: check the script and its inputs against the grant (one parse of the
script), record the job with every input, and queue its submission."""

import hashlib
import uuid as uuid_lib
from collections.abc import Sequence
from urllib.parse import urlsplit

from django.db import IntegrityError, transaction

from apps.accounts.teams import team_default
from apps.audit.services import audit_record, audit_record_many
from apps.clusters.models import Cluster, ClusterGrant
from apps.clusters.selectors import grant_for_submission
from apps.core.errors import Conflict, PermissionDenied, ValidationFailed
from apps.core.tasks import enqueue
from apps.datasets.selectors import dataset_versions_for_job

from .. import validation
from ..models import Job


def job_validate(
    *, user, cluster: Cluster, script: str, parameters=None
) -> tuple[validation.Validation, ClusterGrant | None]:
    grant = grant_for_submission(user=user, cluster=cluster)
    workdir = f"{grant.job_root}/<job id>" if grant else "/<job id>"
    result = validation.validate(script=script, grant=grant, workdir=workdir, parameters=parameters)
    if grant is None:
        result.add(f"You have no active grant on cluster {cluster.name}; request access on the cluster's page.")
    return result, grant


def job_create(
    *,
    user,
    cluster: Cluster,
    name: str,
    script: str,
    parameters=None,
    rerun_of: Job | None = None,
    reproduced_from: Job | None = None,
    dataset_versions=(),
    code: dict | None = None,
    image: str = "",
    image_digest: str = "",
    code_commit: str = "",
    verify_datasets: bool = False,
    register_model_as: str = "",
    team=None,
    idempotency_key: str = "",
    extra_args: Sequence[str] = (),
    own_run: bool = True,
    grant: ClusterGrant | None = None,
    job_uuid: uuid_lib.UUID | None = None,
    validated: validation.Validation | None = None,
    taken: bool = False,
    audit: list[dict] | None = None,
) -> Job:
    """Check the script and its inputs against the user's grant, record the job with every
    input, and queue its submission. Nothing recorded here can change afterwards.

    ``extra_args`` are the hub's own further sbatch options (a pipeline step's
    ``--dependency``), added after the script was checked against the grant.

    ``own_run=False`` (a sweep's wave) records a job with no MLflow run of its own on a
    cluster whose nodes reach MLflow (`Job.TRACKING_TRIALS`): its submission asks nothing of
    MLflow before sbatch. A file-store cluster's job keeps its run (its file store is it).

    With an ``idempotency_key`` (the API's Idempotency-Key header), a request sent again (the
    client retrying after a lost answer or a portal killed mid-request) gets the job the first
    one created instead of a second job.

    For a caller that submits the job itself in the same request (a sweep's first wave, made
    in its POST): ``grant`` is the caller's `grant_for_submission` of this request, and
    ``validated`` the `validation.validate` of exactly this script, grant, name and the
    workdir of ``job_uuid`` (not validated again); ``taken`` records the job already
    `submitting` (its first attempt), with its team as the caller gives it (already the
    user's default if it named none), with no submission task: the caller holds its lease
    and delivers it (`submit.job_submit_taken`) once its transaction commits, and a caller
    that dies leaves it to the stuck-submission check like a dead worker (found by its
    marker, never sent twice); ``audit`` is a list the job's events are appended to instead
    of being recorded here, for the caller to record with its own in one append."""
    if idempotency_key and (earlier := _job_with_key(user, idempotency_key, script)):
        return earlier
    grant = grant or grant_for_submission(user=user, cluster=cluster)
    if grant is None:
        raise PermissionDenied(f"You have no active grant on cluster {cluster.name}.")
    code = code or {}
    if code and not str(code.get("repo", "")).strip():
        raise ValidationFailed("code needs a repo (a git URL or path the cluster can read) and optionally a ref.")
    if code and (urlsplit(str(code["repo"]).strip()).username or urlsplit(str(code["repo"]).strip()).password):
        # The repo URL is recorded, audited, tagged on the run and shown: it must hold no secret.
        raise ValidationFailed(
            "The code repository URL contains a user name or token; give a URL without credentials "
            "(the cluster account's own git credentials or SSH key are used to fetch it)."
        )
    versions = dataset_versions_for_job(user, list(dataset_versions), cluster) if dataset_versions else []
    if not taken:
        # A taken job's caller chose its team already (None: the user is in no team).
        team = team or team_default(user)
    name = (name or "").strip()[:200] or "job"
    if validated is not None and (job_uuid is None or parameters):
        raise ValueError("validated needs the job_uuid its workdir was validated with, and no parameters")
    job_uuid = job_uuid or uuid_lib.uuid4()
    workdir = f"{grant.job_root}/{job_uuid}"
    result = validated or validation.validate(
        script=script, grant=grant, workdir=workdir, parameters=parameters, name=name
    )
    try:
        # Taken, the job is part of its caller's transaction, which does not go on without it:
        # no savepoint of its own.
        with transaction.atomic(savepoint=not taken):
            if grant.max_active_jobs is not None:
                # Two creations at once would both count the same jobs: the grant's row lock
                # makes the second wait until the first job is committed, and count it.
                ClusterGrant.objects.select_for_update().only("pk").get(pk=grant.pk)
                active = Job.objects.filter(grant=grant).exclude(status__in=Job.TERMINAL).count()
                if active >= grant.max_active_jobs:
                    result.add(
                        f"You already have {active} active jobs on {cluster.name}, your grant's limit; "
                        "wait for one to finish or cancel one."
                    )
            if not result.ok:
                raise ValidationFailed(
                    "The job does not fit your grant: "
                    + "; ".join((f"line {p['line']}: " if p["line"] else "") + p["message"] for p in result.problems),
                    extra={"problems": result.problems, "effective_request": result.effective_request},
                )
            columns = _job_columns(user, grant, cluster, job_uuid, workdir, name, script, result, team, own_run)
            if taken:
                columns.update(status=Job.Status.SUBMITTING, attempts=1)
            job = Job.objects.create(
                **columns,
                hub_args=[*result.hub_args, *extra_args],
                rerun_of=rerun_of,
                reproduced_from=reproduced_from,
                code_repo=str(code.get("repo", "")).strip(),
                code_ref=str(code.get("ref", "") or "").strip(),
                code_commit=code_commit,
                image_path=(image or "").strip(),
                image_digest=image_digest,
                verify_datasets=verify_datasets,
                register_model_as=(register_model_as or "").strip(),
                idempotency_key=idempotency_key,
            )
            if versions:  # a new job has none to clear: no query for the (usual) job without datasets
                job.dataset_versions.set(versions)
            events = [
                {
                    "action": "job.created",
                    "subject": job,
                    "actor": user,
                    "after": {
                        "status": job.status,
                        "cluster": cluster.name,
                        "cluster_username": grant.cluster_username,
                        "script_sha256": job.script_sha256,
                        "rerun_of": str(rerun_of.uuid) if rerun_of else None,
                        "reproduced_from": str(reproduced_from.uuid) if reproduced_from else None,
                        "dataset_versions": [str(v.uuid) for v in versions],
                        "code": code or None,
                        "image": job.image_path or None,
                    },
                }
            ]
            if taken:
                # Its first attempt, as `jobs_submit_batch`'s take records one: taken by the
                # request that made it rather than by a worker from the queue.
                events.append(
                    {
                        "action": "job.submitting",
                        "subject": job,
                        "actor": user,
                        "before": {"status": None},
                        "after": {"status": Job.Status.SUBMITTING, "taken_by": "request"},
                    }
                )
            else:
                enqueue("apps.jobs.tasks.job_submit", job.pk)
            if audit is not None:
                audit.extend(events)
            elif len(events) == 1:
                audit_record(**events[0])
            else:
                audit_record_many(events)
    except IntegrityError:
        # Two requests with one key at once: the second finds the first's job.
        if idempotency_key and (earlier := _job_with_key(user, idempotency_key, script)):
            return earlier
        raise
    return job


def job_unsaved(
    *, user, grant: ClusterGrant, cluster: Cluster, name: str, script: str, validated, job_uuid, team, own_run=True
) -> Job:
    """The job `job_create` records for these arguments (a job of no inputs, no parameters
    and no further sbatch options), not saved: what its submission sends is known before its
    row exists (a sweep's POST sends its wave's ahead of its transaction,
    `transport.stage_one`; the submission after the commit checks that it sends the same)."""
    name = (name or "").strip()[:200] or "job"
    workdir = f"{grant.job_root}/{job_uuid}"
    columns = _job_columns(user, grant, cluster, job_uuid, workdir, name, script, validated, team, own_run)
    return Job(**columns, hub_args=list(validated.hub_args))


def _job_columns(
    user,
    grant: ClusterGrant,
    cluster: Cluster,
    job_uuid,
    workdir: str,
    name: str,
    script: str,
    result,
    team,
    own_run: bool = True,
) -> dict:
    """The columns every new job gets from its grant and its validated script (`job_create`
    and `job_create_many` add their own). Without `own_run` (a sweep's wave) a job whose
    nodes reach MLflow has no run of its own (`Job.TRACKING_TRIALS`)."""
    tracking_mode = cluster.tracking_mode
    if not own_run and tracking_mode != Cluster.TrackingMode.FILE:
        tracking_mode = Job.TRACKING_TRIALS
    return {
        "uuid": job_uuid,
        "owner": user,
        "grant": grant,
        "cluster": cluster,
        "name": name,
        "script": script,
        "script_sha256": hashlib.sha256(script.encode("utf-8")).hexdigest(),
        "parameters": result.parameters,
        "effective_request": result.effective_request,
        "script_directives": result.script_directives,
        "cluster_username": grant.cluster_username,
        "marker": f"axle-{job_uuid.hex}",
        "workdir": workdir,
        "stdout_path": result.stdout_path,
        "stderr_path": result.stderr_path,
        "team": team,
        "tracking_mode": tracking_mode,
    }


MAX_BATCH = 1000


def job_create_many(*, user, cluster: Cluster, jobs: Sequence[dict]) -> list[Job]:
    """Many plain jobs (each a dict with `script`, optional `name` and `parameters`) for one
    cluster in one go, all or none: each is checked against the grant as `job_create` checks
    one; if any does not fit, nothing is recorded and ValidationFailed says, per job (by its
    index), what is wrong. Otherwise one transaction records them all: one multi-row INSERT,
    their `job.created` events appended to the audit chain at once, and one submission task
    per batch of AXLE_SUBMIT_BATCH jobs (the task of a grant takes a batch of its queued jobs,
    `jobs_submit_batch`; the re-drive takes any job whose task was lost).

    Jobs with inputs (code, image, datasets), a team other than the user's default, or an
    Idempotency-Key are made one by one with `job_create`."""
    from django.conf import settings

    if not jobs:
        raise ValidationFailed("Give at least one job.")
    if len(jobs) > MAX_BATCH:
        raise ValidationFailed(f"At most {MAX_BATCH} jobs in one request.")
    grant = grant_for_submission(user=user, cluster=cluster)
    if grant is None:
        raise PermissionDenied(f"You have no active grant on cluster {cluster.name}.")
    team = team_default(user)
    built, refused = [], []
    for index, item in enumerate(jobs):
        name = (item.get("name") or "").strip()[:200] or "job"
        job_uuid = uuid_lib.uuid4()
        workdir = f"{grant.job_root}/{job_uuid}"
        result = validation.validate(
            script=item["script"], grant=grant, workdir=workdir, parameters=item.get("parameters"), name=name
        )
        if not result.ok:
            refused.append({"index": index, "problems": result.problems})
            continue
        built.append(
            Job(
                **_job_columns(user, grant, cluster, job_uuid, workdir, name, item["script"], result, team),
                hub_args=list(result.hub_args),
            )
        )
    if refused:
        raise ValidationFailed(
            f"{len(refused)} of the {len(jobs)} jobs do not fit your grant; none was created: "
            + "; ".join(
                f"job {r['index']}: "
                + ", ".join((f"line {p['line']}: " if p["line"] else "") + p["message"] for p in r["problems"])
                for r in refused[:5]
            ),
            extra={"jobs": refused},
        )
    with transaction.atomic():
        if grant.max_active_jobs is not None:
            ClusterGrant.objects.select_for_update().only("pk").get(pk=grant.pk)
            active = Job.objects.filter(grant=grant).exclude(status__in=Job.TERMINAL).count()
            if active + len(built) > grant.max_active_jobs:
                raise ValidationFailed(
                    f"You have {active} active jobs on {cluster.name} and your grant allows "
                    f"{grant.max_active_jobs}: {len(built)} more do not fit; none was created."
                )
        created = Job.objects.bulk_create(built)
        audit_record_many(
            [
                {
                    "action": "job.created",
                    "subject": job,
                    "actor": user,
                    "after": {
                        "status": job.status,
                        "cluster": cluster.name,
                        "cluster_username": grant.cluster_username,
                        "script_sha256": job.script_sha256,
                        "rerun_of": None,
                        "reproduced_from": None,
                        "dataset_versions": [],
                        "code": None,
                        "image": None,
                    },
                }
                for job in created
            ]
        )
        size = max(1, getattr(settings, "AXLE_SUBMIT_BATCH", 100))
        for start in range(0, len(created), size):
            enqueue("apps.jobs.tasks.job_submit", created[start].pk)
    return created


def _job_with_key(user, key: str, script: str) -> Job | None:
    earlier = Job.objects.filter(owner=user, idempotency_key=key).first()
    if earlier and earlier.script != script:
        raise Conflict("This Idempotency-Key was used for another job; use a new key for a new job.")
    return earlier


def job_rerun(*, user, job: Job) -> Job:
    """A new job with the same script, parameters and cluster (and inputs as first asked)."""
    if job.owner_id != user.pk:
        raise PermissionDenied("Only the job's owner can run it again.")
    return job_create(
        user=user,
        cluster=job.cluster,
        name=job.name,
        script=job.script,
        parameters=job.parameters,
        rerun_of=job,
        dataset_versions=[v.uuid for v in job.dataset_versions.all()],
        code={"repo": job.code_repo, "ref": job.code_ref} if job.code_repo else None,
        image=job.image_path,
        verify_datasets=job.verify_datasets,
        register_model_as=job.register_model_as,
        team=job.team,
    )


def job_reproduce(*, user, job: Job) -> Job:
    """A new job with identical recorded inputs: the same script, parameters, dataset
    versions, code commit (not the branch) and image digest, linked to the original."""
    if job.owner_id != user.pk:
        raise PermissionDenied("Only the job's owner can reproduce it.")
    if job.code_repo and not job.code_commit:
        raise Conflict("The original job's code commit was never resolved, so it cannot be reproduced exactly.")
    return job_create(
        user=user,
        cluster=job.cluster,
        name=f"{job.name} (reproduction)"[:200],
        script=job.script,
        parameters=job.parameters,
        reproduced_from=job,
        dataset_versions=[v.uuid for v in job.dataset_versions.all()],
        code={"repo": job.code_repo, "ref": job.code_commit} if job.code_repo else None,
        code_commit=job.code_commit,
        image=job.image_path,
        image_digest=job.image_digest,
        verify_datasets=True,
        team=job.team,
    )
