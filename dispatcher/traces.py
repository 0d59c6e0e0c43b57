"""The dispatcher's spans, when it traces: an attempt span around `attempt.attempt`, and a
settle span per outcome of a settled batch. Built only when the dispatcher has a `Tracing`.

An attempt's parent is the context its delivery message carries: the route span of the
router that published it, kept unchanged on every retry, deferral and dead-letter copy
(`settle/onward.py`), and on replay copies (the event's stored `traceparent`); so all
attempts of a delivery are siblings in the trace of the event.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from common.tracing import from_headers
from common.tracing import names as trace
from common.transport import Message
from common.wire import DeliveryMessage
from dispatcher.outcome import Attempted, Deferred, Outcome
from dispatcher.policy.retry import Verdict
from dispatcher.subscriptions import Endpoint

if TYPE_CHECKING:
    from common.tracing import Span, Tracing

DEFERRED = "deferred"


def traced(
    tracing: Tracing,
    message: Message,
    delivery: DeliveryMessage,
    run: Callable[[Span], Outcome],
) -> Outcome:
    """`run` (the attempt) inside an attempt span, which the outcome then carries."""
    span = tracing.attempt(from_headers(message.headers), delivery)
    try:
        outcome = run(span)
    except BaseException as exc:
        span.fail(type(exc).__name__)
        span.end()
        raise
    if not span.sampled:  # sampled out: nothing to describe, and no settle span to parent
        return outcome
    _describe(span, outcome)
    span.end()
    if isinstance(outcome, Attempted | Deferred):
        return dataclasses.replace(outcome, span=span)
    return outcome


def sending(span: Span, endpoint: Endpoint) -> None:
    """What the span may say of the endpoint: its host, never the URL (whose path, query or
    user info may hold a credential)."""
    if span.sampled:
        span.set({trace.SERVER_ADDRESS: host(endpoint.url), trace.SUBSCRIPTION_ID: endpoint.id})


@lru_cache(maxsize=4096)
def host(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _describe(span: Span, outcome: Outcome) -> None:
    if isinstance(outcome, Deferred):
        span.set({trace.OUTCOME: DEFERRED, trace.RETRY_DELAY_S: outcome.delay_s})
        return
    if not isinstance(outcome, Attempted):
        return
    decision, result = outcome.decision, outcome.result
    span.set({trace.OUTCOME: str(decision.outcome)})
    if result.status_code is not None:
        span.set({trace.STATUS_CODE: result.status_code})
    if decision.delay_s is not None:
        span.set({trace.RETRY_DELAY_S: decision.delay_s})
    if decision.reason is not None:
        span.set({trace.DEAD_REASON: str(decision.reason)})
    if decision.outcome != Verdict.SUCCESS:
        # Low cardinality, no text of the endpoint's: the status, the dead reason, or the
        # kind of failure ("timeout", "connection failed") that the attempt row words.
        kind = (result.error or "failed").split(":", 1)[0]
        span.fail(str(result.status_code or decision.reason or kind))


class SettleSpans:
    """The settle spans of one batch: one per outcome whose attempt span was recorded (one
    that sampling left out has no settle span: nothing would show it)."""

    def __init__(self, tracing: Tracing, batch: Sequence[Outcome]) -> None:
        start_ns = time.time_ns()
        self._spans = []
        for o in batch:
            if isinstance(o, Attempted | Deferred) and o.span is not None and o.span.sampled:
                span = tracing.settle(o.span, o.delivery, batch=len(batch), start_ns=start_ns)
                outcome = o.decision.outcome if isinstance(o, Attempted) else DEFERRED
                span.set({trace.OUTCOME: str(outcome)})
                self._spans.append(span)

    def end(self, error: BaseException | None = None) -> None:
        for span in self._spans:
            if error is not None:
                span.fail(type(error).__name__)
            span.end()
