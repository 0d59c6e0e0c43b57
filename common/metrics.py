"""Prometheus metrics (section 10 of the architecture file): base units, bounded labels.

One `Metrics` object per process, built by the composition root and passed down, so that
tests and the all-in-one dev server can give each its own registry. Router and dispatcher
serve it with their probes (`common/health.py`); the API on its own port.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from common import __version__

ATTEMPT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60)
# From milliseconds to past the last retry of the default schedule (about 33 hours).
E2E_BUCKETS_S = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600,
    7200, 18000, 36000, 72000, 129600,
)  # fmt: skip
OUTCOMES = ("success", "retry", "dead", "deferred")
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "none")
INGEST_RESULTS = ("accepted", "rejected", "failed")
ORIGINS = ("new", "retry", "replay")
FINISH_RESULTS = ("succeeded", "dead")
DEAD_REASONS = ("max_attempts", "endpoint_disabled", "subscription_disabled", "poison",
                "unsafe_target", "subscription_missing")  # fmt: skip
REPLAY_RESULTS = ("published", "skipped", "failed")
SCHEMA_VALIDATION_MODES = ("warn", "reject")  # `off` checks nothing, so counts nothing
SUBSCRIPTION_STATUSES = ("pending_verification", "active", "paused", "disabled")
DISABLE_REASONS = ("endpoint_gone", "failing")  # dispatcher/policy/autodisable.py
# The API's 429 codes (hookline/api: tenant_limits, in_flight, handshakes, misses).
REFUSAL_REASONS = ("rate_limited", "concurrency_limited", "too_many_handshakes",
                   "too_many_unknown_credentials")  # fmt: skip
API_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def attempt_buckets(request_timeout_s: float) -> tuple[float, ...]:
    """The attempt buckets, with a top bucket past the request timeout: a request that
    timed out must land in a finite bucket, or the latency panels hide exactly those."""
    if request_timeout_s < ATTEMPT_BUCKETS_S[-1]:
        return ATTEMPT_BUCKETS_S
    return (*ATTEMPT_BUCKETS_S, float(2 * request_timeout_s))


def e2e_buckets(retry_delays_s: tuple[float, ...]) -> tuple[float, ...]:
    """The end-to-end buckets, reaching past the last retry of the configured schedule."""
    total_s = sum(retry_delays_s)
    if total_s < E2E_BUCKETS_S[-1]:
        return E2E_BUCKETS_S
    return (*E2E_BUCKETS_S, float(2 * total_s))


def status_class(status_code: int | None) -> str:
    if status_code is None or not 100 <= status_code <= 599:
        return "none"
    return f"{status_code // 100}xx" if status_code >= 200 else "none"


class Metrics:
    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        request_timeout_s: float = 15.0,
        retry_delays_s: tuple[float, ...] = (),
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_ingested = Counter(
            "hookline_events_ingested_total", "Events offered to the producer, by result",
            ["result"], registry=r,
        )  # fmt: skip
        self.events_routed = Counter(
            "hookline_events_routed_total", "Events matched and persisted by the router",
            registry=r,
        )  # fmt: skip
        self.deliveries_enqueued = Counter(
            "hookline_deliveries_enqueued_total", "Delivery messages published, by origin",
            ["origin"], registry=r,
        )  # fmt: skip
        self.attempts = Counter(
            "hookline_delivery_attempts_total", "HTTP delivery attempts",
            ["outcome", "status_class"], registry=r,
        )  # fmt: skip
        self.attempt_duration = Histogram(
            "hookline_delivery_attempt_duration_seconds", "Duration of one HTTP attempt",
            ["outcome"], buckets=attempt_buckets(request_timeout_s), registry=r,
        )  # fmt: skip
        self.finished = Counter(
            "hookline_deliveries_finished_total", "Deliveries that reached a final state",
            ["result"], registry=r,
        )  # fmt: skip
        self.e2e = Histogram(
            "hookline_delivery_e2e_seconds", "Event accepted to delivered",
            buckets=e2e_buckets(retry_delays_s), registry=r,
        )  # fmt: skip
        self.dead_letters = Counter(
            "hookline_dead_letters_total", "Deliveries and messages dead-lettered, by reason",
            ["reason"], registry=r,
        )  # fmt: skip
        self.circuit_open = Gauge(
            "hookline_circuit_open_endpoints", "Endpoints whose circuit is open", registry=r
        )
        # Set from the breaker at scrape time (dispatcher/policy/admission/gate.py).
        self.circuit_open_longest = Gauge(
            "hookline_circuit_open_longest_seconds",
            "How long the longest-open endpoint circuit has stayed open (re-opens included)",
            registry=r,
        )
        self.subscriptions_disabled = Counter(
            "hookline_subscriptions_disabled_total",
            "Subscriptions Hookline disabled itself (hookline.subscription.disabled), by reason",
            ["reason"], registry=r,
        )  # fmt: skip
        # Labels: the route's template (never the path), the method, the status class.
        self.api_request_duration = Histogram(
            "hookline_api_request_duration_seconds", "API requests, answered, by route",
            ["route", "method", "status_class"], buckets=API_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.api_refusals = Counter(
            "hookline_api_refusals_total",
            "Requests the API refused (429) to keep what tenants share for all, by reason",
            ["reason"], registry=r,
        )  # fmt: skip
        self.inflight = Gauge(
            "hookline_inflight_deliveries", "HTTP deliveries in progress", registry=r
        )
        self.concurrency = Gauge(
            "hookline_dispatcher_concurrency",
            "Concurrent HTTP deliveries this dispatcher allows (saturation = in-flight / this)",
            registry=r,
        )
        self.replay_messages = Counter(
            "hookline_replay_messages_total", "Messages re-published by replay jobs",
            ["result"], registry=r,
        )  # fmt: skip
        # Set by whichever process runs replay jobs; zero where none runs.
        self.replay_jobs_running = Gauge(
            "hookline_replay_jobs_running", "Replay jobs in progress in this process", registry=r
        )
        self.replay_remaining = Gauge(
            "hookline_replay_remaining_messages",
            "Messages the running replay jobs still have to re-publish", registry=r,
        )  # fmt: skip
        self.schema_violations = Counter(
            "hookline_schema_violations_total",
            "Ingested events whose data broke their catalogued type's schema, by the "
            "tenant's mode (warn: accepted; reject: refused)",
            ["mode"], registry=r,
        )  # fmt: skip
        self.build_info = Gauge("hookline_build_info", "Hookline version", ["version"], registry=r)
        self.build_info.labels(version=__version__).set(1)
        self._precreate()

    def _precreate(self) -> None:
        """Every label combination exists at zero, so rates and alerts work from the start."""
        for result in INGEST_RESULTS:
            self.events_ingested.labels(result=result)
        for origin in ORIGINS:
            self.deliveries_enqueued.labels(origin=origin)
        for outcome in OUTCOMES:
            self.attempt_duration.labels(outcome=outcome)
            for klass in STATUS_CLASSES:
                self.attempts.labels(outcome=outcome, status_class=klass)
        for result in FINISH_RESULTS:
            self.finished.labels(result=result)
        for reason in DEAD_REASONS:
            self.dead_letters.labels(reason=reason)
        for result in REPLAY_RESULTS:
            self.replay_messages.labels(result=result)
        for mode in SCHEMA_VALIDATION_MODES:
            self.schema_violations.labels(mode=mode)
        for reason in DISABLE_REASONS:
            self.subscriptions_disabled.labels(reason=reason)
        for reason in REFUSAL_REASONS:
            self.api_refusals.labels(reason=reason)
        # The hot route only: other routes' series appear with their first request.
        for klass in ("2xx", "4xx", "5xx"):
            self.api_request_duration.labels(route="/v1/events", method="POST", status_class=klass)
