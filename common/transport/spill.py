"""Which delivery shard a delivery message goes to: its tenant's, or the overflow shard once
the tenant put more than its fair share on the broker in the current second, and for all
of the next second once it put more than twice its share in one (architecture §3).

Hashing tenants over shards keeps a burst in its own shard, but the tenants hashed beside
it would still wait behind it. So whatever publishes deliveries in bulk — the router, a
replay runner — counts each tenant's per one-second window, and past
`HOOKLINE_DELIVERY_SHARE_PER_S` (or the tenant's own `delivery_share_per_s`) the rest of
that second's go to the overflow shard, which the dispatchers serve as one more shard.

A share per second alone still lets a burst put its share of *every* second in its shard:
when the burst is routed faster than it is delivered (the dispatchers down, or behind),
the shard fills with share x seconds of it (5,000 for a 100,000 burst routed in 50 s),
and a tenant hashed beside it waits behind all of them. So a tenant that routed more than
`BURST_FACTOR` times its share in a second (spilled deliveries count) is a burst, and the
next second all its deliveries go to the overflow shard: what a burst leaves in its own
shard is its share of its first second. A tenant just over its share keeps its share in
its shard; one whose burst ended is back in it one second later.

The count is per process: with N routers a tenant routes up to N times the share to its
own shard, and a replay's copies count apart from its fresh deliveries. Memory: a counter
per tenant seen in the current second, and the set of the bursts of the second before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from common.transport import topology as tp

WINDOW_S = 1.0
# Routed more than this many times its share in a second: the next second goes to overflow.
BURST_FACTOR = 2


class Spill:
    def __init__(
        self,
        shards: int,
        share_per_s: int,
        overrides: Callable[[], Mapping[str, int]] = dict,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._shards = shards
        self._share_per_s = share_per_s  # 0: never spill
        self._overrides = overrides  # per-tenant shares (common/db/shares.py)
        self._clock = clock
        self._window_at = clock()
        self._counts: dict[str, int] = {}
        self._bursts: frozenset[str] = frozenset()  # over BURST_FACTOR in the last window

    def headers(self, tenant: str, *, recheck: bool = False) -> dict[str, object]:
        """The headers of the next delivery message of `tenant` (counting it): its shard,
        and the router's re-check mark for a re-published one."""
        now = self._clock()
        if now - self._window_at >= WINDOW_S:
            self._roll(now)
        count = self._counts[tenant] = self._counts.get(tenant, 0) + 1
        share = self._overrides().get(tenant, self._share_per_s)
        spill = share > 0 and (count > share or tenant in self._bursts)
        headers: dict[str, object] = dict(tp.shard_headers(tenant, self._shards, spill=spill))
        if recheck:
            headers[tp.H_RECHECK] = 1
        return headers

    def _roll(self, now: float) -> None:
        """Start a new window; the bursts of the one that ends count only if it ended just
        now (a tenant silent for a whole window is not a burst any more)."""
        recent = now - self._window_at < 2 * WINDOW_S
        overrides = self._overrides()
        self._bursts = frozenset(
            tenant
            for tenant, count in self._counts.items()
            if recent
            and (share := overrides.get(tenant, self._share_per_s)) > 0
            and count > BURST_FACTOR * share
        )
        self._window_at, self._counts = now, {}
