"""Per-endpoint lanes in front of the sending pool: at most `cap` deliveries of one endpoint
take a sending thread at a time; the next few wait in memory (no thread held) while the
endpoint keeps up; once its oldest request is slow, the rest are deferred to a retry tier.

So a fast endpoint with a deep backlog uses its share of threads at full speed, and a slow
or hanging one holds `cap` threads and a bounded part of the prefetch window, never all.

How many may park is the larger of a fixed bound (`PARK_LIMIT_FACTOR` x cap, or the floor)
and what the lane's own recent speed clears in `PARK_BUDGET_S`: a fast endpoint with the
whole backlog (a drain) parks the prefetch window instead of deferring deliveries it would
have sent within milliseconds, while a slow one is held to the fixed bound, so the window
stays open for the others. The bound is counted per shard, as the prefetch windows are: a
burst whose deliveries come from two shards (its own and the overflow shard) parks up to
the bound from each, as a burst in one queue did. An endpoint with no answer yet is held
to no bound but the window: the fixed one deferred half of a fresh endpoint's first window
to the 5 s tier before its first request had ended (docs/benchmarks.md, session 12). An
endpoint that starts to hang keeps its fast average (or its unknown speed) until its
oldest request passes `SLOW_AFTER_S`; `expire` then defers what it had parked.

The speed is an average over about the last twenty answers, and the budget half a second:
with a drain's window parked behind one endpoint, a few slow answers while the host's CPU is
contended (routing and delivery on the same cores) had dropped the bound below the window and
sent deliveries a fast endpoint would have cleared in a tenth of a second to the 5 s tier.
An endpoint that does turn slower (but not slow) gives back what it parked beyond its new
bound at the next `expire`, newest first, so its shard's window opens within that budget.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

SLOW_AFTER_S = 1.0  # a request running this long marks its endpoint slow
PARK_LIMIT_FACTOR = 4  # parked deliveries per lane, in units of its cap, or `park_floor`
PARK_BUDGET_S = 0.5  # a lane may park what its recent request time clears in this long
SPEED_WEIGHT = 0.05  # of the newest request, in the moving average of a lane's request time
SPEEDS_KEPT = 10_000  # endpoints whose request time is remembered while idle
UNKNOWN_SPEED_PARKS = 1_000_000  # an endpoint with no answer yet: bounded by the window only

Job = Callable[[], None]


@dataclass
class _Lane:
    running: dict[int, float] = field(default_factory=dict)  # ticket -> started (monotonic)
    parked: deque[tuple[Job, Job, str]] = field(default_factory=deque)  # (run, defer, shard)
    parked_in: dict[str, int] = field(default_factory=dict)  # shard -> how many of `parked`

    def park(self, job: tuple[Job, Job, str]) -> None:
        self.parked.append(job)
        self.parked_in[job[2]] = self.parked_in.get(job[2], 0) + 1

    def unpark(self) -> tuple[Job, Job, str]:
        job = self.parked.popleft()
        left = self.parked_in[job[2]] - 1
        if left:
            self.parked_in[job[2]] = left
        else:
            del self.parked_in[job[2]]
        return job

    def unpark_all(self) -> list[tuple[Job, Job, str]]:
        jobs = list(self.parked)
        self.parked.clear()
        self.parked_in.clear()
        return jobs

    def unpark_beyond(self, limit: int) -> list[tuple[Job, Job, str]]:
        """Take out the newest parked of each shard that holds more than `limit`."""
        excess = {shard: n - limit for shard, n in self.parked_in.items() if n > limit}
        if not excess:
            return []
        kept: deque[tuple[Job, Job, str]] = deque()
        taken: list[tuple[Job, Job, str]] = []
        for job in reversed(self.parked):
            if excess.get(job[2], 0) > 0:
                excess[job[2]] -= 1
                self.parked_in[job[2]] -= 1
                taken.append(job)
            else:
                kept.appendleft(job)
        self.parked = kept
        return taken[::-1]

    def slow(self, now: float) -> bool:
        return bool(self.running) and min(self.running.values()) <= now - SLOW_AFTER_S


class Lanes:
    """Thread-safe: `submit` from the consuming thread, completions from sending threads.

    Each job goes to the pool with the shard its message came from, parked or not, so the
    pool serves it in that shard's turn (`dispatcher/threads.py`)."""

    def __init__(
        self,
        run_on_pool: Callable[[Job, str], None],
        cap_of: Callable[[str], int],
        *,
        park_floor: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._run_on_pool = run_on_pool
        self._park_floor = park_floor
        self._cap_of = cap_of
        self._clock = clock
        self._lanes: dict[str, _Lane] = {}
        self._seconds: dict[str, float] = {}  # endpoint -> moving average of request time
        self._lock = threading.Lock()
        self._tickets = 0

    def submit(self, key: str, run: Job, defer: Job, shard: str = "") -> None:
        """Run `run` on the pool in this lane, park it, or call `defer` (on this thread)."""
        cap = self._cap_of(key)
        now = self._clock()
        with self._lock:
            lane = self._lanes.setdefault(key, _Lane())
            if len(lane.running) < cap and not lane.parked:
                ticket = self._start(lane, now)
            elif lane.slow(now) or lane.parked_in.get(shard, 0) >= self._park_limit(key, cap):
                ticket = None
            else:
                lane.park((run, defer, shard))
                return
        if ticket is None:
            defer()
        else:
            self._run_on_pool(self._wrapped(key, ticket, run), shard)

    def expire(self) -> None:
        """Defer what waits behind a slow endpoint, and what a lane that turned slower holds
        beyond its bound. Called now and then by the consumer."""
        now = self._clock()
        with self._lock:
            waiting = [key for key, lane in self._lanes.items() if lane.parked]
        caps = {key: self._cap_of(key) for key in waiting}  # the subscription cache's lock
        deferred: list[Job] = []
        with self._lock:
            for key, cap in caps.items():
                lane = self._lanes.get(key)
                if lane is None or not lane.parked:
                    continue
                if lane.slow(now):
                    jobs = lane.unpark_all()
                else:
                    jobs = lane.unpark_beyond(self._park_limit(key, cap))
                deferred.extend(defer for _run, defer, _shard in jobs)
        for defer in deferred:
            defer()

    def _park_limit(self, key: str, cap: int) -> int:
        seconds = self._seconds.get(key)
        if seconds is None:
            # No answer yet, so no speed to judge by: a burst's first window parks whole
            # rather than half of it going to the 5 s tier before the first request ends.
            # Should the endpoint hang, `slow` defers all of it after `SLOW_AFTER_S`, once.
            return UNKNOWN_SPEED_PARKS
        fixed = max(cap * PARK_LIMIT_FACTOR, self._park_floor)
        if not seconds:
            return fixed
        return max(fixed, int(cap * PARK_BUDGET_S / seconds))

    def _start(self, lane: _Lane, now: float) -> int:
        self._tickets += 1
        lane.running[self._tickets] = now
        return self._tickets

    def _wrapped(self, key: str, ticket: int, run: Job) -> Job:
        def job() -> None:
            try:
                run()
            finally:
                self._finished(key, ticket)

        return job

    def _finished(self, key: str, ticket: int) -> None:
        now = self._clock()
        with self._lock:
            lane = self._lanes[key]
            started = lane.running.pop(ticket, now)
            self._remember(key, now - started)
            follow: tuple[Job, str, int] | None = None
            if lane.parked:
                run, _defer, shard = lane.unpark()
                follow = (run, shard, self._start(lane, now))
            elif not lane.running:
                del self._lanes[key]
        if follow is not None:
            run, shard, next_ticket = follow
            self._run_on_pool(self._wrapped(key, next_ticket, run), shard)

    def _remember(self, key: str, seconds: float) -> None:
        """Fold one request's time into its endpoint's average (under the lock)."""
        average = self._seconds.get(key)
        if average is None:
            if len(self._seconds) >= SPEEDS_KEPT:
                self._seconds.clear()
            self._seconds[key] = seconds
        else:
            self._seconds[key] = average + SPEED_WEIGHT * (seconds - average)
