"""The breaker's open circuits in the database (`circuit_states`, migration 0014), so that
the portal shows an endpoint's real circuit state: open on how many of the dispatchers
that are delivering (`dispatchers`, by heartbeat), since when, and when half-open.

The breaker tells every transition to `CircuitLog.note` on the thread that caused it (a
sending thread): a dict write under a lock, never the database. One `CircuitWriter` thread
per connection session writes what was noted every `FLUSH_S` and the dispatcher's
heartbeat every `DISPATCHER_HEARTBEAT_S`. A write that fails (the database away) is kept
and tried again at the next tick; it never stops deliveries. On start the writer puts the
breaker's whole state (rows may have gone while the dispatcher was not delivering); on
stop it removes its rows and its heartbeat.

A dispatcher that died without stopping leaves rows behind: readers ignore them once its
heartbeat is older than `DISPATCHER_LIVE_S`, and any writer deletes them after
`FORGET_AFTER_S`.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from common.background import BackgroundThread
from common.db.models import DISPATCHER_HEARTBEAT_S, CircuitState, DispatcherRow
from common.db.session import rowcount
from common.wire import utcnow
from dispatcher.policy.admission.breaker import Breaker, Transition

log = logging.getLogger(__name__)

FLUSH_S = 1.0
FORGET_AFTER_S = 3600.0


class _Change(NamedTuple):
    open: bool
    opened_at: datetime
    probe_at: datetime


class CircuitLog:
    """The transitions not written yet, the newest per endpoint. Thread-safe."""

    def __init__(self) -> None:
        self.dispatcher_id = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"
        self._pending: dict[str, _Change] = {}
        self._lock = threading.Lock()

    def note(self, transition: Transition) -> None:
        change = _change(transition, utcnow())
        with self._lock:
            self._pending[transition.key] = change

    def take(self) -> dict[str, _Change]:
        with self._lock:
            taken, self._pending = self._pending, {}
        return taken

    def put_back(self, taken: dict[str, _Change]) -> None:
        """Changes that were not written; any noted since are newer and win."""
        with self._lock:
            self._pending = {**taken, **self._pending}


class CircuitWriter(BackgroundThread):
    def __init__(
        self,
        circuits: CircuitLog,
        breaker: Breaker,
        sessionmaker: sessionmaker[Session],
        *,
        heartbeat_s: float = DISPATCHER_HEARTBEAT_S,
    ) -> None:
        super().__init__("hookline-circuits")
        self._log = circuits
        self._breaker = breaker
        self._sessionmaker = sessionmaker
        self._heartbeat_s = heartbeat_s
        self._synced = False
        self._beat_at = float("-inf")
        self._failing = False

    @property
    def _me(self) -> str:
        return self._log.dispatcher_id

    def run(self) -> None:
        while not self.stopping.is_set():
            self.tick()
            self.stopping.wait(FLUSH_S)
        self.forget()

    def tick(self) -> None:
        """Write what changed (everything, the first time) and the heartbeat when due."""
        try:
            # The heartbeat first: a circuit row is never written for a dispatcher without
            # one, so the clean-up of dead dispatchers' rows goes by the heartbeat alone.
            if time.monotonic() - self._beat_at >= self._heartbeat_s:
                self._beat()
            if self._synced:
                self._flush()
            else:
                self._sync()
        except SQLAlchemyError:
            if not self._failing:  # once per outage, not every second
                log.warning("cannot record circuit states; trying again", exc_info=True)
            self._failing = True
        else:
            self._failing = False

    def forget(self) -> None:
        """Remove this dispatcher's rows: it no longer delivers, so holds no circuit."""
        try:
            with self._sessionmaker() as session, session.begin():
                session.execute(delete(CircuitState).where(CircuitState.dispatcher_id == self._me))
                session.execute(delete(DispatcherRow).where(DispatcherRow.id == self._me))
        except SQLAlchemyError:
            log.warning("cannot remove this dispatcher's circuit states", exc_info=True)

    def _sync(self) -> None:
        self._log.take()  # superseded by the breaker's state, read after it
        now = utcnow()
        rows = [_row(self._me, t.key, _change(t, now)) for t in self._breaker.open_circuits()]
        with self._sessionmaker() as session, session.begin():
            session.execute(delete(CircuitState).where(CircuitState.dispatcher_id == self._me))
            if rows:
                session.execute(insert(CircuitState), rows)
        self._synced = True

    def _flush(self) -> None:
        taken = self._log.take()
        if not taken:
            return
        try:
            with self._sessionmaker() as session, session.begin():
                session.execute(
                    delete(CircuitState).where(
                        CircuitState.dispatcher_id == self._me,
                        CircuitState.subscription_id.in_(sorted(taken)),
                    )
                )
                rows = [_row(self._me, key, c) for key, c in taken.items() if c.open]
                if rows:
                    session.execute(insert(CircuitState), rows)
        except SQLAlchemyError:
            self._log.put_back(taken)
            raise

    def _beat(self) -> None:
        now = utcnow()
        with self._sessionmaker() as session, session.begin():
            seen = session.execute(
                update(DispatcherRow).where(DispatcherRow.id == self._me).values(seen_at=now)
            )
            if rowcount(seen) == 0:
                # New, or forgotten as dead after a long pause: its circuits may be gone too.
                session.add(DispatcherRow(id=self._me, started_at=now, seen_at=now))
                self._synced = False
            dead = DispatcherRow.seen_at < now - timedelta(seconds=FORGET_AFTER_S)
            gone = select(DispatcherRow.id).where(dead)
            session.execute(delete(CircuitState).where(CircuitState.dispatcher_id.in_(gone)))
            session.execute(delete(DispatcherRow).where(dead))
        self._beat_at = time.monotonic()


def _change(transition: Transition, now: datetime) -> _Change:
    return _Change(
        transition.open,
        now - timedelta(seconds=transition.open_for_s),
        now + timedelta(seconds=transition.probe_in_s),
    )


def _row(dispatcher_id: str, subscription_id: str, change: _Change) -> dict[str, object]:
    return {
        "subscription_id": subscription_id,
        "dispatcher_id": dispatcher_id,
        "opened_at": change.opened_at,
        "probe_at": change.probe_at,
    }
