"""A replay's copies go where the router's deliveries go (issue 15.1): to their tenant's
shard, and past the tenant's share of a second to the overflow shard, so that a large
replay never sits in a queue ahead of another tenant's deliveries. SQLite and PostgreSQL,
the in-memory broker (which routes by the same headers as RabbitMQ: tests/transport)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import Tenant
from common.db.statuses import ReplayJobStatus
from common.transport import MemoryTransport
from common.transport import topology as tp
from common.wire import DeliveryMessage, decode
from dispatcher.deadletters import DeadFilter
from dispatcher.replay import Runner, create_job
from tests import builders
from tests.dead_letters import dead_letter

SHARDS = 4
DEAD = 12


@pytest.fixture
def transport() -> MemoryTransport:
    memory = MemoryTransport()
    memory.declare(tp.build((1.0,), SHARDS))
    return memory


@pytest.fixture
def tenant(sessions: sessionmaker[Session]) -> str:
    with sessions() as session, session.begin():
        tenant = builders.tenant(session).id
        sub, _ = builders.subscription(session, tenant, "http://127.0.0.1:9/a")
        for _ in range(DEAD):
            dead_letter(session, tenant, sub.id)
    return tenant


def _replay(sessions: sessionmaker[Session], transport: MemoryTransport, tenant: str) -> None:
    with sessions() as session, session.begin():
        dead = DeadFilter(tenant=tenant)
        job, _ = create_job(session, dead, actor="test", rate_per_s=None, everything=True)
    done = Runner(transport, sessions, job.id, shards=SHARDS, share_per_s=5).run()
    assert (done.state, done.done) == (ReplayJobStatus.COMPLETED, DEAD)


def _queued(transport: MemoryTransport) -> dict[str, list[DeliveryMessage]]:
    """The copies waiting in each delivery queue (consumed)."""
    found: dict[str, list[DeliveryMessage]] = {}
    for queue in tp.build((1.0,), SHARDS).delivery_queues:
        consumer = transport.consume(queue, prefetch=100)
        for message in consumer:
            if message is None:
                break
            found.setdefault(queue, []).append(decode(DeliveryMessage, message.body))
            consumer.ack(message)
        consumer.close()
    return found


def _shape(found: dict[str, list[Any]]) -> dict[str, int]:
    return {queue: len(copies) for queue, copies in found.items()}


def test_a_replay_fills_its_tenants_shard_up_to_its_share_then_overflow(
    sessions: sessionmaker[Session], transport: MemoryTransport, tenant: str
) -> None:
    _replay(sessions, transport, tenant)

    found = _queued(transport)
    own = tp.shard_queue(tp.shard_of(tenant, SHARDS))
    assert _shape(found) == {own: 5, tp.shard_queue(tp.OVERFLOW_SHARD): DEAD - 5}
    copies = [copy for queued in found.values() for copy in queued]
    assert len({copy.delivery_id for copy in copies}) == DEAD  # each once
    assert all(copy.replay and copy.tenant == tenant for copy in copies)


def test_a_tenants_own_share_decides_its_replays_spill(
    sessions: sessionmaker[Session], transport: MemoryTransport, tenant: str
) -> None:
    with sessions() as session, session.begin():
        session.execute(update(Tenant).where(Tenant.id == tenant).values(delivery_share_per_s=0))

    _replay(sessions, transport, tenant)  # 0: never spill, whatever the default

    own = tp.shard_queue(tp.shard_of(tenant, SHARDS))
    assert _shape(_queued(transport)) == {own: DEAD}
