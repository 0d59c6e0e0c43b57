"""A burst routed over many seconds leaves one second's share in its tenant's shard, not a
share of every second (issue 15): a real `hookline router` process over RabbitMQ (its own
vhost) and PostgreSQL, no dispatcher running, so every delivery message stays where the
router put it.

With a per-second share alone, a burst routed in T seconds put share x T messages in its
shard (4,200 of a 100,000 burst in `bench/fairness.py`), and a tenant hashed to that shard
waited behind all of them once the dispatchers ran.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.db import migrate
from common.db.session import make_engine, make_sessionmaker
from common.secretbox import SecretBox
from common.settings import Settings
from common.transport import open_transport
from common.transport import topology as tp
from producer import Producer
from tests import builders
from tests.integration.faultrig import SECRET_KEY, engine_env, logs_dir
from tests.processes import Services
from tests.services import temporary_database, temporary_vhost

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

SHARE = 20  # deliveries a second a tenant routes to its own shard
BATCHES, BATCH, PAUSE_S = 16, 200, 0.5  # the burst: 3,200 events over 8 s
LIGHT = 8  # events of a tenant in the burst's shard, 2 a second: below its share
SHARDS = Settings().delivery_shards


@pytest.fixture
def routed(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A running router; yields the broker URL, the heavy tenant and a light tenant hashed
    to the heavy one's shard."""
    with temporary_vhost() as broker_url, temporary_database() as database_url:
        migrate.upgrade(database_url)
        engine = make_engine(database_url)
        heavy = "ten_burst"
        light = next(
            f"ten_beside_{n}"
            for n in range(1000)
            if tp.shard_of(f"ten_beside_{n}", SHARDS) == tp.shard_of(heavy, SHARDS)
        )
        try:
            with make_sessionmaker(engine)() as session, session.begin():
                for tenant in (heavy, light):
                    builders.tenant(session, name=tenant, id=tenant)
                    builders.subscription(
                        session, tenant, "http://127.0.0.1:9/hooks",
                        event_types=["content.*"], box=SecretBox(SECRET_KEY),
                    )  # fmt: skip
        finally:
            engine.dispose()
        env = engine_env(broker_url, database_url, HOOKLINE_DELIVERY_SHARE_PER_S=str(SHARE))
        services = Services(env, logs_dir(tmp_path))
        services.start("router", "router")
        try:
            yield broker_url, heavy, light
            assert services.alive() == {"router": None}, services.logs_of_all()
            codes = services.stop()
            assert set(codes.values()) == {0}, (codes, services.logs_of_all())
        finally:
            services.kill()


def _event(tenant: str, event_id: str) -> dict[str, object]:
    return {"tenant": tenant, "type": "content.updated", "id": event_id, "data": {}}


def test_a_burst_routed_over_seconds_leaves_one_share_in_its_shard(
    routed: tuple[str, str, str],
) -> None:
    broker_url, heavy, light = routed
    with Producer(Settings(broker_url=broker_url)) as producer:
        producer.declare_topology()
        for n in range(BATCHES):
            producer.publish_batch(
                [_event(heavy, f"h-{n}-{i}") for i in range(BATCH)]
                + ([_event(light, f"l-{n}")] if n % 2 == 0 and n // 2 < LIGHT else [])
            )
            time.sleep(PAUSE_S)

    own = tp.shard_queue(tp.shard_of(heavy, SHARDS))
    overflow = tp.shard_queue(tp.OVERFLOW_SHARD)
    total = BATCHES * BATCH + LIGHT
    transport = open_transport(broker_url)
    try:
        deadline = time.monotonic() + 120
        while (depths := transport.queue_depths([own, overflow]))[own] + depths[
            overflow
        ] < total and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        transport.close()

    assert depths[own] + depths[overflow] == total, depths
    # The light tenant is always in its shard (below its share), so what it waits behind
    # there is the rest: the burst's first second, and one more if the router stalled a
    # whole second (a loaded machine). A share of every second would be 160 or more.
    heavy_in_own = depths[own] - LIGHT
    assert 0 < heavy_in_own <= 3 * SHARE, depths
    assert depths[overflow] == BATCHES * BATCH - heavy_in_own
