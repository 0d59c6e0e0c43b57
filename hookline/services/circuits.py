"""An endpoint's circuit as the dispatchers' breakers hold it: open on how many of the
dispatchers that are delivering now, since when, and whether half-open (its next delivery
is the probe). From `circuit_states` and the `dispatchers` heartbeats (migration 0014),
which the dispatchers write (`dispatcher/policy/admission/circuits.py`).

A dispatcher whose heartbeat is older than `DISPATCHER_LIVE_S` is gone: its rows count for
nothing, so an endpoint is never shown open by a dispatcher that died.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.db.models import DISPATCHER_LIVE_S, CircuitState, DispatcherRow
from common.wire import utcnow


@dataclass(frozen=True)
class Circuit:
    dispatchers: int  # delivering now
    open_on: int  # of them, holding the endpoint's circuit open
    half_open_on: int  # of them, past the open time: the next delivery there probes
    since: datetime | None  # the earliest of those circuits opened (through re-opens)
    probe_at: datetime | None  # the soonest an open one lets a probe out

    @property
    def state(self) -> str:
        """`unknown` (no dispatcher is delivering), `open`, `half-open` or `closed`."""
        if not self.dispatchers:
            return "unknown"
        if self.open_on:
            return "open"
        return "half-open" if self.half_open_on else "closed"


def circuit(session: Session, subscription_id: str, *, now: datetime | None = None) -> Circuit:
    """The circuit of one subscription (the caller has checked that it may see it)."""
    now = now or utcnow()
    live = DispatcherRow.seen_at >= now - timedelta(seconds=DISPATCHER_LIVE_S)
    dispatchers = session.scalar(select(func.count()).select_from(DispatcherRow).where(live))
    rows = session.execute(
        select(CircuitState.opened_at, CircuitState.probe_at)
        .join(DispatcherRow, DispatcherRow.id == CircuitState.dispatcher_id)
        .where(CircuitState.subscription_id == subscription_id, live)
    ).all()
    waiting = [probe_at for _, probe_at in rows if probe_at > now]
    return Circuit(
        dispatchers=int(dispatchers or 0),
        open_on=len(waiting),
        half_open_on=len(rows) - len(waiting),
        since=min((opened_at for opened_at, _ in rows), default=None),
        probe_at=min(waiting, default=None),
    )
