"""A repeated event id through the real pipeline: `hookline router` and `hookline dispatcher`
processes over RabbitMQ (own vhost) and PostgreSQL, delivering to a real receiver.

A repeat (a producer retry, a second publish of the same id) is received once, whether
the first copy's delivery is in flight at a slow receiver or still queued. And the crash
window the router's recovery exists for — rows committed, delivery messages never
confirmed — still ends with the delivery received.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from common.db.models import Attempt, Delivery
from common.db.session import make_engine
from common.db.statuses import DeliveryStatus
from common.errors import TransportError
from common.settings import Settings
from common.transport import open_transport
from common.wire import webhook_id_for
from hookline.receiver import Receiver, Reply
from producer import Producer
from tests.integration.faultrig import Rig, dispatcher_args, engine_env, logs_dir, wait_until
from tests.processes import Services
from tests.queues import DELIVERY_QUEUES, delivery_depth
from tests.services import temporary_database, temporary_vhost

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

HELD_S = 4.0  # how long the receiver holds the first copy's request


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with temporary_vhost() as broker_url, temporary_database() as database_url:
        env = engine_env(broker_url, database_url, HOOKLINE_REQUEST_TIMEOUT_S="15")
        services = Services(env, logs_dir(tmp_path))
        with Receiver() as receiver:
            rig = Rig(broker_url, database_url, receiver, services)
            rig.subscribe(["/hooks"])
            try:
                yield rig
                assert all(code is None for code in services.alive().values()), rig.output()
                codes = services.stop()
                assert set(codes.values()) == {0}, (codes, rig.output())
            finally:
                services.kill()


def send(rig: Rig, *numbers: int, before: Callable[[], object] = lambda: None) -> None:
    """Publish one event per number, confirmed; the number names the event's id. `before`
    runs once the producer declared the topology, just before the publish."""
    with Producer(Settings(broker_url=rig.broker_url)) as producer:
        producer.declare_topology()
        before()
        producer.publish_batch(
            [{"id": f"evt_repeat_{n}", "tenant": rig.tenant, "type": "content.updated",
              "data": {"n": n}} for n in numbers]
        )  # fmt: skip


@contextlib.contextmanager
def deliveries_queue(rig: Rig) -> Iterator[Callable[[], int]]:
    """A function that reads how many delivery messages wait (-1 while there is no queue)."""
    with open_transport(rig.broker_url) as transport:

        def depth() -> int:
            try:
                return delivery_depth(transport)
            except TransportError:
                return -1

        yield depth


def received(rig: Rig) -> list[str]:
    """The event id of every request the receiver got, in arrival order (read from its
    webhook-id; one `send` did not make stays as it came)."""
    made = (f"evt_repeat_{n}" for n in range(10))
    known = {webhook_id_for(rig.tenant, event_id): event_id for event_id in made}
    sent = [r.headers["webhook-id"] for r in rig.receiver.received]
    return [known.get(webhook_id, webhook_id) for webhook_id in sent]


def settled_once(rig: Rig, event_id: str) -> None:
    engine = make_engine(rig.database_url)
    try:
        with engine.connect() as connection:
            (row,) = connection.execute(
                select(Delivery.id, Delivery.status).where(Delivery.event_id == event_id)
            ).all()
            attempts = connection.execute(
                select(Attempt.id).where(Attempt.delivery_id == row.id)
            ).all()
    finally:
        engine.dispose()
    assert row.status == DeliveryStatus.SUCCEEDED and len(attempts) == 1, (row, attempts)


def test_repeat_while_the_first_copy_is_held_by_the_receiver_is_received_once(rig: Rig) -> None:
    rig.receiver.respond = lambda r: Reply(200, delay_s=HELD_S) if b'"n":1' in r.body else Reply()
    rig.services.start("router", "router")
    rig.services.start("dispatcher", *dispatcher_args())
    time.sleep(1.0)  # the index refreshes every 0.5 s
    send(rig, 1)
    assert rig.receiver.wait_for(1, 30), rig.output()
    # The first copy is in flight: its row is `pending` until the receiver answers.
    send(rig, 1)
    send(rig, 2)  # routed after the repeat, so its arrival says the repeat was routed
    assert wait_until(lambda: "evt_repeat_2" in received(rig), 30), rig.output()
    time.sleep(HELD_S + 2.0)  # a second copy of the held one would arrive by now
    assert received(rig) == ["evt_repeat_1", "evt_repeat_2"], rig.output()
    settled_once(rig, "evt_repeat_1")


def test_repeat_while_the_first_copy_is_still_queued_is_received_once(rig: Rig) -> None:
    rig.services.start("router", "router")  # no dispatcher yet: deliveries stay queued
    time.sleep(1.0)
    with deliveries_queue(rig) as queued:
        send(rig, 1)
        assert wait_until(lambda: queued() == 1, 30), rig.output()
        send(rig, 1)
        send(rig, 2)
        assert wait_until(lambda: queued() == 2, 30), rig.output()
        time.sleep(1.0)
        assert queued() == 2, "the repeat was published"
    rig.services.start("dispatcher", *dispatcher_args())
    assert rig.receiver.wait_for(2, 60), rig.output()
    time.sleep(2.0)
    assert sorted(received(rig)) == ["evt_repeat_1", "evt_repeat_2"], rig.output()
    settled_once(rig, "evt_repeat_1")


def test_router_whose_publish_failed_after_its_commit_delivers_on_the_redelivery(
    rig: Rig,
) -> None:
    """The deliveries queue is gone when the router publishes: the rows are committed, the
    publish comes back unroutable, the router reconnects (declaring the queue again) and
    the event message returns marked redelivered."""
    rig.services.start("router", "router")
    with deliveries_queue(rig) as queued:
        assert wait_until(lambda: queued() == 0, 60), "the router declared no queues"
        vhost = rig.broker_url.rsplit("/", 1)[1]
        # Every queue a delivery message could land in, so that its publish is unroutable.
        deletes = [["rabbitmqctl", "--quiet", "-p", vhost, "delete_queue", queue]
                   for queue in DELIVERY_QUEUES]  # fmt: skip

        def delete_queues() -> None:
            for delete in deletes:
                subprocess.run(delete, check=True, timeout=60)

        send(rig, 1, before=delete_queues)
        assert wait_until(lambda: queued() == 1, 60), rig.output()
    assert "PublishError" in rig.services.log("router"), "the publish did not fail"
    rig.services.start("dispatcher", *dispatcher_args())
    assert rig.receiver.wait_for(1, 60), rig.output()
    time.sleep(2.0)
    assert received(rig) == ["evt_repeat_1"], rig.output()
    settled_once(rig, "evt_repeat_1")
