"""Fixtures for the transport contract: every test runs against both transports."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from common.transport import MemoryTransport, Transport
from tests.services import require_rabbitmq, temporary_vhost

from . import TOPOLOGY


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    require_rabbitmq()
    with temporary_vhost() as url:
        yield url


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def transport(request: pytest.FixtureRequest) -> Iterator[Transport]:
    """A transport with `TOPOLOGY` declared and every queue empty."""
    if request.param == "memory":
        made: Transport = MemoryTransport()
    else:
        from common.transport.rabbitmq import RabbitTransport

        made = RabbitTransport(request.getfixturevalue("rabbitmq_url"), connect_budget_s=5.0)
    made.declare(TOPOLOGY)
    for queue in TOPOLOGY.queues:
        made.purge(queue.name)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(autouse=True)
def no_publisher_thread_outlives_its_test() -> Iterator[None]:
    """Every transport a test opens is closed, and closing stops its publisher thread."""
    yield
    deadline = time.monotonic() + 5
    while any(t.name == "hookline-publisher" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "a publisher thread is still running"
        time.sleep(0.02)
