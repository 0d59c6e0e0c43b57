"""A large replay is fair to other tenants (issue 15.1): tenant A's replay of many dead
deliveries, published in full before tenant B does anything, does not delay B's fresh
events nor B's own small replay. Router and TWO dispatchers as separate processes, the
replays as `hookline replay start` runs them, over a real RabbitMQ (its own vhost) and
PostgreSQL, delivering to real receivers on 127.0.0.1. B is hashed to A's shard: the worst
case, where B waits behind A's share of the replay's first second (the rest of A's replay
spilled to the overflow shard: `common/transport/spill.py`; where a burst's copies land is
asserted in `test_spill_burst.py`).

What is asserted, on a shared machine: each of B's deliveries waits behind fewer than half
of what was left of A's replay when B began, counted from B's copy being on the broker
(before replays went to their tenants' shards, B's replay queued behind all of A's in the
one unsharded queue), and each fresh one arrives within a generous 15 s of being sent; and
every delivery of both arrives exactly once, with its original webhook-id and a valid
signature.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook

from common.db import migrate
from common.db.bulk import insert_rows
from common.db.models import Delivery, EventRow
from common.db.session import make_engine, make_sessionmaker
from common.db.statuses import DeliveryStatus
from common.ids import delivery_id_for, new_id
from common.secretbox import SecretBox
from common.settings import Settings
from common.transport import topology as tp
from common.wire import utcnow, webhook_id_for
from hookline.receiver import Received, Receiver
from producer import Producer
from tests import builders
from tests.processes import HOOKLINE, Services, service_env
from tests.services import temporary_database, temporary_vhost

SECRET_KEY = "d0wHSpY9TSNxuhRorT006YfcPvyuZd3i6JMVmTL_hgs"
HEAVY = 30_000  # A's dead deliveries, replayed at once
LIGHT = 20  # B's dead deliveries (replayed), and B's fresh events
FRESH_BOUND_S = 15.0
SHARDS = Settings().delivery_shards


@dataclass
class Tenant:
    id: str
    subscription: str
    secret: str
    receiver: Receiver
    dead_events: set[str] = field(default_factory=set)


def _seed_dead(sessions: sessionmaker[Session], tenant: Tenant, count: int) -> None:
    """`count` events and their deliveries, dead after their last attempt."""
    now = utcnow()
    events, deliveries = [], []
    for n in range(count):
        event_id = new_id("evt")
        delivery_id = delivery_id_for(tenant.id, event_id, tenant.subscription, now.date())
        tenant.dead_events.add(event_id)
        events.append(
            {
                "tenant_id": tenant.id,
                "id": event_id,
                "type": "page.updated",
                "timestamp": now,
                "data": {"n": n},
                "received_at": now,
                "day": now.date(),
            }
        )
        deliveries.append({"id": delivery_id, "tenant_id": tenant.id, "event_id": event_id,
                           "subscription_id": tenant.subscription, "event_type": "page.updated",
                           "status": DeliveryStatus.DEAD, "attempts": 3, "replay_count": 0,
                           "last_status_code": 503, "dead_reason": "max_attempts",
                           "created_at": now, "updated_at": now, "finished_at": now,
                           "day": now.date()})  # fmt: skip
    with sessions.begin() as session:
        insert_rows(session, EventRow.__table__, events)  # type: ignore[arg-type]
        insert_rows(session, Delivery.__table__, deliveries)  # type: ignore[arg-type]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Services, sessionmaker[Session], dict[str, str]]]:
    with temporary_vhost() as broker_url, temporary_database() as database_url:
        migrate.upgrade(database_url)
        engine = make_engine(database_url)
        env = service_env(
            database_url, broker_url, secret_key=SECRET_KEY, retry_schedule="1s,2s,4s,8s"
        )
        services = Services(env, tmp_path)
        try:
            yield services, make_sessionmaker(engine), env
        finally:
            codes = services.stop()
            engine.dispose()
            assert set(codes.values()) <= {0}, (codes, services.logs_of_all())


def _tenants(sessions: sessionmaker[Session], heavy_rx: Receiver, light_rx: Receiver) -> tuple[
    Tenant, Tenant
]:  # fmt: skip
    box = SecretBox(SECRET_KEY)
    with sessions.begin() as session:
        heavy_id = builders.tenant(session, name="heavy").id
        light_id = next(
            candidate
            for candidate in (f"ten_light{n}" for n in range(1000))
            if tp.shard_of(candidate, SHARDS) == tp.shard_of(heavy_id, SHARDS)
        )
        builders.tenant(session, name="light", id=light_id)
        made = []
        for tenant, receiver in ((heavy_id, heavy_rx), (light_id, light_rx)):
            sub, secret = builders.subscription(session, tenant, f"{receiver.url}/hooks", box=box)
            made.append(Tenant(tenant, sub.id, secret, receiver))
    return made[0], made[1]


def _replay(services: Services, env: dict[str, str], tenant: Tenant) -> subprocess.Popen[bytes]:
    log = open(services.logs / f"replay-{tenant.id}.log", "wb")  # noqa: SIM115
    return subprocess.Popen(
        [*HOOKLINE, "replay", "start", "--subscription", tenant.subscription,
         "--rate", "unlimited", "--yes"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def _verified(received: list[Received], secret: str) -> Counter[str]:
    """Each request's webhook-id, counted, once its signature checked out."""
    webhook = Webhook(secret)
    for request in received:
        webhook.verify(request.body, request.headers)
    return Counter(request.headers["webhook-id"] for request in received)


