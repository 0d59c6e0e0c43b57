"""Admission per endpoint around each POST (the sender's `Gate`): circuit breaker, in-flight
cap, rate limit, in that order, so an open circuit spends no rate-limit allowance.

A refusal is never a wait on the sending thread: the sender returns a deferred result and the
attempt (`dispatcher/attempt.py`) puts the delivery on a retry tier without counting an
attempt. `deferral_s` tells it how long this thread's last refusal asked to wait.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from common.metrics import Metrics
from common.settings import Settings
from dispatcher.http import SendResult
from dispatcher.policy.admission.breaker import Breaker, Transition, healthy
from dispatcher.policy.admission.ratelimit import RateLimiter
from dispatcher.subscriptions import Endpoint


def in_flight_cap(endpoint: Endpoint | None, settings: Settings) -> int:
    """The subscription's own cap or the default, and never more than half the threads, so
    that one slow endpoint cannot take every sending thread."""
    wanted = settings.endpoint_max_in_flight
    if endpoint is not None and endpoint.max_in_flight:
        wanted = endpoint.max_in_flight
    return max(1, min(wanted, settings.dispatcher_concurrency // 2))


class EndpointGate:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        limiter: RateLimiter | None = None,
        *,
        on_transition: Callable[[Transition], None] = lambda _t: None,
    ) -> None:
        self._settings = settings
        self._limiter = limiter
        self.breaker = Breaker(
            threshold=settings.circuit_failure_threshold,
            open_s=settings.circuit_open_s,
            on_change=metrics.circuit_open.set,
            on_transition=on_transition,
        )
        metrics.circuit_open_longest.set_function(self.breaker.longest_open_s)
        self._in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._refusal = threading.local()

    def in_flight(self, endpoint_id: str) -> int:
        with self._lock:
            return self._in_flight[endpoint_id]

    def deferral_s(self) -> float:
        """The wait this thread's last refused `enter` asked for (0: the soonest tier)."""
        return float(getattr(self._refusal, "wait_s", 0.0))

    def enter(self, endpoint: Endpoint) -> bool:
        wait_s = self.breaker.admit(endpoint.id)
        if wait_s is not None:
            return self._refuse(wait_s)
        with self._lock:
            if self._in_flight[endpoint.id] >= in_flight_cap(endpoint, self._settings):
                full = True
            else:
                full = False
                self._in_flight[endpoint.id] += 1
        if full:
            self.breaker.cancel(endpoint.id)
            return self._refuse(0.0)
        if self._limiter is not None and endpoint.rate_limit_per_s:
            wait_s = self._limiter.acquire(endpoint.id, endpoint.rate_limit_per_s)
            if wait_s is not None:
                self._release(endpoint.id)
                self.breaker.cancel(endpoint.id)
                return self._refuse(wait_s)
        return True

    def leave(self, endpoint: Endpoint, result: SendResult) -> None:
        self._release(endpoint.id)
        self.breaker.record(endpoint.id, healthy(result.status_code, result.error))

    def _release(self, endpoint_id: str) -> None:
        with self._lock:
            self._in_flight[endpoint_id] -= 1
            if self._in_flight[endpoint_id] <= 0:
                del self._in_flight[endpoint_id]

    def _refuse(self, wait_s: float) -> bool:
        self._refusal.wait_s = wait_s
        return False
