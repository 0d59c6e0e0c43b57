"""Admission per endpoint: whether a delivery may go out now, or is deferred to a retry tier
without counting an attempt.

Before a thread is taken (on the consuming thread): `Lanes` (`lanes.py`) hold an endpoint to
its in-flight cap and park or defer the rest, and an open circuit defers at once
(`EndpointGate.breaker.closed_for`). Around the POST (the sender's gate): `EndpointGate`
(`gate.py`) checks the circuit (`breaker.py`), the in-flight cap and the shared rate limit
(`ratelimit.py`), in that order, and records each answer's health. Off the delivery path,
`circuits.py` writes the breaker's open circuits to the database for the portal.
"""

from dispatcher.policy.admission.breaker import Breaker, Transition, healthy
from dispatcher.policy.admission.circuits import CircuitLog, CircuitWriter
from dispatcher.policy.admission.gate import EndpointGate, in_flight_cap
from dispatcher.policy.admission.lanes import Lanes
from dispatcher.policy.admission.ratelimit import RateLimiter

__all__ = [
    "Breaker",
    "CircuitLog",
    "CircuitWriter",
    "EndpointGate",
    "Lanes",
    "RateLimiter",
    "Transition",
    "healthy",
    "in_flight_cap",
]
