"""Background work for the registry: fetch by id, call one service; safe to run twice."""

from . import services


def model_version_register_from_job(job_id: int):
    services.model_version_register_from_job(job_id=job_id)
