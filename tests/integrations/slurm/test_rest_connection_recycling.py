"""Issue 14: the REST client closes its kept-alive connection to slurmrestd after a big answer
and after RECYCLE_REQUESTS requests, so a slurmrestd serving one connection per process (inetd
mode, compose/local/stack.sh) exits and frees what the answers made it allocate. Observed on
the real slurmrestd by the client's local port: a new port is a new connection."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from apps.integrations.slurm import rest as rest_module
from apps.integrations.slurm.rest import RestClient

pytestmark = [pytest.mark.slurm]


@pytest.fixture
def ports(rest: RestClient) -> Iterator[list[int]]:
    """The local port of each request's connection, recorded as each answer arrives, on a
    fresh connection and counter (the session's client is shared with other tests)."""
    found: list[int] = []

    def record(response, *args, **kwargs):
        found.append(response.raw._connection.sock.getsockname()[1])

    rest._session.close()
    rest._requests_on_connection = 0
    rest._session.hooks["response"].append(record)
    try:
        yield found
    finally:
        rest._session.hooks["response"].remove(record)


def test_the_connection_is_kept_for_small_answers_and_renewed_every_recycle_requests(
    rest: RestClient, ports: list[int], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(rest_module, "RECYCLE_REQUESTS", 3)
    for _ in range(7):
        rest.ping()
    assert len(ports) == 7
    # kept alive for three requests, then a new connection, and so on
    assert ports[0] == ports[1] == ports[2] != ports[3]
    assert ports[3] == ports[4] == ports[5] != ports[6]


def test_a_big_answer_closes_the_connection_after_it_is_read(
    rest: RestClient, ports: list[int], monkeypatch: pytest.MonkeyPatch
):
    rest.ping()
    rest.ping()
    assert ports[0] == ports[1]  # a ping's answer is small: the connection stays
    # every answer of the queue counts as big here (the real threshold is 1 MB, a queue of
    # a few hundred jobs): the connection after it is a new one
    monkeypatch.setattr(rest_module, "RECYCLE_ANSWER_BYTES", 1)
    rest._queue_cache = None
    rest.queue("scientist")
    monkeypatch.setattr(rest_module, "RECYCLE_ANSWER_BYTES", 1_000_000)
    rest.ping()
    assert ports[2] == ports[1]  # the queue call itself went over the kept connection
    assert ports[3] != ports[2]  # and closed it once its answer was read
