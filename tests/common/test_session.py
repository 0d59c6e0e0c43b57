"""The PostgreSQL engine's pooled connections: pinged only after sitting idle, and the
autocommit that the router's one-statement batches run in."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from common.db import session as db_session
from common.db.session import make_engine, make_sessionmaker, single_statement


def backend(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate(url: str, pid: int) -> None:
    other = make_engine(url)
    with other.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    other.dispose()


def test_a_connection_killed_while_idle_is_replaced_at_checkout(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(postgres_url, pool_size=1)
    first = backend(engine)
    terminate(postgres_url, first)
    monkeypatch.setattr(db_session, "PING_IDLE_S", 0.0)  # idle long enough to be pinged
    second = backend(engine)  # no error: the ping found it dead, the pool reconnected
    assert second != first
    engine.dispose()


def test_a_busy_connection_is_not_pinged_and_a_death_fails_one_statement_only(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_session, "PING_IDLE_S", 3600.0)
    engine = make_engine(postgres_url, pool_size=1)
    pings: list[object] = []
    original = engine.dialect.do_ping

    def counted_ping(connection: Any) -> bool:
        pings.append(connection)
        return bool(original(connection))

    monkeypatch.setattr(engine.dialect, "do_ping", counted_ping)
    first = backend(engine)
    backend(engine)
    assert pings == [], "a connection checked out again at once was pinged"
    terminate(postgres_url, first)
    with pytest.raises(OperationalError) as raised:
        backend(engine)
    assert raised.value.connection_invalidated
    assert backend(engine) != first, "the pool kept the dead connection"
    engine.dispose()


def test_single_statement_commits_each_statement_without_a_transaction(
    postgres_url: str,
) -> None:
    engine = make_engine(postgres_url, pool_size=1)
    sessions = make_sessionmaker(engine)
    with sessions() as session, session.begin():
        single_statement(session)
        status = session.execute(text("SELECT now() = statement_timestamp()")).scalar_one()
        time.sleep(0.01)
        later = session.execute(text("SELECT now() = statement_timestamp()")).scalar_one()
    # In a transaction now() stays at its start; in autocommit each statement is its own.
    assert status is True and later is True
    with sessions() as session, session.begin():
        session.execute(text("SELECT 1"))
        time.sleep(0.01)
        assert session.execute(text("SELECT now() = statement_timestamp()")).scalar_one() is False
    engine.dispose()
