"""A circuit breaker per endpoint, local to one dispatcher process.

Closed: every request goes out; `threshold` unhealthy answers in a row open the circuit.
Open: nothing goes out for `open_s`; deliveries are deferred to a retry tier without
counting an attempt. Then half-open: one probe goes out; a healthy answer closes the
circuit, an unhealthy one opens it again for another `open_s`.

Only the endpoint's health counts here (no answer, 5xx, 429); a 4xx is an answer from an
endpoint that is up, so it closes the circuit even though the delivery retries.

Every opening, re-opening and closing is told to `on_transition` (after the lock is
released; it must not block: `circuits.py` only notes it for its writer thread). Half-open
is no transition of its own: a circuit is half-open once its `probe_in_s` has run out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# A circuit re-opened by no probe for this long past its open time has no traffic left.
STALE_S = 15 * 60.0


def healthy(status_code: int | None, error: str | None) -> bool:
    """Whether an attempt's result says the endpoint is up and keeping up."""
    if status_code is None or error is not None:
        return False
    return status_code < 500 and status_code != 429


@dataclass(frozen=True)
class Transition:
    """A circuit opened or re-opened (`open`), or closed; durations from the moment told."""

    key: str
    open: bool
    open_for_s: float = 0.0  # open this long already, through its re-opens
    probe_in_s: float = 0.0  # until it lets a probe out (half-open)


@dataclass
class _Circuit:
    failures: int = 0
    opened_at: float | None = None  # last opened, or re-opened by a failed probe
    first_opened_at: float | None = None  # open since, through its re-opens
    probing: bool = False


class Breaker:
    """Thread-safe. `on_change(n)` gets the number of open circuits whenever it changes."""

    def __init__(
        self,
        *,
        threshold: int,
        open_s: float,
        on_change: Callable[[int], None] = lambda _n: None,
        on_transition: Callable[[Transition], None] = lambda _t: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = threshold
        self._open_s = open_s
        self._on_change = on_change
        self._on_transition = on_transition
        self._clock = clock
        self._circuits: dict[str, _Circuit] = {}
        # Kept as circuits open and close: counting them on every answer read every
        # failing endpoint's circuit once per delivery of any endpoint.
        self._open = 0
        self._lock = threading.Lock()

    @property
    def open_count(self) -> int:
        with self._lock:
            return self._open

    def open_circuits(self) -> list[Transition]:
        """Every open circuit, as the transition that would open it now."""
        now = self._clock()
        with self._lock:
            return [
                self._opened(key, circuit, now)
                for key, circuit in self._circuits.items()
                if circuit.opened_at is not None
            ]

    def _opened(self, key: str, circuit: _Circuit, now: float) -> Transition:
        opened_at = now if circuit.opened_at is None else circuit.opened_at
        first = opened_at if circuit.first_opened_at is None else circuit.first_opened_at
        return Transition(key, True, now - first, max(opened_at + self._open_s - now, 0.0))

    def longest_open_s(self) -> float:
        """How long the longest-open circuit has been open, re-opens included (0: none).
        A circuit nothing has probed for `STALE_S` past its open time is left out: no
        traffic goes to that endpoint any more, so its circuit is nobody's problem."""
        now = self._clock()
        with self._lock:
            since = [
                c.first_opened_at
                for c in self._circuits.values()
                if c.opened_at is not None
                and c.first_opened_at is not None
                and c.opened_at + self._open_s + STALE_S > now
            ]
        return now - min(since) if since else 0.0

    def admit(self, key: str) -> float | None:
        """None lets a request out; otherwise the seconds until the circuit may be probed."""
        with self._lock:
            circuit = self._circuits.get(key)
            if circuit is None or circuit.opened_at is None:
                return None
            remaining_s = circuit.opened_at + self._open_s - self._clock()
            if remaining_s > 0:
                return remaining_s
            if circuit.probing:  # one probe at a time; the others wait for its answer
                return self._open_s
            circuit.probing = True
            return None

    def closed_for(self, key: str) -> float:
        """The seconds the circuit stays open still (0: a request may go, or probe), without
        claiming the probe: for deferring before a sending thread is taken."""
        circuit = self._circuits.get(key)  # one dict read, atomic: no lock for the hint
        if circuit is None or circuit.opened_at is None:
            return 0.0
        return max(circuit.opened_at + self._open_s - self._clock(), 0.0)

    def cancel(self, key: str) -> None:
        """An admitted request was not sent after all: it was no probe."""
        with self._lock:
            circuit = self._circuits.get(key)
            if circuit is not None:
                circuit.probing = False

    def record(self, key: str, ok: bool) -> None:
        transition: Transition | None = None
        with self._lock:
            before = self._open
            circuit = self._circuits.get(key)
            if ok:
                self._circuits.pop(key, None)
                if circuit is not None and circuit.opened_at is not None:
                    transition = Transition(key, False)
                    self._open -= 1
            else:
                if circuit is None:
                    circuit = self._circuits[key] = _Circuit()
                circuit.failures += 1
                if circuit.opened_at is not None or circuit.failures >= self._threshold:
                    now = self._clock()
                    if circuit.opened_at is None:
                        self._open += 1
                    circuit.opened_at = now  # opened, or re-opened by its probe
                    if circuit.first_opened_at is None:
                        circuit.first_opened_at = now
                    circuit.probing = False
                    transition = self._opened(key, circuit, now)
            after = self._open
        if after != before:
            self._on_change(after)
        if transition is not None:
            self._on_transition(transition)
