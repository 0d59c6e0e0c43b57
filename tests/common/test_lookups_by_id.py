"""Lookups by id read one partition (issue 17.3): on PostgreSQL with several populated days,
every statement that the API routes, the portal's services, the dispatcher (settle,
dead-letter drain, re-checks, replay) and the CLI's direct mode run for an id reads the
partitions of that id's day only, as EXPLAIN ANALYZE shows (`tests/plans.py`).

A day that is neither today nor the newest is the one looked up, so that reading "the
newest partition" would not pass for pruning.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from common.db import lookup, migrate, partitions
from common.db.bulk import insert_rows
from common.db.days import on_their_days
from common.db.models import Attempt, Delivery, EventRow, ReplayJob
from common.db.statuses import DeliveryStatus, ReplayJobStatus
from common.ids import day_of, delivery_id_for, new_id
from common.transport import MemoryTransport, Outgoing
from common.transport import topology as tp
from common.wire import DeliveryMessage, Event, encode, utcnow
from dispatcher.attempt import statuses
from dispatcher.deadletters import DeadFilter, DeadLetterDrain
from dispatcher.replay import create_job
from dispatcher.replay.rows import Batches
from dispatcher.settle.rows import update_deliveries
from hookline.cli import app as cli
from hookline.services import deliveries as portal_deliveries
from hookline.services.audit import Actor
from router.index import Target
from router.persist import persist_batch
from tests import builders
from tests.api.support import Api, build_api
from tests.plans import assert_one_day, partitions_read
from tests.services import temporary_database

pytestmark = pytest.mark.postgres
TODAY = datetime.now(UTC).date()
DAYS = [TODAY - timedelta(days=n) for n in range(4)]  # populated: today and 3 days back
LOOKED_UP = TODAY - timedelta(days=2)
PER_DAY = 1_500  # events, each with one delivery (every third dead) and one attempt


@dataclass
class World:
    engine: Engine
    sessions: sessionmaker[Session]
    api: Api
    url: str
    tenant: str
    subscription: str
    auth: dict[str, str]
    dead: list[tuple[str, str]]  # (delivery id, event id) of dead deliveries on LOOKED_UP


def _day_rows(tenant: str, subscription: str, day: date) -> tuple[list[dict[str, Any]], ...]:
    noon = datetime.combine(day, clock(12), UTC)
    events, deliveries, attempts = [], [], []
    for n in range(PER_DAY):
        at = noon + timedelta(seconds=n)
        event_id = new_id("evt", at=at)
        delivery_id = delivery_id_for(tenant, event_id, subscription, day)
        dead = n % 3 == 0
        events.append(
            {
                "tenant_id": tenant,
                "id": event_id,
                "type": "order.created",
                "timestamp": at,
                "data": {"n": n},
                "received_at": at,
                "day": day,
            }
        )
        deliveries.append(
            {
                "id": delivery_id,
                "tenant_id": tenant,
                "event_id": event_id,
                "subscription_id": subscription,
                "event_type": "order.created",
                "status": DeliveryStatus.DEAD if dead else DeliveryStatus.SUCCEEDED,
                "attempts": 1,
                "replay_count": 0,
                "last_status_code": 500 if dead else 200,
                "dead_reason": "max_attempts" if dead else None,
                "created_at": at,
                "updated_at": at,
                "finished_at": at,
                "day": day,
            }
        )
        attempts.append(
            {
                "delivery_id": delivery_id,
                "attempt": 1,
                "outcome": "dead" if dead else "success",
                "duration_s": 0.01,
                "created_at": at,
                "day": day,
            }
        )
    return events, deliveries, attempts  # fmt: skip


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with temporary_database() as url:
        migrate.upgrade(url)
        api = build_api(url)
        engine, sessions = api.engine, api.sessionmaker
        tenant, auth = api.tenant("plans")
        with sessions.begin() as session:
            subscription, _ = builders.subscription(session, tenant, "http://127.0.0.1:9/h")
        with engine.begin() as connection:
            partitions.ensure(connection, [TODAY + timedelta(days=n) for n in range(-4, 4)])
        dead = []
        for day in DAYS:
            events, deliveries, attempts = _day_rows(tenant, subscription.id, day)
            with sessions.begin() as session:
                for model, rows in ((EventRow, events), (Delivery, deliveries),
                                    (Attempt, attempts)):  # fmt: skip
                    insert_rows(session, model.__table__, rows)  # type: ignore[arg-type]
            if day == LOOKED_UP:
                dead = [(d["id"], d["event_id"]) for d in deliveries if d["status"] == "dead"]
        with engine.begin() as connection:
            connection.execute(text("ANALYZE events; ANALYZE deliveries; ANALYZE attempts"))
        try:
            yield World(engine, sessions, api, url, tenant, subscription.id, auth, dead)
        finally:
            api.client.close()
            api.transport.close()
            engine.dispose()


def _wait_finished(world: World, job_id: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with world.sessions() as session:
            job = session.get(ReplayJob, job_id)
            if job is not None and job.state != ReplayJobStatus.RUNNING:
                assert job.state == ReplayJobStatus.COMPLETED, job.error
                return
        time.sleep(0.1)
    pytest.fail(f"replay job {job_id} did not finish")


def test_the_world_holds_several_populated_days(world: World) -> None:
    with world.engine.connect() as connection:
        query = text("SELECT day, count(*) FROM deliveries GROUP BY day")
        counts = dict(connection.execute(query).tuples().all())
    assert counts == dict.fromkeys(DAYS, PER_DAY)


def test_the_api_reads_a_delivery_and_its_event_on_their_day(world: World) -> None:
    delivery_id, event_id = world.dead[0]
    client = world.api.client
    with partitions_read() as delivery:
        got = client.get(f"/v1/deliveries/{delivery_id}", headers=world.auth)
    with partitions_read() as event:
        shown = client.get(f"/v1/events/{event_id}", headers=world.auth)
    with partitions_read() as dead_letter:
        detail = client.get(f"/v1/dead-letters/{delivery_id}", headers=world.api.admin)

    assert got.status_code == 200 and len(got.json()["attempts"]) == 1
    assert shown.status_code == 200 and [d["id"] for d in shown.json()["deliveries"]] == [
        delivery_id
    ]
    assert detail.status_code == 200 and detail.json()["event"]["id"] == event_id
    for reads in (delivery, event, dead_letter):
        assert_one_day(reads, LOOKED_UP)


def test_an_event_page_counts_its_deliveries_on_the_pages_day(world: World) -> None:
    since = datetime.combine(LOOKED_UP, clock(12), UTC)
    query = {"since": since.isoformat(), "until": (since + timedelta(minutes=5)).isoformat()}
    with partitions_read() as reads:
        page = world.api.client.get("/v1/events", params=query, headers=world.auth)

    assert page.status_code == 200 and len(page.json()["data"]) == 100
    assert_one_day(reads, LOOKED_UP, "deliveries")  # the listing itself goes by time


def test_a_replay_of_one_delivery_through_the_api_reads_its_day(world: World) -> None:
    delivery_id, _ = world.dead[1]
    with partitions_read() as reads:
        started = world.api.client.post(
            f"/v1/deliveries/{delivery_id}/replay", headers=world.api.admin
        )
        assert started.status_code == 202, started.text
        _wait_finished(world, started.json()["id"])

    assert_one_day(reads, LOOKED_UP)
    with world.sessions() as session:
        row = lookup.delivery(session, delivery_id)
        assert row is not None and row.status == DeliveryStatus.PENDING


def test_the_portal_reads_a_delivery_and_retries_it_on_its_day(world: World) -> None:
    delivery_id, _ = world.dead[2]
    with partitions_read() as reads, world.sessions.begin() as session:
        row, attempts = portal_deliveries.detail(session, world.tenant, None, delivery_id)
        job = portal_deliveries.retry_one(
            session, world.tenant, None, delivery_id, actor=Actor("portal"), rate_per_s=10
        )

    assert row.id == delivery_id and len(attempts) == 1 and job.total == 1
    assert_one_day(reads, LOOKED_UP)


def test_the_settler_the_drain_and_the_re_check_read_their_batch_day(world: World) -> None:
    ids = [delivery_id for delivery_id, _ in world.dead[3:13]]
    now = utcnow()
    settled = [
        {"id": i, "status": DeliveryStatus.DEAD, "attempts": 2, "last_status_code": 500,
         "last_error": None, "dead_reason": None, "next_attempt_at": None, "updated_at": now,
         "finished_at": now, "replay": True}
        for i in ids
    ]  # fmt: skip
    with partitions_read() as settling, world.sessions.begin() as session:
        update_deliveries(session, settled)
    with partitions_read() as checking:
        found = statuses(world.sessions, set(ids), threading.Event())
    transport = MemoryTransport()
    transport.declare(tp.build((1.0,)))
    dead_letters = [
        Outgoing(tp.DEAD, "", encode(_message(world, i, attempt=2)), {tp.H_REASON: "gone"})
        for i in ids
    ]
    transport.publish(dead_letters)
    drain = DeadLetterDrain(transport, world.sessions, publish_timeout_s=5.0)
    with partitions_read() as draining:
        drain.start()
        deadline = time.monotonic() + 10
        while _reasons(world, ids) != {"gone"} and time.monotonic() < deadline:
            time.sleep(0.05)
        drain.stop()

    assert found == dict.fromkeys(ids, DeliveryStatus.DEAD)
    assert _reasons(world, ids) == {"gone"}
    for reads in (settling, checking, draining):
        assert_one_day(reads, LOOKED_UP)


def _message(world: World, delivery_id: str, attempt: int) -> DeliveryMessage:
    with world.sessions() as session:
        row = session.scalars(select(Delivery).where(Delivery.id == delivery_id)).one()
    event = Event(id=row.event_id, tenant=world.tenant, type=row.event_type)
    return DeliveryMessage(
        delivery_id=row.id, event_id=row.event_id, tenant=world.tenant,
        subscription_id=row.subscription_id, attempt=attempt, event=event,
    )  # fmt: skip


def _reasons(world: World, ids: list[str]) -> set[str | None]:
    with world.sessions() as session:
        query = select(Delivery.dead_reason).where(
            Delivery.id.in_(ids), *on_their_days(Delivery.day, ids)
        )
        return set(session.scalars(query))


def test_a_replay_job_claims_resumes_and_marks_on_its_days(world: World) -> None:
    ids = [delivery_id for delivery_id, _ in world.dead[20:40]]
    dead = DeadFilter(tenant=world.tenant, ids=tuple(ids))
    with partitions_read() as reads:
        with world.sessions.begin() as session:
            job, _ = create_job(session, dead, actor="test", rate_per_s=None)
        batches = Batches(world.sessions, job.id)
        first = batches.claim(5)
        batches.mark(first)
        batches.claim(5)  # a runner that died after this claim: resumed below
        again = batches.reclaim(10, 0)
        batches.mark(again)

    assert len(first.rows) == 5 and len(again.rows) == 5
    assert_one_day(reads, LOOKED_UP)


def test_the_router_re_publishes_a_redelivered_event_from_its_day(world: World) -> None:
    event = Event(tenant=world.tenant, type="order.created")  # its id carries today
    target = [Target(world.subscription, world.tenant, ("order.created",))]
    with world.sessions.begin() as session:
        assert len(persist_batch(session, [(event, target)])) == 1
    with partitions_read() as reads, world.sessions.begin() as session:
        again = persist_batch(session, [(event, target)], recover={(event.tenant, event.id)})

    assert [r.recheck for r in again] == [True]
    carried = day_of(event.id)  # today, as the router saw it (a run may cross midnight)
    assert carried is not None
    assert_one_day(reads, carried, "deliveries")


def test_the_cli_direct_mode_shows_and_replays_on_the_ids_day(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOKLINE_DATABASE_URL", world.url)
    monkeypatch.setenv("HOOKLINE_BROKER_URL", "memory://")
    monkeypatch.setenv("HOOKLINE_ALLOW_MEMORY_BROKER", "true")
    monkeypatch.delenv("HOOKLINE_API_URL", raising=False)
    shown_id = world.dead[50][0]
    listed = tmp_path / "ids.txt"
    listed.write_text("\n".join(delivery_id for delivery_id, _ in world.dead[51:61]))
    runner = CliRunner()
    with partitions_read() as showing:
        shown = runner.invoke(cli, ["dlq", "show", shown_id])
    with partitions_read() as replaying:
        replayed = runner.invoke(cli, ["replay", "start", "--ids-from", str(listed), "--yes"])

    assert shown.exit_code == 0 and shown_id in shown.output, shown.output
    assert replayed.exit_code == 0, replayed.output
    assert_one_day(showing, LOOKED_UP)
    assert_one_day(replaying, LOOKED_UP)
