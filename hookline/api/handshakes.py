"""Where the API reaches a tenant's endpoint: off the request pool, bounded per tenant and
in total.

A verification handshake may take its whole 10 s against an endpoint that never answers,
and the SSRF check resolves the tenant's host name first. Neither runs on the request
thread pool (which key lookups, every query and the probes need): each runs on this gate's
own threads, at most `HOOKLINE_API_MAX_HANDSHAKES` at once in the process, and at most the
tenant's `max_handshakes` at once across every API replica. A tenant at its cap gets 429
at once, before any thread or query; a process whose threads are all busy answers 503.

The per-tenant cap is counted twice: in this process (exact, in memory: a burst of
requests is refused without touching the database) and across replicas, as lease rows in
`api_handshake_leases`, taken under a lock on the tenant's row. A lease outlives its
handshake only if the process dies mid-call; it lapses after `LEASE_S`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import HandshakeLease, Tenant
from common.wire import new_id, utcnow
from hookline.api.errors import ApiError
from hookline.services.verification import MAX_HANDSHAKE_S

T = TypeVar("T")
# A handshake's own deadline, plus the name lookup and the writes around it.
LEASE_S = 3 * MAX_HANDSHAKE_S
RETRY_AFTER_S = 5  # about half a hanging handshake


def tenant_busy(cap: int) -> ApiError:
    return ApiError(
        429,
        "too_many_handshakes",
        f"this tenant already has {cap} verification handshakes in progress (its limit); "
        "retry when one has finished",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def gate_busy() -> ApiError:
    return ApiError(
        503,
        "handshakes_busy",
        "this API process is running as many endpoint calls as it may; retry shortly",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


class HandshakeGate:
    """One per API app. `run` calls a function that reaches a tenant's endpoint."""

    def __init__(self, sessions: sessionmaker[Session], total: int) -> None:
        self._sessions = sessions
        self._total = total
        self._running: dict[str, int] = {}  # tenant -> calls in this process
        self._busy = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(total, thread_name_prefix="handshake")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def running(self, tenant_id: str) -> int:
        with self._lock:
            return self._running.get(tenant_id, 0)

    async def run(self, tenant_id: str, cap: int, call: Callable[[], T]) -> T:
        """`call()` on the gate's threads, counted against the tenant's `cap`; 429 or 503
        when it may not run now."""
        with self._lock:
            if self._running.get(tenant_id, 0) >= cap:
                raise tenant_busy(cap)
            if self._busy >= self._total:
                raise gate_busy()
            self._running[tenant_id] = self._running.get(tenant_id, 0) + 1
            self._busy += 1
        try:
            future = self._executor.submit(self._leased, tenant_id, cap, call)
            return await asyncio.wrap_future(future)
        finally:
            with self._lock:
                self._busy -= 1
                left = self._running[tenant_id] - 1
                if left:
                    self._running[tenant_id] = left
                else:
                    del self._running[tenant_id]

    def _leased(self, tenant_id: str, cap: int, call: Callable[[], T]) -> T:
        lease_id = self._acquire(tenant_id, cap)
        try:
            return call()
        finally:
            with self._sessions() as session, session.begin():
                session.execute(delete(HandshakeLease).where(HandshakeLease.id == lease_id))

    def _acquire(self, tenant_id: str, cap: int) -> str:
        now = utcnow()
        with self._sessions() as session, session.begin():
            # The first statement writes: SQLite then holds its write lock for the whole
            # check. PostgreSQL's lock on the tenant's row (FOR NO KEY UPDATE: inserts that
            # only reference the tenant are not held up) orders the replicas' checks.
            session.execute(
                delete(HandshakeLease).where(
                    HandshakeLease.tenant_id == tenant_id, HandshakeLease.expires_at < now
                )
            )
            tenant = select(Tenant.id).where(Tenant.id == tenant_id)
            session.execute(tenant.with_for_update(key_share=True))
            mine = HandshakeLease.tenant_id == tenant_id
            live = session.scalar(select(func.count()).select_from(HandshakeLease).where(mine))
            if (live or 0) >= cap:
                raise tenant_busy(cap)
            lease_id = new_id("hsl")
            session.add(
                HandshakeLease(
                    id=lease_id, tenant_id=tenant_id, expires_at=now + timedelta(seconds=LEASE_S)
                )
            )
        return lease_id
