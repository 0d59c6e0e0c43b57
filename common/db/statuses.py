"""The states rows move through, as `StrEnum`s: each member is the text stored in its column
(and shown by the API and CLI), so comparing with a plain string from the database works and
no stored value changed when they became types."""

from __future__ import annotations

from enum import StrEnum


class SubscriptionStatus(StrEnum):
    PENDING_VERIFICATION = "pending_verification"
    ACTIVE = "active"
    PAUSED = "paused"
    DISABLED = "disabled"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    DEAD = "dead"
    CANCELLED = "cancelled"


# A delivery in one of these states gets no further attempt unless an operator replays it.
FINAL_STATUSES = (DeliveryStatus.SUCCEEDED, DeliveryStatus.DEAD, DeliveryStatus.CANCELLED)


class ReplayJobStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    FAILED = "failed"


class ReplayItemStatus(StrEnum):
    TODO = "todo"
    CLAIMED = "claimed"
    SENT = "sent"
    SKIPPED = "skipped"
    FAILED = "failed"


class SchemaValidation(StrEnum):
    """What ingest does with an event whose `data` breaks its catalogued type's schema."""

    OFF = "off"  # not checked
    WARN = "warn"  # accepted, counted in `hookline_schema_violations_total{mode="warn"}`
    REJECT = "reject"  # refused: 422 (a batch item: rejected)
