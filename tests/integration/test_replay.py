"""Replays end to end: router and dispatcher processes over a real RabbitMQ (own vhost) and
PostgreSQL, a real receiver that fails until every delivery is dead, then `hookline replay`
as operators run it — alone, twice at once, and killed then resumed. Each time every
delivery must arrive exactly once more, with its original `webhook-id` and a valid signature.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook

from common.db import migrate
from common.db.models import AuditEntry, Delivery, ReplayJob
from common.db.session import make_engine, make_sessionmaker
from common.db.statuses import DeliveryStatus
from common.secretbox import SecretBox
from common.settings import Settings
from common.wire import utcnow, webhook_id_for
from hookline.receiver import Received, Receiver, Reply
from producer import Producer
from tests import builders
from tests.processes import HOOKLINE, Services, service_env
from tests.services import temporary_database, temporary_vhost

SECRET_KEY = "d0wHSpY9TSNxuhRorT006YfcPvyuZd3i6JMVmTL_hgs"
EVENTS = 100
WAIT_S = 60.0


@dataclass
class Stack:
    env: dict[str, str]
    sessions: sessionmaker[Session]
    services: Services
    logs: Path


@dataclass
class Endpoint:
    """A receiver that answers 500 until told to recover, and the subscription behind it."""

    receiver: Receiver
    failing: list[bool] = field(default_factory=lambda: [True])
    tenant: str = ""
    subscription: str = ""
    secret: str = ""
    event_ids: set[str] = field(default_factory=set)

    def answer(self, _request: Received) -> Reply:
        return Reply(500) if self.failing[0] else Reply(200)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("replay")
    with temporary_vhost() as broker_url, temporary_database() as database_url:
        migrate.upgrade(database_url)
        engine = make_engine(database_url)
        env = service_env(
            database_url, broker_url, secret_key=SECRET_KEY, retry_schedule="200ms",
            # The endpoint fails on purpose: neither the breaker nor auto-disable may step in.
            circuit_failure_threshold="1000000", auto_disable_dead_deliveries="0",
        )  # fmt: skip
        services = Services(env, logs)
        services.start("router", "router")
        services.start("dispatcher", "dispatcher", "--concurrency", "16")
        try:
            yield Stack(env, make_sessionmaker(engine), services, logs)
        finally:
            services.stop()
            engine.dispose()


def wait(predicate: object, what: str, stack: Stack, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    pytest.fail(f"{what} within {timeout_s}s\n{stack.services.logs_of_all()}")


def count(stack: Stack, subscription: str, status: str, replays: int | None = None) -> int:
    query = select(func.count()).where(
        Delivery.subscription_id == subscription, Delivery.status == status
    )
    if replays is not None:
        query = query.where(Delivery.replay_count == replays)
    with stack.sessions() as session:
        return int(session.scalar(query) or 0)


@pytest.fixture
def endpoint(stack: Stack) -> Iterator[Endpoint]:
    """EVENTS deliveries to a failing endpoint, all dead; the endpoint then recovers."""
    ep = Endpoint(Receiver())
    ep.receiver.respond = ep.answer
    with ep.receiver:
        with stack.sessions() as session, session.begin():
            ep.tenant = builders.tenant(session).id
            sub, ep.secret = builders.subscription(
                session, ep.tenant, f"{ep.receiver.url}/hooks", box=SecretBox(SECRET_KEY)
            )
            ep.subscription = sub.id
        time.sleep(1.0)  # the router refreshes its subscription index every 0.2 s
        with Producer(Settings(broker_url=stack.env["HOOKLINE_BROKER_URL"])) as producer:
            ids = producer.publish_batch(
                [
                    {"tenant": ep.tenant, "type": "page.updated", "data": {"n": n}}
                    for n in range(EVENTS)
                ]
            )
        ep.event_ids = set(ids)
        wait(
            lambda: count(stack, ep.subscription, DeliveryStatus.DEAD) == EVENTS,
            "every delivery dead",
            stack,
        )
        assert ep.receiver.count == 2 * EVENTS  # two attempts each, both answered 500
        time.sleep(1.0)  # the dead-letter drain finishes behind the settler
        ep.failing[0] = False
        yield ep


def replay(stack: Stack, *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    log = log or stack.logs / f"replay-{time.monotonic_ns()}.log"
    out = open(log, "wb")  # noqa: SIM115
    return subprocess.Popen(
        [*HOOKLINE, "replay", "start", "--yes", *args],
        env=stack.env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def finish(proc: subprocess.Popen[bytes], timeout_s: float = WAIT_S) -> int:
    return proc.wait(timeout_s)


def assert_each_arrived_once_more(stack: Stack, ep: Endpoint) -> None:
    wait(lambda: ep.receiver.count >= 3 * EVENTS, "every replayed delivery arrived", stack)
    wait(
        lambda: count(stack, ep.subscription, DeliveryStatus.SUCCEEDED, replays=1) == EVENTS,
        "every replayed delivery settled",
        stack,
    )
    time.sleep(1.5)  # a duplicate would arrive now
    replayed = ep.receiver.received[2 * EVENTS :]
    webhook = Webhook(ep.secret)
    ids = []
    for request in replayed:
        webhook.verify(request.body, request.headers)
        ids.append(request.headers["webhook-id"])
    assert len(ids) == EVENTS, f"{len(ids)} arrived for {EVENTS} replayed deliveries"
    assert set(ids) == {webhook_id_for(ep.tenant, event_id) for event_id in ep.event_ids}


def test_a_replay_after_recovery_delivers_each_dead_delivery_exactly_once_more(
    stack: Stack, endpoint: Endpoint
) -> None:
    dry = subprocess.run(
        [
            *HOOKLINE,
            "replay",
            "start",
            "--subscription",
            endpoint.subscription,
            "--dry-run",
            "-o",
            "json",
        ],
        env=stack.env,
        capture_output=True,
        timeout=60,
    )
    assert json.loads(dry.stdout)["by_reason"] == {"max_attempts": EVENTS}
    assert (
        count(stack, endpoint.subscription, DeliveryStatus.DEAD) == EVENTS
    )  # the dry run changed nothing

    proc = replay(stack, "--subscription", endpoint.subscription, "--rate", "unlimited")
    assert finish(proc) == 0

    assert_each_arrived_once_more(stack, endpoint)


def test_two_replays_at_once_on_overlapping_sets_send_each_delivery_once(
    stack: Stack, endpoint: Endpoint
) -> None:
    started = utcnow()
    # Paced, so the second starts while the first is still going: its set (whatever was
    # still dead when it started) overlaps what the first is claiming.
    first = replay(stack, "--subscription", endpoint.subscription, "--rate", "25/s")
    second = replay(stack, "--tenant", endpoint.tenant, "--all", "--rate", "25/s")
    assert (finish(first), finish(second)) == (0, 0)

    assert_each_arrived_once_more(stack, endpoint)
    with stack.sessions() as session:
        jobs = session.scalars(select(ReplayJob).where(ReplayJob.created_at >= started)).all()
    assert sum(job.done for job in jobs) == EVENTS
    assert all(job.done + job.skipped == job.total for job in jobs)


def kill_mid_way(stack: Stack, ep: Endpoint) -> str:
    """Start a paced replay of the endpoint's dead letters, kill -9 it mid-way: its job id."""
    proc = replay(stack, "--subscription", ep.subscription, "--rate", "40/s")
    job_id = None
    deadline = time.monotonic() + 30
    while job_id is None and time.monotonic() < deadline:
        with stack.sessions() as session:
            job = session.scalars(
                select(ReplayJob).where(
                    ReplayJob.filters["subscription"].as_string() == ep.subscription
                )
            ).first()
            job_id = job.id if job is not None and job.done > 0 else None
        time.sleep(0.05)
    assert job_id is not None, "the replay never started"
    time.sleep(0.7)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    with stack.sessions() as session:
        killed = session.get(ReplayJob, job_id)
        assert killed is not None and 0 < killed.done < EVENTS, "killed too late to test a resume"
    return job_id


