"""What only the RabbitMQ transport does: survive connections the server closes, and connect."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

import pika
import pytest

from common.errors import ConnectionLostError, TransportError
from common.transport import Outgoing
from common.transport.rabbitmq import RabbitTransport
from common.transport.topology import DELIVERIES, DELIVERY_ROUTING_KEY
from tests.services import temporary_vhost

from . import TOPOLOGY, take, wait_until


def delivery(n: int) -> Outgoing:
    return Outgoing(DELIVERIES, DELIVERY_ROUTING_KEY, b"{}", {}, f"m{n}")


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "--quiet", *args], check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout


def close_connections(url: str) -> None:
    """Make the server drop every connection in the test vhost, as a broker restart would."""
    rabbitmqctl("close_all_connections", "-p", unquote(urlsplit(url).path[1:]), "hookline test")


def publisher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "hookline-publisher"]


def until_lost(stream: Iterator[object], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    with pytest.raises(ConnectionLostError):
        while time.monotonic() < deadline:
            next(stream)


@pytest.fixture
def rabbit(rabbitmq_url: str) -> Iterator[RabbitTransport]:
    transport = RabbitTransport(rabbitmq_url, connect_budget_s=5.0)
    transport.declare(TOPOLOGY)
    for queue in TOPOLOGY.queues:
        transport.purge(queue.name)
    try:
        yield transport
    finally:
        transport.close()


@pytest.mark.rabbitmq
def test_publisher_reconnects_after_the_server_closes_its_connection(
    rabbit: RabbitTransport, rabbitmq_url: str
) -> None:
    rabbit.publish([delivery(1)])

    close_connections(rabbitmq_url)
    # A publish racing the drop may fail as lost (its messages were in flight); one made after
    # the publisher noticed the drop must reconnect and succeed.
    wait_until(lambda: not publisher_threads())
    rabbit.publish([delivery(2)], timeout_s=10)

    assert rabbit.queue_depth(DELIVERIES) == 2
    assert len(publisher_threads()) == 1


@pytest.mark.rabbitmq
def test_consumer_raises_connection_lost_and_its_messages_are_redelivered(
    rabbit: RabbitTransport, rabbitmq_url: str
) -> None:
    rabbit.publish([delivery(n) for n in range(2)])
    stream = iter(rabbit.consume(DELIVERIES, prefetch=2))
    held = take(stream, 2)

    close_connections(rabbitmq_url)

    until_lost(stream)
    again = take(iter(rabbit.consume(DELIVERIES, prefetch=2)), 2)
    assert {m.message_id for m in again} == {m.message_id for m in held}
    assert all(m.redelivered and m.delivery_count == 1 for m in again)


@pytest.mark.rabbitmq
def test_settling_a_message_from_a_dropped_connection_is_ignored(
    rabbit: RabbitTransport, rabbitmq_url: str
) -> None:
    rabbit.publish([delivery(0)])
    old = rabbit.consume(DELIVERIES, prefetch=1)
    old_stream = iter(old)
    (stale,) = take(old_stream, 1)
    close_connections(rabbitmq_url)
    until_lost(old_stream)
    new = rabbit.consume(DELIVERIES, prefetch=1)
    (fresh,) = take(iter(new), 1)

    old.ack(stale)
    new.ack(stale)  # a tag names its own connection, so it cannot settle `fresh` by mistake
    worker = threading.Thread(target=new.reject, args=(stale,), kwargs={"requeue": False})
    worker.start()
    worker.join(5)

    assert fresh.message_id == stale.message_id
    new.ack(fresh)
    new.close()
    assert rabbit.queue_depth(DELIVERIES) == 0


@pytest.mark.rabbitmq
def test_admin_operations_reconnect_after_the_server_closes_the_connection(
    rabbit: RabbitTransport, rabbitmq_url: str
) -> None:
    rabbit.publish([delivery(0)])
    assert rabbit.queue_depth(DELIVERIES) == 1

    close_connections(rabbitmq_url)

    assert rabbit.queue_depth(DELIVERIES) == 1
    rabbit.declare(TOPOLOGY)


@pytest.mark.rabbitmq
def test_connections_are_named_and_negotiate_a_heartbeat() -> None:
    with temporary_vhost() as url, RabbitTransport(url) as rabbit:
        rabbit.declare(TOPOLOGY)
        rabbit.publish([delivery(0)])
        consumer = rabbit.consume(DELIVERIES, prefetch=1)
        vhost = unquote(urlsplit(url).path[1:])

        # list_connections ignores -p: keep only this vhost's rows.
        rows = rabbitmqctl("list_connections", "vhost", "client_properties", "timeout")
        listed = "\n".join(r for r in rows.splitlines() if r.startswith(vhost + "\t"))

        assert listed.count("hookline publisher") == 1
        assert listed.count(f"hookline consumer {DELIVERIES}") == 1
        assert "\t30" in listed
        consumer.close()


@pytest.mark.rabbitmq
def test_close_stops_the_publisher_thread(rabbit: RabbitTransport) -> None:
    rabbit.publish([delivery(0)])

    rabbit.close()

    wait_until(lambda: "hookline-publisher" not in {t.name for t in threading.enumerate()})
    with pytest.raises(TransportError):
        rabbit.publish([delivery(1)])


@pytest.mark.rabbitmq
def test_wrong_credentials_raise_transport_error_without_retrying(rabbitmq_url: str) -> None:
    url = rabbitmq_url.replace("guest:guest@", "guest:wrong@")
    transport = RabbitTransport(url, connect_budget_s=30.0)
    started = time.monotonic()

    with pytest.raises(TransportError) as raised:
        transport.publish([delivery(0)], timeout_s=30)

    assert not isinstance(raised.value, ConnectionLostError)
    assert time.monotonic() - started < 10  # one attempt, not the whole 30 s budget
    transport.close()


@pytest.mark.parametrize("operation", ["publish", "consume", "queue_depth"])
def test_an_unreachable_broker_raises_connection_lost_after_the_budget(operation: str) -> None:
    transport = RabbitTransport("amqp://guest:guest@127.0.0.1:1/%2F", connect_budget_s=0.5)

    with pytest.raises(ConnectionLostError):
        if operation == "publish":
            transport.publish([delivery(0)], timeout_s=5)
        elif operation == "consume":
            transport.consume(DELIVERIES, prefetch=1)
        else:
            transport.queue_depth(DELIVERIES)
    transport.close()


@pytest.mark.rabbitmq
def test_submit_connects_off_the_callers_thread_and_after_a_drop(
    rabbit: RabbitTransport, rabbitmq_url: str
) -> None:
    first = rabbit.submit([delivery(1)], timeout_s=10)  # no connection yet: a helper connects
    first.result(timeout=15)
    close_connections(rabbitmq_url)
    wait_until(lambda: not publisher_threads())

    rabbit.submit([delivery(2)], timeout_s=10).result(timeout=15)

    assert rabbit.queue_depth(DELIVERIES) == 2
    assert len(publisher_threads()) == 1


def _pika_frames(channel: int, message: Outgoing, correlation_id: str, body_max: int) -> bytes:
    properties = pika.BasicProperties(
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        headers=dict(message.headers) or None,
        message_id=message.message_id,
        correlation_id=correlation_id,
    )
    method = pika.spec.Basic.Publish(
        exchange=message.exchange, routing_key=message.routing_key, mandatory=True
    )
    frames = [
        pika.frame.Method(channel, method).marshal(),
        pika.frame.Header(channel, len(message.body), properties).marshal(),
    ]
    for start in range(0, len(message.body), body_max):
        frames.append(pika.frame.Body(channel, message.body[start : start + body_max]).marshal())
    return b"".join(frames)


@pytest.mark.parametrize(
    "message",
    [
        Outgoing("hookline.events", "order.created", b'{"id": "evt_1"}', {}, "evt_1"),
        Outgoing("hookline.deliveries", "delivery", b"{}", {}, None),
        Outgoing("", "q", b""),
        Outgoing(
            "hookline.dead", "", "é".encode() * 300,
            {"x-reason": "max_attempts", "n": 3, "ok": True, "nested": {"a": [1, "b"]}}, "dlv_é",
        ),
    ],
)  # fmt: skip
def test_publish_frames_are_the_bytes_pika_marshals(message: Outgoing) -> None:
    from common.transport.rabbitmq.frames import Frames

    body_max = 128  # small, so that the long body spans several body frames
    frames = Frames(channel=3, body_max=body_max)

    for tag in ("1", "12345"):
        assert frames.publish(message, tag) == _pika_frames(3, message, tag, body_max)