def test_a_large_replay_does_not_delay_another_tenants_deliveries(
    stack: tuple[Services, sessionmaker[Session], dict[str, str]],
) -> None:
    services, sessions, env = stack
    with Receiver().start() as heavy_rx, Receiver().start() as light_rx:
        heavy, light = _tenants(sessions, heavy_rx, light_rx)
        _seed_dead(sessions, heavy, HEAVY)
        _seed_dead(sessions, light, LIGHT)
        services.start("router", "router")
        services.start("dispatcher-1", "dispatcher", "--concurrency", "8")
        services.start("dispatcher-2", "dispatcher", "--concurrency", "8")

        # A's whole replay is published (the command returns once every copy is confirmed)
        # before B sends anything: the case where B would queue behind all of it.
        assert _replay(services, env, heavy).wait(120) == 0, services.logs_of_all()
        heavy_left_at_start = HEAVY - heavy_rx.count
        assert heavy_left_at_start > HEAVY // 4, "A's replay was delivered before B began"
        heavy_before = HEAVY - heavy_left_at_start
        # For each of B's deliveries, how many of A's arrived between B's copy going on the
        # broker and B's arrival: what B waited behind. A fresh event is on the broker when
        # its publish returns (its id and A's count are noted before, so that a delivery
        # quicker than the confirm is still known as fresh). A replay copy is on it by the
        # time its command exits (the command returns once every copy is confirmed); a copy
        # delivered before then counts as having waited behind none. Counting from the
        # command's start instead measured how long a Python process takes to start on a
        # loaded machine (4-5 s in one CI run, ~9,600 of A's deliveries), not the
        # dispatchers' fairness.
        heavy_at_publish: dict[str, int] = {}  # by webhook-id, as are the two below
        heavy_at_replay_exit: list[int] = []  # A's count when B's replay command exited
        waited_behind: list[tuple[str, int]] = []
        sent_at: dict[str, float] = {}
        waited_s: list[float] = []

        def on_light(request: Received) -> None:
            webhook_id = request.headers["webhook-id"]
            if webhook_id in sent_at:
                waited_s.append(time.monotonic() - sent_at[webhook_id])
                waited_behind.append(("fresh", heavy_rx.count - heavy_at_publish[webhook_id]))
            else:
                behind = heavy_rx.count - heavy_at_replay_exit[0] if heavy_at_replay_exit else 0
                waited_behind.append(("replay", behind))

        def watch(replay: subprocess.Popen[bytes]) -> None:
            while replay.poll() is None:
                time.sleep(0.005)
            heavy_at_replay_exit.append(heavy_rx.count)

        light_rx.on_receive = on_light
        light_replay = _replay(services, env, light)
        watcher = threading.Thread(target=watch, args=(light_replay,), daemon=True)
        watcher.start()
        with Producer(Settings(broker_url=env["HOOKLINE_BROKER_URL"])) as producer:
            for n in range(LIGHT):
                event_id = new_id("evt")
                webhook_id = webhook_id_for(light.id, event_id)
                heavy_at_publish[webhook_id] = heavy_rx.count
                sent_at[webhook_id] = time.monotonic()
                event = {"tenant": light.id, "id": event_id, "type": "page.updated",
                         "data": {"fresh": n}}  # fmt: skip
                assert producer.publish_batch([event]) == [event_id]
                time.sleep(0.1)
        watcher.join(120)
        assert light_replay.returncode == 0, services.logs_of_all()
        assert light_rx.wait_for(2 * LIGHT, timeout_s=120), services.logs_of_all()
        assert heavy_rx.wait_for(HEAVY, timeout_s=300), services.logs_of_all()
        time.sleep(1.5)  # anything extra (a duplicate) would arrive now

        # Each of B's deliveries waited behind less than half of what was left of A's
        # replay when B began (in the one unsharded queue it waited behind all of it).
        assert len(waited_behind) == 2 * LIGHT
        worst = max(behind for _, behind in waited_behind)
        assert worst < heavy_left_at_start // 2, (heavy_left_at_start, waited_behind)
        assert len(waited_s) == LIGHT and max(waited_s) < FRESH_BOUND_S, waited_s
        print(json.dumps({"heavy_left_at_light_start": heavy_left_at_start,
                          "heavy_delivered_before_light": heavy_before,
                          "light_waited_behind_max": worst,
                          "light_fresh_wait_s_max": round(max(waited_s), 3)}))  # fmt: skip
        heavy_ids = _verified(heavy_rx.received, heavy.secret)
        light_ids = _verified(light_rx.received, light.secret)

    # Nothing lost, nothing twice, each with its original webhook-id.
    heavy_dead, light_dead = (
        {webhook_id_for(t.id, event_id) for event_id in t.dead_events} for t in (heavy, light)
    )
    assert set(heavy_ids) == heavy_dead and set(heavy_ids.values()) == {1}
    assert set(light_ids) == light_dead | set(sent_at) and set(light_ids.values()) == {1}
    with sessions() as session:
        grouped = session.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
        assert dict(grouped.tuples().all()) == {DeliveryStatus.SUCCEEDED: HEAVY + 2 * LIGHT}