def job_state(stack: Stack, job_id: str) -> tuple[str, int]:
    with stack.sessions() as session:
        job = session.get(ReplayJob, job_id)
        assert job is not None
        return job.state, job.done


def test_a_killed_replay_resumes_without_losing_or_repeating_a_delivery(
    stack: Stack, endpoint: Endpoint
) -> None:
    job_id = kill_mid_way(stack, endpoint)

    # The dispatcher's resumer may take the job first: then --resume is refused as busy
    # (`hookline: job_busy: ...`, exit status 2) and the resumer finishes the job.
    log = stack.logs / "resume.log"
    status = finish(replay(stack, "--resume", job_id, log=log))
    said = log.read_text()
    assert status == 0 or (status == 2 and "hookline: job_busy:" in said), said

    wait(lambda: job_state(stack, job_id)[0] == "completed", "the job completed", stack)
    assert_each_arrived_once_more(stack, endpoint)
    assert job_state(stack, job_id) == ("completed", EVENTS)


def test_a_killed_replay_is_resumed_by_a_dispatcher_without_manual_action(
    stack: Stack, endpoint: Endpoint
) -> None:
    job_id = kill_mid_way(stack, endpoint)

    wait(lambda: job_state(stack, job_id)[0] == "completed", "the job resumed and completed", stack)

    assert_each_arrived_once_more(stack, endpoint)
    assert job_state(stack, job_id) == ("completed", EVENTS)
    assert "resumed replay job" in stack.services.log("dispatcher", tail=10**8)
    with stack.sessions() as session:  # who resumed it: the dispatcher, once
        resumed = session.scalars(
            select(AuditEntry).where(
                AuditEntry.action == "replay.resume", AuditEntry.resource_id == job_id
            )
        ).all()
    assert [(e.actor, e.details["was"]) for e in resumed] == [("dispatcher", "running")]
