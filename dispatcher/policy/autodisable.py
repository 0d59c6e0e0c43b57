"""Subscription health, written with the settler's batch (in its transaction; a batch whose
successes only end streaks does it in its one statement, `settle/rows_pg.record_batch`,
which must reset exactly as `apply` does): the failure streak that auto-disable watches,
disabling (on 410, or after failing too long), and the operational event
`hookline.subscription.disabled` that a disable emits.

A streak is "every attempt failed since `failing_since`", plus a count of deliveries that
died of exhausted attempts in a row. Any success ends it. Only attempts that reached the
endpoint count: a delivery refused before sending says nothing about it.

The event goes back into Hookline's own pipeline (the events exchange, the subscription's
tenant), so that tenant can subscribe to it like to any other event. It cannot loop: a
subscription is disabled at most once (the UPDATE only matches one that is not disabled
yet), so each event is one state change, and a disabled subscription receives nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Boolean, ColumnElement, Table, bindparam, case, func, or_, update
from sqlalchemy.orm import Session

from common.db.models import Delivery, Subscription
from common.db.session import rowcount
from common.db.statuses import DeliveryStatus, SubscriptionStatus
from common.db.types import UtcDateTime
from common.transport import Outgoing
from common.transport import topology as tp
from common.wire import Event, encode
from dispatcher.outcome import Attempted
from dispatcher.policy import retry

DISABLED_EVENT_TYPE = "hookline.subscription.disabled"
# Why Hookline disabled a subscription (`subscriptions.disabled_reason`, the event's reason).
GONE = "endpoint_gone"
FAILING = "failing"

_subs = cast(Table, Subscription.__table__)
_deliveries = cast(Table, Delivery.__table__)

# The streak columns only; `updated_at` is kept so caches and the router's index do not
# reload a subscription for every failure.
_UPDATE_STREAK = (
    update(_subs)
    .where(_subs.c.id == bindparam("b_id"))
    .values(
        failing_since=case(
            (bindparam("b_reset", type_=Boolean), bindparam("b_first", type_=UtcDateTime())),
            else_=func.coalesce(_subs.c.failing_since, bindparam("b_first", type_=UtcDateTime())),
        ),
        consecutive_dead=case(
            (bindparam("b_reset", type_=Boolean), bindparam("b_dead")),
            else_=_subs.c.consecutive_dead + bindparam("b_dead"),
        ),
        updated_at=_subs.c.updated_at,
    )
)


@dataclass(frozen=True)
class Policy:
    failing_for: timedelta
    dead_in_a_row: int  # 0: never by count


@dataclass(frozen=True)
class Disabled:
    subscription_id: str
    tenant_id: str
    reason: str
    ended: int = 0  # its pending and retrying deliveries, ended `dead` with the disable


@dataclass
class Streak:
    reset: bool = False  # a success in this batch, before the failures below
    failed: bool = False
    dead: int = 0


def _counts(outcome: Attempted) -> str | None:
    decision = outcome.decision
    if decision.outcome == retry.Verdict.SUCCESS:
        return "success"
    if decision.outcome == retry.Verdict.RETRY:
        return "failure"
    if decision.reason == retry.DeadReason.MAX_ATTEMPTS:
        return "dead"
    return None


def streaks(attempted: Iterable[Attempted]) -> dict[str, Streak]:
    """Per subscription, what this batch (in order) does to its streak."""
    result: dict[str, Streak] = {}
    for outcome in attempted:
        kind = _counts(outcome)
        if kind is None:
            continue
        streak = result.setdefault(outcome.delivery.subscription_id, Streak())
        if kind == "success":
            result[outcome.delivery.subscription_id] = Streak(reset=True)
            continue
        streak.failed = True
        if kind == "dead":
            streak.dead += 1
    return result


def apply(
    session: Session,
    batch: dict[str, Streak],
    gone: set[str],
    policy: Policy,
    now: datetime,
) -> list[Disabled]:
    """Write the streaks, disable what must be, end its pending deliveries: in `session`."""
    healthy = [sid for sid, s in batch.items() if not s.failed]
    failing = {sid: s for sid, s in batch.items() if s.failed}
    if healthy:
        session.execute(
            update(_subs)
            .where(_subs.c.id.in_(healthy))
            .where(or_(_subs.c.failing_since.is_not(None), _subs.c.consecutive_dead != 0))
            .values(failing_since=None, consecutive_dead=0, updated_at=_subs.c.updated_at)
        )
    if failing:
        session.execute(
            _UPDATE_STREAK,
            [
                # A streak starts when its first failure is settled (now, give or take a batch).
                {"b_id": sid, "b_reset": s.reset, "b_first": now, "b_dead": s.dead}
                for sid, s in failing.items()
            ],
        )
    disabled = _disable(session, gone, GONE, now, None)
    worn_out: ColumnElement[bool] = _subs.c.failing_since <= now - policy.failing_for
    if policy.dead_in_a_row > 0:
        worn_out = or_(worn_out, _subs.c.consecutive_dead >= policy.dead_in_a_row)
    disabled += _disable(session, set(failing) - gone, FAILING, now, worn_out)
    if disabled:
        # What is still queued for them will not be sent: it ends now, not when each
        # message comes back from its retry tier hours later (then refused, not counted again).
        # One UPDATE per subscription (rarely more than one), for its count: a RETURNING
        # would fetch a row per delivery, a million for a big backlog.
        end = (
            update(_deliveries)
            .where(_deliveries.c.subscription_id == bindparam("b_sub"))
            .where(
                or_(
                    _deliveries.c.status == DeliveryStatus.PENDING,
                    _deliveries.c.status == DeliveryStatus.RETRYING,
                )
            )
            .values(
                status=DeliveryStatus.DEAD,
                dead_reason=retry.DeadReason.ENDPOINT_DISABLED,
                next_attempt_at=None,
                updated_at=now,
                finished_at=now,
            )
        )
        disabled = [
            replace(d, ended=rowcount(session.execute(end, {"b_sub": d.subscription_id})))
            for d in disabled
        ]
    return disabled


def _disable(
    session: Session,
    ids: set[str],
    reason: str,
    now: datetime,
    condition: ColumnElement[bool] | None,
) -> list[Disabled]:
    if not ids:
        return []
    statement = (
        update(_subs)
        .where(_subs.c.id.in_(sorted(ids)), _subs.c.status != SubscriptionStatus.DISABLED)
        # The streak ends with the disable: re-enabled, it starts from nothing.
        .values(
            status=SubscriptionStatus.DISABLED,
            disabled_reason=reason,
            failing_since=None,
            consecutive_dead=0,
            updated_at=now,
        )
        .returning(_subs.c.id, _subs.c.tenant_id)
    )
    if condition is not None:
        statement = statement.where(condition)
    rows = session.execute(statement).tuples().all()
    return [Disabled(sid, tenant, reason) for sid, tenant in rows]


def disabled_event(disabled: Disabled, now: datetime) -> Outgoing:
    """The operational event for one disable, for the subscription's tenant."""
    event = Event(
        # One id per disable: a re-published copy is the same event to the router.
        id=f"hl_disabled.{disabled.subscription_id}.{int(now.timestamp() * 1000)}",
        tenant=disabled.tenant_id,
        type=DISABLED_EVENT_TYPE,
        timestamp=now,
        data={
            "subscription_id": disabled.subscription_id,
            "reason": disabled.reason,
            "disabled_at": now.isoformat(),
        },
    )
    return Outgoing(tp.EVENTS, event.type, encode(event), {}, event.id)


def events(disabled: Sequence[Disabled], now: datetime) -> list[Outgoing]:
    return [disabled_event(d, now) for d in disabled]
