"""A thread's own database connection, for one statement that is atomic alone.

A lone event's batch spent more of the router's CPU in SQLAlchemy's execution layers
(the session, the connection, the compiled cache, the result's metadata) than in its one
statement, and so did a lone outcome's batch in the dispatcher's settler. On PostgreSQL
such a statement (a router writer's batch with nothing to recover; the settler's common
batch) now runs on a DBAPI connection its thread keeps, in autocommit (the statement is
atomic on its own, as `single_statement` has it), taken from the engine's pool so that it
has the engine's connect arguments. Its errors are raised as SQLAlchemy's own, with
`connection_invalidated` as the engine would set it: the caller's judgement of them (a bad
row to split out, or the database away, to retry in place) is the same on either path. A
lost connection is dropped, never handed back to the pool, and the next statement opens
another; one that sat idle `PING_IDLE_S` or more is pinged first, as the pool pings its
own (a database restart or an idle timeout may have killed it unseen).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import Engine, TextClause
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import PoolProxiedConnection

from common.db import session as db_session


class DirectConnection:
    """One thread's connection; not shared between threads."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._error: type[Exception] = engine.dialect.loaded_dbapi.Error
        self._connection: PoolProxiedConnection | None = None
        self._sql: dict[TextClause, str] = {}  # each statement compiled once
        self._used_at = 0.0  # monotonic time its last statement returned

    def run(self, statement: TextClause, parameters: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run `statement` (committed when it returns) and return its rows (none for a
        statement that returns none)."""
        sql = self._sql.get(statement)
        if sql is None:
            sql = self._sql[statement] = str(statement.compile(dialect=self._engine.dialect))
        try:
            connection = self._live()
        except self._error as exc:  # no connection to be had: the database is away
            raise self._raised(exc, sql, parameters, lost=True) from None
        cursor = None
        try:
            cursor = connection.cursor()
            cursor.execute(sql, parameters)
            rows = [tuple(row) for row in cursor.fetchall()] if cursor.description else []
            cursor.close()
            self._used_at = time.monotonic()
            return rows
        except self._error as exc:
            dbapi = connection.dbapi_connection
            lost = self._engine.dialect.is_disconnect(cast(Any, exc), dbapi, cursor) or bool(
                getattr(dbapi, "closed", False)
            )
            if lost:
                self.close()
            raise self._raised(exc, sql, parameters, lost=lost) from None

    def _raised(
        self, exc: Exception, sql: str, parameters: Mapping[str, Any], *, lost: bool
    ) -> DBAPIError:
        """The driver's error as SQLAlchemy would raise it (OperationalError, DataError...)."""
        return cast(
            DBAPIError,
            DBAPIError.instance(
                sql,
                dict(parameters),
                exc,
                self._error,
                hide_parameters=self._engine.hide_parameters,
                connection_invalidated=lost,
                dialect=self._engine.dialect,
            ),
        )

    def close(self) -> None:
        """Close the connection (it never goes back to the pool in autocommit)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.invalidate()
            connection.close()

    def _live(self) -> PoolProxiedConnection:
        connection = self._connection
        if connection is None:
            return self._open()
        if time.monotonic() - self._used_at >= db_session.PING_IDLE_S:
            try:
                self._engine.dialect.do_ping(connection.dbapi_connection)  # type: ignore[arg-type]
            except Exception:  # gone while idle: a new one, and the batch goes on it
                self.close()
                return self._open()
        return connection

    def _open(self) -> PoolProxiedConnection:
        connection = self._engine.raw_connection()
        try:
            connection.dbapi_connection.autocommit = True  # type: ignore[union-attr]
        except BaseException:
            connection.invalidate()
            connection.close()
            raise
        self._connection = connection
        return connection
