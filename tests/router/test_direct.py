"""A thread's own connection (`common.db.direct`, a router writer's or the settler's) against
a real PostgreSQL: what it commits, and how its errors read to the router (a bad row, or
the database away) and to `retry_database`, which both services wait an outage out with."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from common.db import session as db_session
from common.db.direct import DirectConnection
from common.db.session import make_engine
from common.service import database_away
from router.batches import describe, is_data_error, refused
from tests.faultproxy import FaultProxy

PID = text("SELECT pg_backend_pid()")
INSERT = text("INSERT INTO direct_probe (n) VALUES (CAST(:n AS int)) RETURNING n")


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE IF NOT EXISTS direct_probe (n int)"))
        connection.execute(text("TRUNCATE direct_probe"))
    yield engine
    engine.dispose()


def terminate(engine: Engine, pid: int) -> None:
    with engine.connect() as connection:
        assert connection.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()


def test_a_statement_is_committed_when_it_returns(engine: Engine) -> None:
    direct = DirectConnection(engine)
    try:
        assert direct.run(INSERT, {"n": "7"}) == [(7,)]
        with engine.connect() as other:  # another connection sees it: no transaction left open
            assert other.execute(text("SELECT n FROM direct_probe")).scalars().all() == [7]
    finally:
        direct.close()


def test_a_refused_value_is_a_data_error_and_the_connection_goes_on(engine: Engine) -> None:
    direct = DirectConnection(engine)
    try:
        ((pid,),) = direct.run(PID, {})
        with pytest.raises(DataError) as refusal:
            direct.run(INSERT, {"n": "not a number"})
        assert is_data_error(refusal.value) and refused(refusal.value)  # split out, poisoned
        # What the router logs of it names the error, never the refused value.
        assert describe(refusal.value) == "InvalidTextRepresentation (SQLSTATE 22P02)"
        assert direct.run(PID, {}) == [(pid,)]  # the same connection, still usable
    finally:
        direct.close()


def test_a_connection_killed_under_a_statement_reads_as_the_database_away(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_session, "PING_IDLE_S", 3600.0)  # no ping: the statement finds it
    direct = DirectConnection(engine)
    try:
        ((pid,),) = direct.run(PID, {})
        terminate(engine, pid)
        with pytest.raises(OperationalError) as lost:
            direct.run(INSERT, {"n": "1"})
        assert lost.value.connection_invalidated and not refused(lost.value)  # retried
        ((again,),) = direct.run(PID, {})  # the next statement opens a new connection
        assert again != pid
    finally:
        direct.close()


def test_a_connection_killed_while_idle_is_replaced_before_the_statement(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_session, "PING_IDLE_S", 0.0)  # every statement follows an idle spell
    direct = DirectConnection(engine)
    try:
        ((pid,),) = direct.run(PID, {})
        terminate(engine, pid)
        assert direct.run(INSERT, {"n": "2"}) == [(2,)]  # no error: pinged, then replaced
        ((again,),) = direct.run(PID, {})
        assert again != pid
    finally:
        direct.close()


def test_a_database_that_takes_no_connection_reads_as_away_and_is_waited_out(
    postgres_url: str,
) -> None:
    # The connect itself fails (the pool raises the driver's own error there): it must read
    # as the database away, or the settler stops instead of retrying in place.
    url = make_url(postgres_url)
    with FaultProxy("127.0.0.1", url.port or 5432) as proxy:
        engine = make_engine(url.set(host="127.0.0.1", port=proxy.port).render_as_string(False))
        direct = DirectConnection(engine)
        try:
            proxy.refuse()
            with pytest.raises(OperationalError) as away:
                direct.run(PID, {})
            assert database_away(away.value) and not refused(away.value)
            proxy.heal()
            ((pid,),) = direct.run(PID, {})  # the outage over, the next statement connects
            assert pid > 0
        finally:
            direct.close()
            engine.dispose()


def test_a_pool_with_no_connection_free_is_not_a_batch_refused_for_its_rows(
    postgres_url: str,
) -> None:
    # A writer opening its connection from a pool whose every connection is taken waits
    # out the pool's timeout; that must not read as a bad batch (split, then poisoned).
    engine = create_engine(postgres_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    direct = DirectConnection(engine)
    try:
        # The pool's one connection, taken: the writer's connect times out.
        with engine.connect(), pytest.raises(PoolTimeout) as exhausted:
            direct.run(PID, {})
        assert not refused(exhausted.value) and database_away(exhausted.value)  # waits
        ((pid,),) = direct.run(PID, {})  # handed back: the next statement connects
        assert pid > 0
    finally:
        direct.close()
        engine.dispose()
