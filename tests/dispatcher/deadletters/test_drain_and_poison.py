"""Poison messages drained (a repeat is one row), re-submitted and purged; the dead-letter
drain beside a replay."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import Delivery, PoisonMessage
from common.db.statuses import DeliveryStatus
from common.transport import MemoryTransport, Message, Outgoing, poison_copy
from common.transport import topology as tp
from common.wire import DeliveryMessage, encode
from dispatcher.deadletters import DeadLetterDrain, poison
from tests import builders

WAIT_S = 10.0


@pytest.fixture
def transport() -> MemoryTransport:
    memory = MemoryTransport()
    memory.declare(tp.build((1.0,)))
    return memory


def run_drain(transport: MemoryTransport, sessions: sessionmaker[Session]) -> DeadLetterDrain:
    drain = DeadLetterDrain(transport, sessions, publish_timeout_s=5.0)
    drain.start()
    return drain


def undecodable(body: bytes, queue: str = tp.EVENTS) -> Outgoing:
    message = Message(queue, body, "order.created", {}, False, None, None)
    return poison_copy(message, "undecodable", "Event: field required")


def test_poison_messages_are_drained_with_their_raw_body_and_error(
    sessions: sessionmaker[Session], transport: MemoryTransport
) -> None:
    transport.publish([undecodable(b'{"tenant": "ten_1", "type": 5}'), undecodable(b"\xff\x00")])

    assert poison.drain(transport, sessions) == 2

    assert transport.queue_depth(tp.POISON) == 0
    with sessions() as session:
        rows = {r.encoding: r for r in session.scalars(select(PoisonMessage))}
    assert rows["utf-8"].body == '{"tenant": "ten_1", "type": 5}'
    assert rows["utf-8"].tenant_id == "ten_1"
    assert rows["utf-8"].error == "Event: field required"
    assert rows["utf-8"].source_queue == tp.EVENTS
    assert poison.raw_body(rows["base64"]) == b"\xff\x00"


def test_a_poison_message_with_nul_characters_is_drained_and_kept_byte_for_byte(
    sessions: sessionmaker[Session], transport: MemoryTransport
) -> None:
    """Anyone who can publish can put a NUL (which PostgreSQL's text and jsonb refuse) in a
    body or a header. The drain must still store it, or that one message
    would stop every poison message behind it from being listed."""
    body = b'{"tenant": "ten\\u0000x", "nul": "a\x00b"}'
    message = Message(tp.EVENTS, body, "order.created", {"x-note": "a\x00b", "k\x00": 1},
                      False, None, None)  # fmt: skip
    transport.publish([poison_copy(message, "undecodable", "bad\x00 error")])

    assert poison.drain(transport, sessions) == 1

    assert transport.queue_depth(tp.POISON) == 0
    with sessions() as session:
        row = session.scalars(select(PoisonMessage)).one()
    assert poison.raw_body(row) == body and row.encoding == "base64"
    assert row.tenant_id is None  # no tenant's id holds a NUL
    assert row.error == "bad\ufffd error"
    assert row.headers["x-note"] == "a\ufffdb" and row.headers["k\ufffd"] == 1


def test_a_poison_message_nested_past_the_json_parser_is_drained(
    sessions: sessionmaker[Session], transport: MemoryTransport
) -> None:
    deep = b"[" * 100_000  # its tenant is looked for, and json.loads recurses
    transport.publish([undecodable(deep)])

    assert poison.drain(transport, sessions) == 1

    with sessions() as session:
        row = session.scalars(select(PoisonMessage)).one()
    assert poison.raw_body(row) == deep and row.tenant_id is None


def test_a_poison_message_is_resubmitted_after_a_fix_and_purged(
    sessions: sessionmaker[Session], transport: MemoryTransport
) -> None:
    transport.publish([undecodable(b'{"tenant": "ten_1"}')] * 2)  # one message, twice
    assert poison.drain(transport, sessions) == 2
    fixed = encode(builders.event("ten_1"))
    with sessions() as session, session.begin():
        row = session.scalars(select(PoisonMessage)).one()
        poison.resubmit(session, transport, row, body=fixed)
    assert transport.queue_depth(tp.EVENTS) == 1
    with sessions() as session, session.begin():
        assert session.scalars(select(PoisonMessage)).one().resubmitted_at is not None
        assert poison.purge(session, poison.PoisonFilter(tenant="ten_1")) == 1
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(PoisonMessage)) == 0


def test_a_late_first_cycle_dead_letter_does_not_kill_a_replayed_delivery(
    sessions: sessionmaker[Session], transport: MemoryTransport
) -> None:
    with sessions() as session, session.begin():
        tenant = builders.tenant(session).id
        sub, _ = builders.subscription(session, tenant, "http://127.0.0.1:9/")
        message = builders.delivery(session, builders.event(tenant), sub.id)
        row = session.get(Delivery, message.delivery_id)
        assert row is not None
        row.status, row.attempts, row.replay_count = (
            DeliveryStatus.PENDING,
            0,
            1,
        )  # reopened by a replay
        stale = message.model_copy(update={"attempt": 3})
    transport.publish([Outgoing(tp.DEAD, "", encode(stale), {tp.H_REASON: "max_attempts"})])
    drain = run_drain(transport, sessions)
    try:
        deadline = time.monotonic() + WAIT_S
        while transport.queue_depth(tp.DEAD) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the batch commits before its ack
    finally:
        drain.stop()
    assert transport.queue_depth(tp.DEAD) == 0
    with sessions() as session:
        assert (
            session.scalar(select(Delivery.status).where(Delivery.id == stale.delivery_id))
            == DeliveryStatus.PENDING
        )


def test_a_poisoned_delivery_goes_back_to_its_tenants_shard(
    sessions: sessionmaker[Session], transport: MemoryTransport
) -> None:
    event = builders.event("ten_1")
    delivery = DeliveryMessage(delivery_id="dlv_1", event_id=event.id, tenant="ten_1",
                               subscription_id="sub_1", attempt=1, event=event)  # fmt: skip
    # Crashed its consumer until the shard queue's delivery limit moved it (x-death).
    transport.publish([undecodable(encode(delivery), queue=tp.shard_queue(5))])
    assert poison.drain(transport, sessions) == 1
    with sessions() as session, session.begin():
        row = session.scalars(select(PoisonMessage)).one()
        assert row.source_queue == tp.shard_queue(5)
        poison.resubmit(session, transport, row, shards=8)

    own = tp.shard_queue(tp.shard_of("ten_1", 8))
    assert transport.queue_depth(own) == 1
    assert sum(transport.queue_depth(q) for q in tp.build((1.0,)).delivery_queues) == 1
