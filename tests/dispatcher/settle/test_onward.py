"""Where onward copies go: a retry back to the shard it came from (or, from the unsharded
queue, to its tenant's), a deferral (its endpoint cannot take more now) to the overflow
shard, out of its neighbours' way."""

from __future__ import annotations

from common.transport import Message
from common.transport import topology as tp
from common.wire import DeliveryMessage, encode, utcnow
from dispatcher.http import SendResult
from dispatcher.outcome import Attempted, Deferred
from dispatcher.policy.retry import Decision, Verdict
from dispatcher.settle.onward import onward_message
from tests import builders

SHARDS = 8


def _message(headers: dict[str, object]) -> tuple[Message, DeliveryMessage]:
    event = builders.event("ten_a")
    delivery = DeliveryMessage(delivery_id="dlv_1", event_id=event.id, tenant="ten_a",
                               subscription_id="sub_1", attempt=1, event=event)  # fmt: skip
    message = Message(tp.shard_queue(3), encode(delivery), "delivery", headers, False, 1)
    return message, delivery


def test_a_retry_keeps_the_shard_it_came_from() -> None:
    message, delivery = _message({tp.H_SHARD: "3", "other": 1})
    decision = Decision(Verdict.RETRY, 5.0)
    retry = Attempted(message, delivery, decision, SendResult(500, 0.1), utcnow())

    onward = onward_message(retry, SHARDS)

    assert onward is not None
    assert (onward.exchange, onward.routing_key) == (tp.RETRY, "5s")
    assert onward.headers == {tp.H_SHARD: "3"}


def test_a_retry_from_the_unsharded_queue_goes_to_its_tenants_shard() -> None:
    message, delivery = _message({})  # published before sharding, or by an older replay
    decision = Decision(Verdict.RETRY, 5.0)
    retry = Attempted(message, delivery, decision, SendResult(None, 0.1), utcnow())

    onward = onward_message(retry, SHARDS)

    assert onward is not None
    assert onward.headers == {tp.H_SHARD: str(tp.shard_of("ten_a", SHARDS))}


def test_a_deferral_comes_back_in_the_overflow_shard() -> None:
    message, delivery = _message({tp.H_SHARD: "3"})

    onward = onward_message(Deferred(message, delivery, 4.0), SHARDS)

    assert onward is not None
    assert (onward.exchange, onward.routing_key) == (tp.RETRY, "4s")
    assert onward.headers == {tp.H_SHARD: tp.OVERFLOW_SHARD}
    assert onward.body == message.body


TRACE = {
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "tracestate": "vendor=1",
}


def test_every_onward_copy_keeps_the_trace_context_the_original_carried() -> None:
    message, delivery = _message({tp.H_SHARD: "3", **TRACE})
    retry = Attempted(
        message, delivery, Decision(Verdict.RETRY, 5.0), SendResult(500, 0.1), utcnow()
    )
    dead = Attempted(
        message, delivery, Decision(Verdict.DEAD, reason=None), SendResult(410, 0.1), utcnow()
    )
    copies = [
        onward_message(retry, SHARDS),
        onward_message(dead, SHARDS),
        onward_message(Deferred(message, delivery, 4.0), SHARDS),
    ]

    for copy in copies:
        assert copy is not None
        assert {k: copy.headers[k] for k in TRACE} == TRACE
    assert copies[0] is not None and copies[0].headers[tp.H_SHARD] == "3"
    assert copies[2] is not None and copies[2].headers[tp.H_SHARD] == tp.OVERFLOW_SHARD


def test_a_copy_of_an_untraced_message_gets_no_trace_header() -> None:
    message, delivery = _message({tp.H_SHARD: "3"})
    deferred = onward_message(Deferred(message, delivery, 4.0), SHARDS)

    assert deferred is not None and deferred.headers == {tp.H_SHARD: tp.OVERFLOW_SHARD}
