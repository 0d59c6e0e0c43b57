"""What the settler counts for each settled outcome, in the dispatcher's metrics."""

from __future__ import annotations

from typing import Any

from common.metrics import Metrics, status_class
from common.wire import utcnow
from dispatcher.outcome import Attempted, Deferred, Outcome, Poisoned
from dispatcher.policy.retry import Verdict


class SettleCounts:
    """Counts settled outcomes; the metric children it uses are looked up once each."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._children: dict[tuple[Any, ...], Any] = {}

    def count(self, outcome: Outcome) -> None:
        m = self._metrics
        if isinstance(outcome, Poisoned):
            m.dead_letters.labels(reason="poison").inc()
        elif isinstance(outcome, Deferred):
            self._child(m.attempts, "deferred", "none").inc()
        elif isinstance(outcome, Attempted):
            decision, result = outcome.decision, outcome.result
            self._child(m.attempts, decision.outcome, status_class(result.status_code)).inc()
            self._child(m.attempt_duration, decision.outcome).observe(result.duration_s)
            if decision.outcome == Verdict.SUCCESS:
                self._child(m.finished, "succeeded").inc()
                if not outcome.delivery.replay:  # a replay's wait is the operator's, not ours
                    e2e_s = (utcnow() - outcome.delivery.event.timestamp).total_seconds()
                    m.e2e.observe(max(e2e_s, 0.0))
            elif decision.outcome == Verdict.DEAD:
                if outcome.counted:
                    m.finished.labels(result="dead").inc()
                    m.dead_letters.labels(reason=decision.reason or "unknown").inc()
            else:
                self._child(m.deliveries_enqueued, "retry").inc()

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered: the lookup takes a lock every time."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child
