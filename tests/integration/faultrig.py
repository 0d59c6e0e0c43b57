"""The rig of the delivery-engine fault suite: real `hookline` processes, a scripted real
receiver, a publisher that keeps a ledger, and the one check every scenario ends with.

The ledger holds every event the publisher sent (`sent`) and those whose confirm came back
(`accepted`). Once the system is quiet, for every accepted event and subscription: the
receiver answered 2xx to a correctly signed copy, or the delivery row is `dead` with at
least one attempt; no row is left unfinished; nothing arrived that was not sent, or at a
path no subscription has; every copy of one event to one subscription has the same
`webhook-id`.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from standardwebhooks import Webhook

from common.db import migrate
from common.db.models import Attempt, Delivery
from common.db.session import make_engine, make_sessionmaker
from common.db.statuses import FINAL_STATUSES, DeliveryStatus
from common.secretbox import SecretBox
from common.settings import Settings
from common.wire import webhook_id_for
from hookline.receiver import Received, Receiver, Reply
from producer import Producer
from tests import builders
from tests.processes import Services

SECRET_KEY = "iXLJKtO2FjNNYZ4qFN46Vaz97vqMMshG4JtDvmJktts"
SCHEDULE = "1s,1s,1s"
MAX_ATTEMPTS = 4
QUIET_TIMEOUT_S = 120.0
LATE_DUPLICATE_S = 1.5

Script = Callable[[str, int, int], Reply]  # (path, event number, copy number) -> reply


def engine_env(broker_url: str, database_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "HOOKLINE_BROKER_URL": broker_url,
        "HOOKLINE_DATABASE_URL": database_url,
        "HOOKLINE_SECRET_KEY": SECRET_KEY,
        "HOOKLINE_ALLOW_PRIVATE_TARGETS": "true",
        "HOOKLINE_ALLOW_HTTP": "true",
        "HOOKLINE_RETRY_SCHEDULE": SCHEDULE,
        "HOOKLINE_SUBSCRIPTION_REFRESH_S": "0.5",
        "HOOKLINE_CONNECT_TIMEOUT_S": "1",
        "HOOKLINE_REQUEST_TIMEOUT_S": "2",
        # Off: once only the always-refused deliveries are left, an open circuit would let
        # one probe out per open period. The breaker's own tests are in tests/dispatcher.
        "HOOKLINE_CIRCUIT_FAILURE_THRESHOLD": "1000",
        "HOOKLINE_LOG_FORMAT": "json",
        **extra,
    }


@dataclass
class Rig:
    broker_url: str
    database_url: str
    receiver: Receiver
    services: Services
    tenant: str = ""
    secrets: dict[str, str] = field(default_factory=dict)  # path -> secret
    subscriptions: dict[str, str] = field(default_factory=dict)  # path -> subscription id
    sent: dict[str, int] = field(default_factory=dict)  # event id -> number
    webhook_ids: dict[str, str] = field(default_factory=dict)  # webhook-id -> event id
    accepted: set[str] = field(default_factory=set)
    answered_ok: set[tuple[str, str]] = field(default_factory=set)  # (path, event id)
    copies: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    lock: threading.Lock = field(default_factory=threading.Lock)
    generation: int = 0

    def output(self) -> str:
        return self.services.logs_of_all()

    def arrived(self) -> set[tuple[str, str]]:
        """(event id, subscription id) of every copy the receiver answered 2xx."""
        with self.lock:
            answered = set(self.answered_ok)
        return {(event_id, self.subscriptions[path]) for path, event_id in answered}

    def respond(self, script: Script) -> Callable[[Received], Reply]:
        """A receiver callback that runs `script` and remembers what it answered 2xx."""

        def answer(request: Received) -> Reply:
            event_id = self.webhook_ids.get(request.headers.get("webhook-id", ""), "")
            n = json.loads(request.body)["data"]["n"]
            with self.lock:
                self.copies[(request.path, event_id)] += 1
                copy = self.copies[(request.path, event_id)]
            reply = script(request.path, n, copy)
            if 200 <= reply.status <= 299 and not reply.reset and reply.drip_s == 0:
                with self.lock:
                    self.answered_ok.add((request.path, event_id))
            return reply

        return answer

    def subscribe(self, paths: list[str], **extra: Any) -> None:
        migrate.upgrade(self.database_url)
        engine = make_engine(self.database_url)
        try:
            with make_sessionmaker(engine)() as session, session.begin():
                tenant = builders.tenant(session, name="site-a")
                self.tenant = tenant.id
                for path in paths:
                    sub, secret = builders.subscription(
                        session, tenant.id, f"{self.receiver.url}{path}",
                        event_types=["content.*"], box=SecretBox(SECRET_KEY), **extra,
                    )  # fmt: skip
                    self.secrets[path], self.subscriptions[path] = secret, sub.id
        finally:
            engine.dispose()

    def restart(self, name: str, *args: str) -> None:
        """kill -9 a service and start it again under a new log name."""
        proc = self.services.procs.pop(name)
        proc.kill()
        proc.wait(10)
        self.generation += 1
        self.services.start(f"{name}", *args)


def publish(rig: Rig, count: int, *, batch: int = 50, pause_s: float = 0.05,
            start: int = 0) -> threading.Thread:  # fmt: skip
    """Publish `count` events on a thread; a batch whose confirm is lost is sent again with
    the same ids (the router de-duplicates), after a reconnect."""
    settings = Settings(broker_url=rig.broker_url, retry_schedule=SCHEDULE)

    def run() -> None:
        producer: Producer | None = None
        for first in range(start, start + count, batch):
            numbers = range(first, min(first + batch, start + count))
            events = [
                {"id": f"evt_f{n:06d}_{rig.tenant[-6:]}", "tenant": rig.tenant,
                 "type": "content.updated", "data": {"n": n}}
                for n in numbers
            ]  # fmt: skip
            for event in events:
                rig.sent[str(event["id"])] = int(event["data"]["n"])  # type: ignore[index]
                rig.webhook_ids[webhook_id_for(rig.tenant, str(event["id"]))] = str(event["id"])
            deadline = time.monotonic() + 90
            while True:
                try:
                    producer = producer or Producer(settings)
                    ids = producer.publish_batch(events)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    if producer is not None:
                        with contextlib.suppress(Exception):  # the broker is away
                            producer.close()
                    producer = None
                    time.sleep(0.5)
            rig.accepted.update(ids)
            time.sleep(pause_s)
        if producer is not None:
            producer.close()

    thread = threading.Thread(target=run, name="publisher", daemon=True)
    thread.start()
    return thread


@dataclass(frozen=True)
class Row:
    event_id: str
    subscription_id: str
    status: str
    attempts: int  # the delivery's attempt counter
    attempt_rows: int
    dead_reason: str | None


def rows(rig: Rig) -> list[Row]:
    engine = make_engine(rig.database_url)
    try:
        with engine.connect() as db:
            counts = (
                select(Attempt.delivery_id, func.count().label("n"))
                .group_by(Attempt.delivery_id)
                .subquery()
            )
            result = db.execute(
                select(
                    Delivery.event_id, Delivery.subscription_id, Delivery.status,
                    Delivery.attempts, func.coalesce(counts.c.n, 0), Delivery.dead_reason,
                ).outerjoin(counts, counts.c.delivery_id == Delivery.id)
            )  # fmt: skip
            return [Row(*r) for r in result.tuples()]
    finally:
        engine.dispose()


def wait_until(condition: Callable[[], bool], timeout_s: float, step_s: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step_s)
    return condition()


def check(rig: Rig, *, quiet_timeout_s: float = QUIET_TIMEOUT_S) -> dict[Row, None]:
    """Wait for quiet, then check the ledger (see the module docstring). The rows, by pair."""
    by_path = {sub: path for path, sub in rig.subscriptions.items()}

    def done(current: list[Row]) -> bool:
        finished = {(r.event_id, r.subscription_id) for r in current if r.status in FINAL_STATUSES}
        unfinished = [r for r in current if r.status not in FINAL_STATUSES]
        pairs = {(e, s) for e in rig.accepted for s in rig.subscriptions.values()}
        arrived = rig.arrived()
        # Dead with an attempt: a row a disable ended waits for its message's refusal.
        dead = {
            (r.event_id, r.subscription_id)
            for r in current
            if r.status == DeliveryStatus.DEAD and r.attempt_rows >= 1
        }
        return not unfinished and pairs <= finished and pairs <= arrived | dead

    started = time.monotonic()
    assert wait_until(lambda: done(rows(rig)), quiet_timeout_s, 0.5), (
        f"not quiet after {quiet_timeout_s} s: {len(rig.accepted)} accepted, "
        f"{rig.receiver.count} received\n{rig.output()}"
    )
    quiet_after_s = time.monotonic() - started
    time.sleep(LATE_DUPLICATE_S)
    current = rows(rig)
    assert [r for r in current if r.status not in FINAL_STATUSES] == []

    ids: dict[tuple[str, int], set[str]] = defaultdict(set)
    for request in rig.receiver.received:
        assert request.path in rig.secrets, f"a request to an unknown path {request.path}"
        payload = Webhook(rig.secrets[request.path]).verify(request.body, request.headers)
        webhook_id = request.headers["webhook-id"]
        event_id = rig.webhook_ids.get(webhook_id, "")
        assert event_id in rig.sent, f"received an event that was never sent: {webhook_id}"
        assert payload["data"] == {"n": rig.sent[event_id]}
        ids[(request.path, rig.sent[event_id])].add(webhook_id)
    assert all(len(found) == 1 for found in ids.values()), "a duplicate changed its webhook-id"

    arrived = rig.arrived()
    for row in current:
        if (row.event_id, row.subscription_id) in arrived or row.event_id not in rig.accepted:
            continue
        assert row.status == DeliveryStatus.DEAD, f"{row} neither arrived nor is dead"
        assert row.attempt_rows >= 1, f"{row} is dead without an attempt ({by_path})"
    print(f"\nquiet after {quiet_after_s:.1f} s; {len(rig.accepted)} events accepted, "
          f"{rig.receiver.count} requests received")  # fmt: skip
    return dict.fromkeys(current)


def start_services(rig: Rig, dispatchers: int, *, concurrency: int = 8) -> None:
    rig.services.start("router", "router")
    for n in range(1, dispatchers + 1):
        rig.services.start(f"dispatcher-{n}", "dispatcher", "--concurrency", str(concurrency))


def dispatcher_args(concurrency: int = 8) -> tuple[str, ...]:
    return ("dispatcher", "--concurrency", str(concurrency))


def logs_dir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path
