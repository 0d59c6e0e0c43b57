"""Reconnect backoff and in-place database retries."""

from __future__ import annotations

import logging
import threading

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from common.errors import ConnectionLostError
from common.service import database_away, retry_database, run_until_stopped


def away() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("server closed the connection"))


def test_retry_database_waits_out_an_outage_in_place() -> None:
    calls = []

    def write() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise away()
        return "committed"

    assert retry_database(write) == "committed"
    assert len(calls) == 3


def test_retry_database_does_not_retry_a_data_error() -> None:
    calls = []

    def write() -> None:
        calls.append(1)
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))

    with pytest.raises(IntegrityError):
        retry_database(write)
    assert len(calls) == 1
    assert not database_away(IntegrityError("INSERT", {}, Exception("duplicate key")))


def test_retry_database_waits_in_place_for_a_pool_with_no_connection_free() -> None:
    calls = []

    def write() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise PoolTimeout("QueuePool limit of size 5 overflow 5 reached")
        return "written"

    assert retry_database(write) == "written"
    assert len(calls) == 3


def test_retry_database_gives_up_once_abandoned() -> None:
    abandon = threading.Event()
    calls = []

    def write() -> None:
        calls.append(1)
        abandon.set()
        raise away()

    with pytest.raises(OperationalError):
        retry_database(write, abandon=abandon)
    assert len(calls) == 1


def reconnect_attempts(caplog: pytest.LogCaptureFixture, healthy_after_s: float) -> list[int]:
    stop = threading.Event()
    sessions = []

    def work(stop: threading.Event) -> None:
        sessions.append(1)
        if len(sessions) == 4:
            stop.set()
            return
        raise ConnectionLostError("broker went away")

    with caplog.at_level(logging.WARNING, logger="common.service"):
        run_until_stopped(work, stop, max_wait_s=0.01, healthy_after_s=healthy_after_s)
    reconnects = [r for r in caplog.records if r.msg == "dependency unavailable, reconnecting"]
    return [int(getattr(r, "attempt", 0)) for r in reconnects]


def test_backoff_grows_while_sessions_fail_at_once(caplog: pytest.LogCaptureFixture) -> None:
    assert reconnect_attempts(caplog, healthy_after_s=3600.0) == [1, 2, 3]


def test_backoff_resets_after_a_healthy_session(caplog: pytest.LogCaptureFixture) -> None:
    assert reconnect_attempts(caplog, healthy_after_s=0.0) == [1, 1, 1]
