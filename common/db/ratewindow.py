"""Fixed-window counters that every replica of a service shares through the database.

A row per counter says which window it is in (`window_ms`, its start) and how many units of
that window have been handed out (`granted`). A replica claims a chunk of units with one
conditional UPDATE; the database serialises the claims, so all replicas together never get
more than the window's allowance. The replica spends its chunk locally, so the database sees
one round trip per chunk, not per unit. Units left in a chunk when its window ends are
dropped: a limit errs on the slow side, by at most one chunk per replica and window, and
never lets more than the allowance through in one window.

Windows are cut from each host's clock (hosts are assumed NTP-synchronised); a host whose
clock is behind the row's window gets nothing until it catches up.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Table, and_, case, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

WINDOW_MS = 1000
MAX_WINDOW_MS = 3_600_000
CHUNK_FRACTION = 0.05  # of a window's allowance, claimed at a time


@dataclass(frozen=True)
class Window:
    """A limit as windows: each `length_ms` long, `allowance` units, claimed `chunk` at a time."""

    length_ms: int
    allowance: int
    chunk: int

    @classmethod
    def per_second(cls, per_s: float, chunk_fraction: float = CHUNK_FRACTION) -> Window:
        """One-second windows, or longer ones for rates under one a second (at most
        `MAX_WINDOW_MS`: a slower rate is that of one per `MAX_WINDOW_MS`), claimed
        `chunk_fraction` of the allowance at a time."""
        per_s = max(per_s, 1000 / MAX_WINDOW_MS)
        length_ms = max(WINDOW_MS, math.ceil(1000 / per_s))
        allowance = max(1, round(per_s * length_ms / 1000))
        return cls(length_ms, allowance, max(1, math.ceil(allowance * chunk_fraction)))

    def start(self, now_ms: int) -> int:
        return now_ms - now_ms % self.length_ms


def claim(
    session: Session,
    table: Table,
    key: Mapping[str, str],
    window_ms: int,
    allowance: int,
    want: int,
) -> int:
    """Claim up to `want` units of the window starting at `window_ms` from the row `key`
    names: how many were given (0 when the window's allowance is spent)."""
    c = table.c
    fresh = c.window_ms < window_ms
    first = min(want, allowance)
    statement = (
        update(table)
        .where(*(c[name] == value for name, value in key.items()))
        .where(or_(fresh, and_(c.window_ms == window_ms, c.granted < allowance)))
        .values(
            window_ms=window_ms,
            # Each expression sees the row as it was before this UPDATE, on both databases.
            last_grant=case(
                (fresh, first),
                (c.granted + want > allowance, allowance - c.granted),
                else_=want,
            ),
            granted=case(
                (fresh, first),
                (c.granted + want > allowance, allowance),
                else_=c.granted + want,
            ),
        )
        .returning(c.last_grant)
    )
    granted = session.execute(statement).scalar_one_or_none()
    return int(granted or 0)


def ensure_row(session: Session, table: Table, key: Mapping[str, str]) -> None:
    """The counter row `key` names, created empty unless it exists (on any replica)."""
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    row = {**key, "window_ms": 0, "granted": 0, "last_grant": 0}
    session.execute(module.insert(table).values(row).on_conflict_do_nothing())
