"""Tenants' own delivery shares (fair delivery, architecture §3), as every process that
puts deliveries on the broker reads them: the router, and whatever runs a replay."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import Tenant

REFRESH_S = 5.0


def delivery_shares(session: Session) -> dict[str, int]:
    """tenant id -> its own share; tenants on the default are not listed (few have one,
    so all of them are read at once)."""
    overridden = Tenant.delivery_share_per_s.is_not(None)
    rows = session.execute(select(Tenant.id, Tenant.delivery_share_per_s).where(overridden))
    return {tenant: int(share) for tenant, share in rows.tuples() if share is not None}


class Shares:
    """`delivery_shares`, read again at most every `refresh_s`: a callable for `Spill`."""

    def __init__(self, sessions: sessionmaker[Session], refresh_s: float = REFRESH_S) -> None:
        self._sessions = sessions
        self._refresh_s = refresh_s
        self._read_at = float("-inf")
        self._shares: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, int]:
        with self._lock:
            if time.monotonic() - self._read_at >= self._refresh_s:
                with self._sessions() as session:
                    self._shares = delivery_shares(session)
                self._read_at = time.monotonic()
            return self._shares
