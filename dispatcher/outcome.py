"""What happened to one delivery message, as the sending threads hand it to the settler."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from common.transport import Message
from common.wire import DeliveryMessage
from dispatcher.http import SendResult
from dispatcher.policy.retry import Decision

if TYPE_CHECKING:
    from common.tracing import Span


@dataclass(frozen=True)
class Attempted:
    """An attempt was made (or refused before sending): it gets a row, and a decision."""

    message: Message
    delivery: DeliveryMessage
    decision: Decision
    result: SendResult
    started_at: datetime
    # False for the refusal of a delivery a disable already ended (and counted as dead).
    counted: bool = True
    span: Span | None = None  # the attempt's, when the dispatcher traces: settling's parent


@dataclass(frozen=True)
class Deferred:
    """Held back without an attempt (a paused endpoint, or admission: an open circuit, a
    full lane or endpoint, a rate limit): comes back after a delay."""

    message: Message
    delivery: DeliveryMessage
    delay_s: float
    span: Span | None = None  # set when an attempt (traced) deferred it: a paused endpoint


@dataclass(frozen=True)
class Skipped:
    """A redelivered copy of a delivery that is already final: acked, nothing else."""

    message: Message


@dataclass(frozen=True)
class Poisoned:
    """A message that could not be decoded: its raw body goes to the poison queue."""

    message: Message
    error: str


Outcome = Attempted | Deferred | Skipped | Poisoned
