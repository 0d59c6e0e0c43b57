"""14.9: with RabbitMQ down, the API answers 503 with Retry-After within seconds, whatever
the way it is down, and publishes again once it is back, without a restart.

Before the fix a closed port held each request for the 30 s connect budget, and a broker
that accepts but never answers got a 500 after pika's 15 s stack timeout (its
`AMQPConnectorStackTimeout` escaped the translation to Hookline's errors).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

from common.settings import Settings
from hookline.runtime import Runtime, build_runtime
from tests.api.support import Api
from tests.faultproxy import FaultProxy
from tests.services import require_rabbitmq, temporary_vhost

T = TypeVar("T")

FAST_S = 3.0  # the API's wait for the broker is 1.5 s; the rest is slack for a busy machine
BACK_WITHIN_S = 20.0
EVENT = {"type": "order.created", "data": {"n": 1}}


def broker_url(port: int, vhost: str = "%2F") -> str:
    return f"amqp://guest:guest@127.0.0.1:{port}/{vhost}"


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port whose listener never accepts: the kernel completes the TCP handshake for the
    backlog, then nothing ever answers the AMQP protocol header."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


@pytest.fixture
def api_on(make_api: Callable[..., Api], database_url: str) -> Iterator[Callable[[str], Api]]:
    """The API on `url`, with the transport `hookline api` builds (`caller_waits`)."""
    runtimes: list[Runtime] = []

    def create(url: str) -> Api:
        settings = Settings(database_url=database_url, broker_url=url)
        runtime = build_runtime(settings, caller_waits=True)
        runtimes.append(runtime)
        return make_api(transport=runtime.transport, declare=False, broker_url=url)

    yield create
    for runtime in runtimes:
        runtime.close()


def timed(call: Callable[[], T]) -> tuple[T, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def assert_unavailable_fast(api: Api) -> None:
    _, headers = api.tenant()
    for _ in range(2):  # the request that finds the broker down, then one during the outage
        response, elapsed_s = timed(
            lambda: api.client.post("/v1/events", json=EVENT, headers=headers)
        )
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "1"
        assert response.json()["error"]["code"] == "broker_unavailable"
        assert elapsed_s < FAST_S
    # The full route (an Idempotency-Key takes the request past the fast path) answers alike.
    keyed = {**headers, "Idempotency-Key": "evt_broker_down_1"}
    response, elapsed_s = timed(lambda: api.client.post("/v1/events", json=EVENT, headers=keyed))
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    assert elapsed_s < FAST_S
    response, elapsed_s = timed(lambda: api.client.get("/readyz"))
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    assert "broker unreachable" in response.json()["error"]["message"]
    assert elapsed_s < FAST_S


def test_api_answers_503_with_retry_after_at_once_when_the_broker_port_is_closed(
    api_on: Callable[[str], Api], closed_port: int
) -> None:
    assert_unavailable_fast(api_on(broker_url(closed_port)))


def test_api_answers_503_not_500_within_seconds_when_the_broker_never_answers(
    api_on: Callable[[str], Api], black_hole: int
) -> None:
    assert_unavailable_fast(api_on(broker_url(black_hole)))


def test_api_readiness_answers_503_with_retry_after_within_seconds_when_the_broker_is_down(
    api_on: Callable[[str], Api], black_hole: int
) -> None:
    response, elapsed_s = timed(lambda: api_on(broker_url(black_hole)).client.get("/readyz"))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert elapsed_s < FAST_S


@pytest.mark.rabbitmq
@pytest.mark.parametrize("outage", ["blackhole", "refuse"])
def test_api_publishes_again_once_the_broker_is_back_without_a_restart(
    api_on: Callable[[str], Api], outage: str
) -> None:
    require_rabbitmq()
    with temporary_vhost() as real_url, FaultProxy("127.0.0.1", 5672) as proxy:
        getattr(proxy, outage)()
        parts = urlsplit(real_url)
        url = urlunsplit(parts._replace(netloc=f"guest:guest@127.0.0.1:{proxy.port}"))
        api = api_on(url)
        _, headers = api.tenant()
        response, elapsed_s = timed(
            lambda: api.client.post("/v1/events", json=EVENT, headers=headers)
        )
        assert response.status_code == 503
        assert elapsed_s < FAST_S

        proxy.heal()
        deadline = time.monotonic() + BACK_WITHIN_S
        while True:
            response = api.client.post("/v1/events", json=EVENT, headers=headers)
            if response.status_code == 202:
                break
            assert response.status_code == 503, response.text
            assert time.monotonic() < deadline, "the API never published again"
            time.sleep(0.2)
        assert api.client.get("/readyz").status_code == 200
        assert len(api.published()) == 1
