"""Engines and sessions. Repositories never commit: the caller owns the transaction."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import Insert


def normalize_url(url: str) -> str:
    """Use psycopg 3 for plain `postgresql://` URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (the API) run beside the writers (router, dispatcher); the busy
    # timeout makes concurrent writers wait instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


# A pooled connection idle this long is pinged before it is handed out again.
PING_IDLE_S = 1.0


def make_engine(url: str, *, pool_size: int = 5, statement_timeout_s: float = 0) -> Engine:
    """An engine on `url`. `statement_timeout_s` (PostgreSQL; 0: none) bounds every
    statement of every transaction on it: see `_bound_statements`."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        # Bound how long a silent network (a blackholed database) can stall a query, so the
        # in-place retries and a SIGTERM drain are not held hostage by one socket.
        connect_args={"connect_timeout": 5, "tcp_user_timeout": 15_000, "keepalives_idle": 10},
    )
    _ping_when_idle(engine)
    if statement_timeout_s > 0:
        _bound_statements(engine, statement_timeout_s)
    return engine


def _bound_statements(engine: Engine, timeout_s: float) -> None:
    """Each transaction starts with `SET LOCAL statement_timeout`: a statement still
    running after `timeout_s` is cancelled (SQLSTATE 57014, `is_statement_timeout`).

    Set per transaction, not per connection: behind PgBouncer in transaction mode a
    session's setting would stay on a server connection that the routers and dispatchers
    then use. It costs one round trip per transaction, so only the API's engine has it.
    """
    setting = f"SET LOCAL statement_timeout = {max(1, round(timeout_s * 1000))}"

    def begun(connection: Any) -> None:
        connection.exec_driver_sql(setting)

    event.listen(engine, "begin", begun)


def without_statement_timeout(session: Session) -> None:
    """Lift the engine's statement timeout for the rest of `session`'s transaction (an
    operation that must finish however much it touches, such as a purge)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL statement_timeout = 0"))


def is_statement_timeout(exc: BaseException) -> bool:
    """Whether a database error is a statement cancelled by its timeout."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) == "57014"


def _ping_when_idle(engine: Engine) -> None:
    """`pool_pre_ping`, but only for a connection that sat in the pool `PING_IDLE_S` or
    more: the one that a database restart or an idle timeout may have killed unseen.

    Pinging every checkout cost a round trip per transaction, a fifth of the router's and
    the settler's time on the database at a thousand a second. A connection in constant use
    that dies meanwhile fails its statement instead; SQLAlchemy then invalidates the pool
    and the callers' `retry_database` runs the transaction again on a fresh connection.
    """
    dialect = engine.dialect

    def checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < PING_IDLE_S:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:  # the pool replaces the connection and checks out again
            raise exc.DisconnectionError(f"pooled connection failed its ping: {error}") from error

    event.listen(engine, "checkin", checked_in)
    event.listen(engine, "checkout", checkout)


def single_statement(session: Session) -> None:
    """Run the session's work in autocommit on PostgreSQL: no BEGIN and COMMIT round
    trips, for a unit of work that is one statement (atomic on its own), or statements
    each of which may commit alone. Call it before the session's first statement.

    A statement whose connection is lost may have committed: the caller must treat that
    as it would a COMMIT that failed.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def insert_ignoring_conflicts(engine_or_dialect: Any, table: Any) -> Insert:
    """`INSERT ... ON CONFLICT DO NOTHING` for the dialect at hand (SQLite or PostgreSQL)."""
    name = getattr(engine_or_dialect, "name", None) or engine_or_dialect.dialect.name
    if name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"unsupported database dialect {name!r}")


def rowcount(result: object) -> int:
    """How many rows an UPDATE or DELETE result touched (0 where the driver cannot say)."""
    return int(getattr(result, "rowcount", 0) or 0)


def until_short(one_batch: Callable[[], int], batch_size: int) -> int:
    """Run `one_batch` (a transaction of its own, touching at most `batch_size` rows) again
    until one touches fewer: what `hookline gc` does with each kind of row. The total."""
    total = 0
    while True:
        touched = one_batch()
        total += touched
        if touched < batch_size:
            return total
