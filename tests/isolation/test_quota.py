"""`Quota`: the per-tenant rate windows two API replicas share, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from common.db.ratewindow import Window
from hookline.api.quota import Quota

NOW_S = 1_800_000_000.25  # a fixed clock: every take falls in one window


def test_two_replicas_together_admit_exactly_a_windows_allowance(
    sessions: sessionmaker[Session],
) -> None:
    replicas = [Quota(sessions, clock=lambda: NOW_S) for _ in range(2)]
    window = Window.per_second(200)  # chunks of 10
    admitted = [0]
    lock = threading.Lock()

    def spend(quota: Quota) -> None:
        while quota.take_now("ten_a", "ingest", 1, window) is None:
            with lock:
                admitted[0] += 1

    threads = [threading.Thread(target=spend, args=(replicas[i % 2],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert admitted[0] == 200  # no overshoot; and nothing stranded while takers remain
    assert replicas[0].take_now("ten_b", "ingest", 1, window) is None  # its own window


def test_a_lease_answers_on_the_loop_and_refuses_with_the_time_left(
    sessions: sessionmaker[Session],
) -> None:
    quota = Quota(sessions, clock=lambda: NOW_S)
    window = Window.per_second(4)  # a chunk of 1

    async def takes() -> list[float | None]:
        return [await quota.take("ten_a", "ingest", 1, window) for _ in range(5)]

    answers = asyncio.run(takes())

    assert answers[:4] == [None] * 4
    assert answers[4] == 0.75  # the rest of the one-second window


def test_a_batch_takes_what_it_needs_at_once_or_nothing(sessions: sessionmaker[Session]) -> None:
    quota = Quota(sessions, clock=lambda: NOW_S)
    window = Window.per_second(100)

    assert quota.take_now("ten_a", "ingest", 60, window) is None
    assert quota.take_now("ten_a", "ingest", 60, window) is not None
    assert quota.take_now("ten_a", "ingest", 40, window) is None  # what is left still serves


def test_an_unreachable_database_leaves_ingest_open_for_a_second() -> None:
    def broken() -> Session:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    quota = Quota(broken, clock=lambda: NOW_S)  # type: ignore[arg-type]
    window = Window.per_second(1)

    assert quota.take_now("ten_a", "ingest", 1, window) is None
    assert quota.take_now("ten_a", "ingest", 1, window) is None
