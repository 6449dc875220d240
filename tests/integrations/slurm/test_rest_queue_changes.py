"""slurmrestd's queue asked only for what changed (`update_time`): an unchanged controller
answers 304 and the last answer stands; a change always shows on the next call."""

from __future__ import annotations

import pytest

from apps.integrations.slurm.base import SubmitRequest
from apps.integrations.slurm.rest import RestClient

pytestmark = [pytest.mark.slurm]


def test_the_queue_asks_for_changes_only_and_never_hides_one(rest: RestClient, ssh, scratch: str, marker: str):
    sent = []
    real = rest._session.request

    def request(method, url, **kwargs):
        response = real(method, url, **kwargs)
        if url.endswith("/slurm/v0.0.38/jobs"):
            sent.append(((kwargs.get("params") or {}).get("update_time"), response.status_code))
        return response

    rest._session.request = request
    rest._queue_cache = None
    try:
        first = rest.queue("scientist")
        second = rest.queue("scientist")
        assert sent[0][0] is None and sent[1][0] is not None  # the second call asks for changes only
        if sent[1][1] == 304:  # nothing changed on the (shared) controller meanwhile
            assert [j.job_id for j in second] == [j.job_id for j in first]
        job_id = rest.submit(
            SubmitRequest(
                script="#!/bin/bash\ntrue\n",
                job_name="queue-changes",
                comment=marker,
                workdir=scratch,
                extra_args=["--hold", "--partition=debug", "--time=1", f"--output={scratch}/%j.out"],
            )
        )
        try:
            after = rest.queue("scientist")
            assert sent[-1][1] == 200  # a job was added: a full answer, never the cached one
            assert job_id in {j.job_id for j in after}
        finally:
            rest.cancel(job_id)
    finally:
        del rest._session.request
