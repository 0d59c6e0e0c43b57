"""Broker outages: once connecting has failed for a caller's whole budget, later callers
fail at once instead of each waiting out a budget of its own, and one background thread
keeps trying to reach the broker until it answers.

A client waiting on the API is told "unavailable, retry" within its budget; the thread's
attempts get the full `CONNECT_ATTEMPT_S`, so a slow but live broker is still reached.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from common.background import BackgroundThread
from common.errors import BrokerUnavailableError
from common.transport.rabbitmq.connect import is_transient

log = logging.getLogger(__name__)

RECONNECT_FIRST_WAIT_S = 0.25
RECONNECT_MAX_WAIT_S = 2.0  # a probe every 2 s while down: cheap, and back within seconds
RETRY_AFTER_S = 1.0


class Outage:
    """Whether the broker is known to be unreachable, and since when.

    `probe` makes one connection attempt (raising pika's or the socket's error); it runs
    only on the reconnect thread.
    """

    def __init__(self, probe: Callable[[], None]) -> None:
        self._probe = probe
        self._lock = threading.Lock()
        self._since: float | None = None  # monotonic; None while the broker is reachable
        self._reason = ""
        self._reconnect: _Reconnect | None = None
        self._closed = False

    @property
    def since(self) -> float | None:
        return self._since

    def check(self) -> None:
        """Raise `BrokerUnavailableError` while an outage lasts."""
        with self._lock:
            since, reason = self._since, self._reason
        if since is not None:
            raise BrokerUnavailableError(
                f"RabbitMQ unavailable for {time.monotonic() - since:.0f} s, reconnecting in "
                f"the background: {reason}",
                retry_after_s=RETRY_AFTER_S,
            )

    def begin(self, reason: str) -> None:
        """The broker could not be reached: fail fast from now on, and keep trying."""
        with self._lock:
            if self._closed:
                return
            if self._since is None:
                self._since, self._reason = time.monotonic(), reason
                log.warning("broker unavailable; reconnecting in the background")
            if self._reconnect is None:
                self._reconnect = _Reconnect(self)
                self._reconnect.start()

    def end(self, reconnect: _Reconnect) -> None:
        with self._lock:
            if self._since is not None:
                log.info("broker reachable again", extra={"down_s": time.monotonic() - self._since})
            self._since = None
            if self._reconnect is reconnect:
                self._reconnect = None

    def probe(self) -> None:
        self._probe()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            reconnect, self._reconnect = self._reconnect, None
        if reconnect is not None:
            reconnect.stop(timeout_s=None)  # an attempt in flight ends on its own time bound


class _Reconnect(BackgroundThread):
    """Probes the broker with backoff until it answers, then ends the outage."""

    def __init__(self, outage: Outage) -> None:
        super().__init__("hookline-reconnect")
        self._outage = outage

    def run(self) -> None:
        wait_s = RECONNECT_FIRST_WAIT_S
        while not self.stopping.wait(wait_s):
            try:
                self._outage.probe()
            except Exception as exc:
                if is_transient(exc):
                    wait_s = min(RECONNECT_MAX_WAIT_S, wait_s * 2)
                    continue
                # It answered, only to refuse us: reachable. Callers now hear why themselves.
            self._outage.end(self)
            return
