"""The message each outcome publishes before its original is acked: the retry copy, the
dead letter, the poison copy, the deferral.

Each keeps the original's trace context (`traceparent`, `tracestate`) as it came, like its
body: every attempt of a delivery stays a child of the span that routed it.
"""

from __future__ import annotations

from typing import Any

from common.tracing import TRACEPARENT, TRACESTATE
from common.transport import Outgoing, poison_copy
from common.transport import topology as tp
from common.wire import encode
from dispatcher.outcome import Attempted, Deferred, Outcome, Poisoned
from dispatcher.policy.retry import Verdict

H_STATUS_CODE = "x-hookline-status-code"


def onward_message(outcome: Outcome, shards: int) -> Outgoing | None:
    """The message an outcome publishes before its original is acked, if any (`shards`:
    `HOOKLINE_DELIVERY_SHARDS`, for a retry that came without a shard)."""
    if isinstance(outcome, Poisoned):
        return poison_copy(outcome.message, "undecodable", outcome.error)
    if isinstance(outcome, Deferred):
        body = outcome.message.body  # the delivery as it came: nothing to re-encode
        return Outgoing(
            tp.RETRY,
            tp.tier_name(outcome.delay_s),
            body,
            _traced(_OVERFLOW, outcome.message.headers),
            outcome.delivery.delivery_id,
        )
    if not isinstance(outcome, Attempted):
        return None
    delivery, decision, result = outcome.delivery, outcome.decision, outcome.result
    if decision.outcome == Verdict.RETRY:
        assert decision.delay_s is not None
        retry = delivery.model_copy(
            update={
                "attempt": delivery.attempt + 1,
                "first_attempt_at": delivery.first_attempt_at or outcome.started_at,
                # Only a replay's first attempt may reopen a final row; its retries are
                # ordinary ones, so a stale duplicate of them cannot move a row backwards.
                "replay": False,
            }
        )
        routing_key = tp.tier_name(decision.delay_s)
        shard = _traced(
            _same_shard(outcome.message.headers, delivery.tenant, shards), outcome.message.headers
        )
        return Outgoing(tp.RETRY, routing_key, encode(retry), shard, delivery.delivery_id)
    if decision.outcome == Verdict.DEAD:
        headers: dict[str, Any] = {tp.H_REASON: decision.reason or "unknown"}
        if result.status_code is not None:
            headers[H_STATUS_CODE] = result.status_code
        if result.error:
            headers[tp.H_ERROR] = result.error[:500]
        dead = _traced(headers, outcome.message.headers)
        return Outgoing(tp.DEAD, "", encode(delivery), dead, delivery.delivery_id)
    return None


# A deferral means its endpoint cannot take more now (full, open circuit, rate limit,
# paused): its tenant is the heavy one by definition, so it comes back in the overflow
# shard, not in front of the tenants hashed beside it (architecture §3).
_OVERFLOW = {tp.H_SHARD: tp.OVERFLOW_SHARD}


def _same_shard(headers: dict[str, Any], tenant: str, shards: int) -> dict[str, Any]:
    """The header that brings a retry back to the shard it came from, once its tier
    dead-letters it; one from the unsharded queue (published before sharding) goes to
    its tenant's shard instead, so that no retry waits in the one queue all tenants share."""
    shard = headers.get(tp.H_SHARD)
    return tp.shard_headers(tenant, shards) if shard is None else {tp.H_SHARD: shard}


def _traced(headers: dict[str, Any], original: dict[str, Any]) -> dict[str, Any]:
    """`headers` and the original's trace context, if it carried one (a new dict then)."""
    parent = original.get(TRACEPARENT)
    if parent is None:
        return headers
    traced = {**headers, TRACEPARENT: parent}
    state = original.get(TRACESTATE)
    if state is not None:
        traced[TRACESTATE] = state
    return traced
