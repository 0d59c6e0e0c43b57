"""`hookline replay cancel`, `dlq resubmit [--body-file]`, `--status-class`, `replay start
--force` and `gc --include-dead` as operators type them: SQLite, and one in-memory broker that
every command of a test shares (`memory://` is a new broker per process), so that a test can
read what a command published."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from common.db import migrate
from common.db.models import AuditEntry, Delivery, EventRow, PoisonMessage, ReplayJob, Subscription
from common.db.session import make_engine, make_sessionmaker
from common.settings import Settings
from common.transport import MemoryBroker, MemoryTransport, Message
from common.transport import topology as tp
from common.wire import encode, utcnow
from dispatcher.deadletters import DeadFilter
from dispatcher.replay import Runner
from dispatcher.replay import jobs as replayjobs
from hookline.cli import app, direct, dlq
from hookline.runtime import build_runtime
from tests import builders
from tests.dead_letters import dead_letter, published_copies
from tests.queues import messages_waiting

runner = CliRunner()
WAIT_S = 10.0


@dataclass
class Ops:
    sessions: sessionmaker[Session]
    broker: MemoryBroker
    tenant: str
    sub: str
    dead: dict[int | None, str]  # last status code -> id of the dead delivery


@pytest.fixture
def ops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ops]:
    url = f"sqlite:///{tmp_path}/ops.db"
    monkeypatch.setenv("HOOKLINE_DATABASE_URL", url)
    monkeypatch.setenv("HOOKLINE_BROKER_URL", "memory://")
    migrate.upgrade(url)
    broker = MemoryBroker()
    # Every dlq/replay/gc command builds its runtime here; only the broker is shared.
    monkeypatch.setattr(direct, "build_runtime", functools.partial(build_runtime, memory=broker))
    monkeypatch.setattr(dlq, "build_runtime", functools.partial(build_runtime, memory=broker))
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    with sessions() as session, session.begin():
        tenant = builders.tenant(session).id
        sub, _ = builders.subscription(session, tenant, "http://127.0.0.1:9/a")
        dead = {
            code: dead_letter(session, tenant, sub.id, status_code=code).id
            for code in (404, 410, 503, None)
        }
        for poison_id, queue in (("psn_events", tp.EVENTS), ("psn_lost", "unknown")):
            session.add(
                PoisonMessage(id=poison_id, source_queue=queue, reason="undecodable",
                              error="Event: bad", body="{not json", received_at=utcnow())
            )  # fmt: skip
    yield Ops(sessions, broker, tenant, sub.id, dead)
    engine.dispose()


def invoke(*args: str) -> Result:
    return runner.invoke(app, list(args))


def statuses(ops: Ops) -> dict[str, str]:
    with ops.sessions() as session:
        return dict(session.execute(select(Delivery.id, Delivery.status)).tuples().all())


def audits(ops: Ops, action: str) -> list[AuditEntry]:
    with ops.sessions() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def job_row(ops: Ops, job_id: str) -> ReplayJob:
    with ops.sessions() as session:
        job = session.get(ReplayJob, job_id)
    assert job is not None
    return job


def new_job(ops: Ops, rate_per_s: float | None = None) -> str:
    with ops.sessions() as session, session.begin():
        job, _ = replayjobs.create(
            session, DeadFilter(subscription=ops.sub), actor="test", rate_per_s=rate_per_s
        )
        return job.id


def queued(broker: MemoryBroker, queue: str) -> list[Message]:
    """Consume (and ack) every message waiting in `queue`."""
    return messages_waiting(MemoryTransport(broker), queue)


def test_replay_cancel_stops_a_running_job_after_its_batch_and_what_was_sent_stays_sent(
    ops: Ops,
) -> None:
    job_id = new_job(ops, rate_per_s=1.0)  # one delivery a second: 4 s for the whole set
    transport = MemoryTransport(ops.broker)
    transport.declare(tp.build(Settings().retry_tiers_s))
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(Runner(transport, ops.sessions, job_id).run)
        deadline = time.monotonic() + WAIT_S
        while job_row(ops, job_id).done < 1 and time.monotonic() < deadline:
            time.sleep(0.02)  # the first batch is sent; the runner waits a second for the next
        result = invoke("replay", "cancel", job_id)
        job = running.result(timeout=WAIT_S * 3)

    assert result.exit_code == 0, result.output
    assert f"job {job_id}: cancelling" in result.output
    assert job.state == "cancelled" and 1 <= job.done < job.total == 4
    sent = {c.delivery_id for c in published_copies(transport)}
    assert {i for i, s in statuses(ops).items() if s == "pending"} == sent
    assert len(sent) == job.done
    (entry,) = audits(ops, "replay.cancel")
    assert entry.resource_id == job_id and entry.actor.startswith("cli:")


def test_replay_cancel_of_a_job_nobody_runs_cancels_it_at_once(ops: Ops) -> None:
    job_id = new_job(ops)

    result = invoke("replay", "cancel", job_id)
    assert result.exit_code == 0, result.output
    assert f"job {job_id}: cancelled" in result.output
    job = job_row(ops, job_id)
    assert job.state == "cancelled" and job.finished_at is not None
    assert set(statuses(ops).values()) == {"dead"}


def test_replay_cancel_of_an_unknown_job_fails_and_names_it(ops: Ops) -> None:
    result = invoke("replay", "cancel", "rpl_nope")
    assert result.exit_code == 1 and "hookline: not_found: replay job not found" in result.output
    assert audits(ops, "replay.cancel") == []


def test_dlq_resubmit_with_a_body_file_publishes_the_corrected_body(
    ops: Ops, tmp_path: Path
) -> None:
    fixed = encode(builders.event(ops.tenant, type="order.paid"))
    body_file = tmp_path / "fixed.json"
    body_file.write_bytes(fixed)

    result = invoke("dlq", "resubmit", "psn_events", "--body-file", str(body_file))
    assert result.exit_code == 0, result.output
    assert f"re-submitted psn_events to {tp.EVENTS}" in result.output
    (message,) = queued(ops.broker, tp.EVENTS)
    assert (message.body, message.routing_key) == (fixed, "order.paid")
    assert message.headers["x-hookline-resubmitted"] == "psn_events"
    with ops.sessions() as session:
        row = session.get(PoisonMessage, "psn_events")
    assert row is not None and row.resubmitted_at is not None
    assert row.body == "{not json"  # what arrived is kept as it arrived
    (entry,) = audits(ops, "poison.resubmit")
    assert entry.resource_id == "psn_events" and entry.actor.startswith("cli:")
    assert entry.details == {"source_queue": tp.EVENTS, "corrected": True}


def test_dlq_resubmit_without_a_body_file_sends_the_stored_body_byte_for_byte(ops: Ops) -> None:
    result = invoke("dlq", "resubmit", "psn_events")
    assert result.exit_code == 0, result.output
    (message,) = queued(ops.broker, tp.EVENTS)
    assert (message.body, message.routing_key) == (b"{not json", "resubmitted")
    assert [e.details["corrected"] for e in audits(ops, "poison.resubmit")] == [False]


def test_dlq_resubmit_refuses_an_unknown_id_and_a_message_from_an_unknown_queue(
    ops: Ops,
) -> None:
    missing = invoke("dlq", "resubmit", "psn_nope")
    lost = invoke("dlq", "resubmit", "psn_lost")
    no_file = invoke("dlq", "resubmit", "psn_lost", "--body-file", "/nonexistent/fixed.json")
    assert missing.exit_code == 1
    assert "hookline: not_found: poison message not found" in missing.output
    assert lost.exit_code == 2 and "cannot re-submit" in lost.output
    assert no_file.exit_code == 2 and "Invalid value for '--body-file'" in no_file.output
    with ops.sessions() as session:
        row = session.get(PoisonMessage, "psn_lost")
    assert row is not None and row.resubmitted_at is None
    assert queued(ops.broker, tp.EVENTS) == []
    assert audits(ops, "poison.resubmit") == []


@pytest.mark.parametrize(
    ("status_class", "codes"),
    [("4xx", {404, 410}), ("5xx", {503}), ("none", {None}), ("2xx", set())],
)
def test_dlq_list_status_class_keeps_only_dead_letters_with_that_last_status(
    ops: Ops, status_class: str, codes: set[int | None]
) -> None:
    result = invoke("dlq", "list", "--status-class", status_class, "-o", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["data"]
    assert {r["id"] for r in rows} == {ops.dead[c] for c in codes}
    assert {r["last_status_code"] for r in rows} == codes


def test_dlq_list_refuses_an_unknown_status_class(ops: Ops) -> None:
    result = invoke("dlq", "list", "--status-class", "6xx")
    assert result.exit_code == 2 and "status class" in result.output


def test_replay_start_status_class_replays_only_those_dead_letters(ops: Ops) -> None:
    result = invoke("replay", "start", "--status-class", "4xx", "--yes", "--rate", "unlimited")
    assert result.exit_code == 0, result.output
    wanted = {ops.dead[404], ops.dead[410]}
    assert {i for i, s in statuses(ops).items() if s == "pending"} == wanted
    assert {c.delivery_id for c in published_copies(MemoryTransport(ops.broker))} == wanted


def test_replay_start_of_a_paused_subscription_is_refused_unless_forced(ops: Ops) -> None:
    with ops.sessions() as session, session.begin():
        sub = session.get(Subscription, ops.sub)
        assert sub is not None
        sub.status = "paused"

    refused = invoke("replay", "start", "--subscription", ops.sub, "--yes")
    assert refused.exit_code == 2, refused.output
    assert "paused" in refused.output and "--force" in refused.output
    with ops.sessions() as session:
        assert session.scalars(select(ReplayJob)).all() == []
    assert set(statuses(ops).values()) == {"dead"}

    forced = invoke(
        "replay", "start", "--subscription", ops.sub, "--yes", "--force", "--rate", "unlimited"
    )
    assert forced.exit_code == 0, forced.output
    assert "--force:" in forced.output
    assert set(statuses(ops).values()) == {"pending"}
    copies = published_copies(MemoryTransport(ops.broker))
    assert {c.delivery_id for c in copies} == set(ops.dead.values())
    (entry,) = audits(ops, "replay.start")
    assert "paused" in entry.details["forced"]


def test_gc_removes_old_dead_letters_only_with_include_dead(ops: Ops) -> None:
    def gc(*flags: str) -> tuple[int, int]:
        result = invoke("gc", "--older-than", "30d", *flags)
        assert result.exit_code == 0, result.output
        counts = json.loads(result.stdout)
        return counts["deliveries"], counts["events"]

    with ops.sessions() as session, session.begin():
        gone = dead_letter(session, ops.tenant, ops.sub, died_at=utcnow() - timedelta(days=40))
        event = session.get(EventRow, (ops.tenant, gone.event_id))
        assert event is not None
        event.received_at = utcnow() - timedelta(days=40)

    assert gc() == (0, 0)
    assert statuses(ops)[gone.id] == "dead"
    assert gc("--include-dead") == (1, 1)
    assert statuses(ops) == {i: "dead" for i in ops.dead.values()}  # died a minute ago
