"""The delivery engine under faults: real `hookline` processes against real RabbitMQ and
PostgreSQL (private instances where a scenario restarts them), a scripted real receiver on
127.0.0.1, and the ledger check of `faultrig.check` at the end of every scenario.

The TCP-level faults (broker resets, a database blackhole, latency) are in `test_faults.py`.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from common.db.models import Attempt, Delivery, Subscription
from common.db.session import make_engine
from common.db.statuses import DeliveryStatus, SubscriptionStatus
from common.transport import Outgoing, open_transport
from common.transport import topology as tp
from hookline.receiver import Receiver, Reply
from tests.instances import private_postgres, private_rabbit
from tests.integration.faultrig import (
    MAX_ATTEMPTS,
    Rig,
    Row,
    check,
    dispatcher_args,
    engine_env,
    logs_dir,
    publish,
    start_services,
    wait_until,
)
from tests.processes import Services
from tests.services import require_rabbitmq, temporary_database, temporary_vhost

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

REFUSED_EVERY = 100  # these events are answered 500 every time, so some end dead


def mostly_ok(_path: str, n: int, _copy: int) -> Reply:
    return Reply(500) if n % REFUSED_EVERY == 0 else Reply(200)


def dead_refused_only(rig: Rig) -> None:
    """Only the always-refused events are dead, each after every attempt of the schedule."""
    current = check(rig)
    dead = {r.event_id: r for r in current if r.status == DeliveryStatus.DEAD}
    refused = {e for e, n in rig.sent.items() if n % REFUSED_EVERY == 0 and e in rig.accepted}
    assert set(dead) == refused, "a healthy event ended dead"
    assert all(r.attempts == MAX_ATTEMPTS for r in dead.values())


def stopped_cleanly(rig: Rig) -> None:
    assert all(code is None for code in rig.services.alive().values()), rig.output()
    codes = rig.services.stop()
    assert set(codes.values()) == {0}, (codes, rig.output())


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[tuple[str, str]]:
    with temporary_vhost() as broker_url, temporary_database() as database_url:
        yield broker_url, database_url


def test_kill_9_of_dispatchers_and_the_router_mid_run_loses_nothing(
    shared: tuple[str, str], tmp_path: Path
) -> None:
    broker_url, database_url = shared
    services = Services(engine_env(broker_url, database_url), logs_dir(tmp_path))
    with Receiver() as receiver:
        rig = Rig(broker_url, database_url, receiver, services)
        receiver.respond = rig.respond(mostly_ok)
        rig.subscribe(["/a", "/b"])
        try:
            start_services(rig, dispatchers=2)
            publisher = publish(rig, 1500, batch=50, pause_s=0.15)
            for victim in ("dispatcher-1", "dispatcher-2", "router", "dispatcher-1"):
                wait_until(lambda: False, 1.5)
                args = ("router",) if victim == "router" else dispatcher_args()
                rig.restart(victim, *args)
            publisher.join(120)
            assert not publisher.is_alive() and len(rig.accepted) == 1500
            dead_refused_only(rig)
            stopped_cleanly(rig)
        finally:
            services.kill()


def test_a_rabbitmq_restart_mid_run_loses_nothing(tmp_path: Path) -> None:
    require_rabbitmq()
    with private_rabbit(tmp_path / "rabbit") as rabbit, temporary_database() as database_url:
        services = Services(engine_env(rabbit.url, database_url), logs_dir(tmp_path))
        with Receiver() as receiver:
            rig = Rig(rabbit.url, database_url, receiver, services)
            receiver.respond = rig.respond(mostly_ok)
            rig.subscribe(["/a"])
            try:
                start_services(rig, dispatchers=1)
                publisher = publish(rig, 600, batch=25, pause_s=0.1)
                time.sleep(2.0)
                rabbit.restart()
                publisher.join(120)
                assert not publisher.is_alive() and len(rig.accepted) == 600
                dead_refused_only(rig)
                stopped_cleanly(rig)
            finally:
                services.kill()


def test_a_postgresql_restart_mid_run_loses_nothing(tmp_path: Path) -> None:
    with temporary_vhost() as broker_url, private_postgres() as postgres:
        services = Services(engine_env(broker_url, postgres.url), logs_dir(tmp_path))
        with Receiver() as receiver:
            rig = Rig(broker_url, postgres.url, receiver, services)
            receiver.respond = rig.respond(mostly_ok)
            rig.subscribe(["/a"])
            try:
                start_services(rig, dispatchers=1)
                publisher = publish(rig, 600, batch=25, pause_s=0.1)
                time.sleep(2.0)
                postgres.stop()
                time.sleep(4.0)  # an outage, not a blip: both services wait it out
                postgres.start()
                publisher.join(120)
                assert not publisher.is_alive() and len(rig.accepted) == 600
                dead_refused_only(rig)
                stopped_cleanly(rig)
            finally:
                services.kill()


HOSTILE = ("/flaky", "/reset", "/timeout", "/429", "/redirect", "/gone", "/always500",
           "/drip", "/huge")  # fmt: skip


def hostile(path: str, _n: int, copy: int) -> Reply:
    """Each path misbehaves its own way; the intermittent ones recover on the next copy."""
    first = copy == 1
    if path == "/flaky":
        return Reply(500 if copy % 2 else 200)
    if path == "/reset":
        return Reply(reset=first)
    if path == "/timeout":
        return Reply(200, delay_s=3.0 if first else 0.0)  # past the 2 s deadline
    if path == "/429":
        return Reply(429, headers={"retry-after": "1"}) if first else Reply(200)
    if path == "/redirect":
        return Reply(302, headers={"location": "/elsewhere"})
    if path == "/gone":
        return Reply(410)
    if path == "/always500":
        return Reply(500)
    if path == "/drip":
        return Reply(200, b"x" * 10, drip_s=1.0) if first else Reply(200)
    if path == "/huge":
        return Reply(200, b"y" * (2 * 1024 * 1024))
    return Reply(404)


def put_poison(broker_url: str) -> list[bytes]:
    """Undecodable messages straight onto the events and deliveries queues."""
    bodies = [b"\xff\xfe not json", b'{"id": "evt_x", "tenant": 42}', b'{"delivery_id": 1}']
    transport = open_transport(broker_url)
    try:
        transport.declare(tp.build((1.0,)))
        transport.publish(
            [
                Outgoing(tp.EVENTS, "content.updated", bodies[0], {}),
                Outgoing(tp.EVENTS, "content.updated", bodies[1], {}),
                Outgoing(tp.DELIVERIES, tp.DELIVERY_ROUTING_KEY, bodies[2], {}),
            ]
        )
    finally:
        transport.close()
    return bodies


def poisoned(broker_url: str, database_url: str) -> int:
    """Poison messages kept: still in the queue, or drained into `poison_messages`."""
    transport = open_transport(broker_url)
    try:
        count = transport.queue_depth(tp.POISON)
    finally:
        transport.close()
    engine = make_engine(database_url)
    try:
        if "poison_messages" in inspect(engine).get_table_names():
            with engine.connect() as db:
                count += db.scalar(text("SELECT count(*) FROM poison_messages")) or 0
    finally:
        engine.dispose()
    return count


def test_a_hostile_receiver_and_poison_messages(shared: tuple[str, str], tmp_path: Path) -> None:
    broker_url, database_url = shared
    services = Services(engine_env(broker_url, database_url), logs_dir(tmp_path))
    with Receiver() as receiver:
        rig = Rig(broker_url, database_url, receiver, services)
        receiver.respond = rig.respond(hostile)
        rig.subscribe(list(HOSTILE))
        try:
            start_services(rig, dispatchers=1, concurrency=16)
            bodies = put_poison(broker_url)
            publish(rig, 12, batch=12).join(30)
            assert len(rig.accepted) == 12
            current = check(rig)
            assert wait_until(lambda: poisoned(broker_url, database_url) >= len(bodies), 20)
            stopped_cleanly(rig)
        finally:
            services.kill()

    sub = rig.subscriptions
    by_path: dict[str, list[Row]] = {path: [] for path in HOSTILE}
    for row in current:
        by_path[next(p for p, s in sub.items() if s == row.subscription_id)].append(row)
    for path in ("/flaky", "/reset", "/timeout", "/429", "/drip", "/huge"):
        assert {r.status for r in by_path[path]} == {"succeeded"}, (path, by_path[path])
    # Always 500: dead after exactly the configured attempts, each one a request.
    assert all(
        (r.status, r.attempt_rows) == (DeliveryStatus.DEAD, MAX_ATTEMPTS)
        for r in by_path["/always500"]
    )
    assert all(
        rig.copies[("/always500", r.event_id)] == MAX_ATTEMPTS for r in by_path["/always500"]
    )
    # A redirect is a failed attempt, never followed.
    assert all(
        (r.status, r.dead_reason) == (DeliveryStatus.DEAD, "max_attempts")
        for r in by_path["/redirect"]
    )
    assert "/elsewhere" not in {request.path for request in rig.receiver.received}
    # 410 disables: every delivery of the subscription ends dead as endpoint_disabled.
    assert {(r.status, r.dead_reason) for r in by_path["/gone"]} == {
        (DeliveryStatus.DEAD, "endpoint_disabled")
    }
    engine = make_engine(database_url)
    try:
        with engine.connect() as db:
            status = db.scalar(select(Subscription.status).where(Subscription.id == sub["/gone"]))
            huge = db.scalars(
                select(Attempt.response_body)
                .join(Delivery, Delivery.id == Attempt.delivery_id)
                .where(Delivery.subscription_id == sub["/huge"])
            ).all()
    finally:
        engine.dispose()
    assert status == SubscriptionStatus.DISABLED
    assert huge and all(body is not None and len(body) <= 4096 for body in huge)


def test_the_rate_limit_holds_across_three_dispatchers_within_ten_percent(
    shared: tuple[str, str], tmp_path: Path
) -> None:
    broker_url, database_url = shared
    rate, events = 20.0, 200
    env = engine_env(broker_url, database_url, HOOKLINE_RETRY_SCHEDULE="500ms,1s,1s")
    services = Services(env, logs_dir(tmp_path))
    with Receiver() as receiver:
        rig = Rig(broker_url, database_url, receiver, services)
        receiver.respond = rig.respond(lambda _p, _n, _c: Reply(200))
        rig.subscribe(["/limited"], rate_limit_per_s=rate)
        try:
            start_services(rig, dispatchers=3)
            publish(rig, events, batch=100, pause_s=0).join(30)
            check(rig)
            stopped_cleanly(rig)
        finally:
            services.kill()
    times = sorted(r.received_at for r in rig.receiver.received)
    assert len(times) == events
    # The first window may be partial: measure from the second one on.
    start = int(times[0]) + 1
    measured = [t for t in times if t >= start]
    span_s = int(measured[-1]) - start  # whole windows only
    in_span = sum(1 for t in measured if t < start + span_s)
    observed = in_span / span_s
    per_window = [sum(1 for t in times if int(t) == w) for w in range(start, start + span_s)]
    print(f"\nrate limit {rate}/s across 3 dispatchers: {observed:.2f}/s, per window {per_window}")
    assert abs(observed - rate) <= 0.1 * rate
    # A grant at the very end of a window may arrive a moment into the next one, so one
    # window may show a few more than its allowance; the next shows fewer.
    assert max(per_window) <= 1.2 * rate, "a window went well over its allowance"


def test_a_second_sigterm_exits_at_once(shared: tuple[str, str], tmp_path: Path) -> None:
    broker_url, database_url = shared
    env = engine_env(
        broker_url, database_url, HOOKLINE_REQUEST_TIMEOUT_S="30", HOOKLINE_CONNECT_TIMEOUT_S="30"
    )
    services = Services(env, logs_dir(tmp_path))
    with Receiver() as receiver:
        rig = Rig(broker_url, database_url, receiver, services)
        receiver.respond = rig.respond(lambda _p, _n, _c: Reply(200, delay_s=25.0))
        rig.subscribe(["/hang"])
        try:
            start_services(rig, dispatchers=1)
            publish(rig, 3, batch=3).join(30)
            assert receiver.wait_for(3, 30), rig.output()
            proc = services.procs["dispatcher-1"]
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(2)  # draining: the hanging requests are still in flight
            proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            code = proc.wait(10)
            assert time.monotonic() - started < 3 and code == 128 + signal.SIGTERM, rig.output()
        finally:
            services.kill()
