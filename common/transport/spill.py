"""Which delivery shard a delivery message goes to: its tenant's, or the overflow shard once
the tenant put more than its fair share on the broker in the current second
(architecture §3).

Hashing tenants over shards keeps a burst in its own shard, but the tenants hashed beside
it would still wait behind it. So whatever publishes deliveries in bulk — the router, a
replay runner — counts each tenant's per one-second window, and past
`HOOKLINE_DELIVERY_SHARE_PER_S` (or the tenant's own `delivery_share_per_s`) the rest of
that second's go to the overflow shard, which the dispatchers serve as one more shard. The
count is per process: with N routers a tenant routes up to N times the share to its own
shard, and a replay's copies count apart from its fresh deliveries. Memory: one counter
per tenant seen in the current second.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from common.transport import topology as tp

WINDOW_S = 1.0


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

    def headers(self, tenant: str, *, recheck: bool = False) -> dict[str, object]:
        """The headers of the next delivery message of `tenant` (counting it): its shard,
        and the router's re-check mark for a re-published one."""
        now = self._clock()
        if now - self._window_at >= WINDOW_S:
            self._window_at, self._counts = now, {}
        count = self._counts[tenant] = self._counts.get(tenant, 0) + 1
        share = self._overrides().get(tenant, self._share_per_s)
        headers: dict[str, object] = dict(
            tp.shard_headers(tenant, self._shards, spill=0 < share < count)
        )
        if recheck:
            headers[tp.H_RECHECK] = 1
        return headers
