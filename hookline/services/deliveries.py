"""What a receiver reads about its deliveries, and what it may do with them: one delivery
with its attempts, an endpoint's health, a test event, and re-sending what failed (a replay
job through `dispatcher.replay`). The log itself is `delivery_log.py`.

Every function takes the tenant and, where a caller may see only some subscriptions (a
portal session of one customer), the ids it may see: nothing outside them is read.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.db import lookup
from common.db.models import Attempt, Delivery, HeaderSet, ReplayJob, Subscription, on_its_day
from common.db.statuses import DeliveryStatus
from common.transport import Outgoing, Transport, topology
from common.wire import Event, utcnow
from dispatcher.deadletters import DeadFilter
from dispatcher.http import headers_shown
from dispatcher.replay import ReplayRefused, create_job, get_job
from hookline.services import audit
from hookline.services.audit import Actor
from hookline.services.delivery_log import scoped
from hookline.services.errors import Conflict, NotFound
from hookline.services.subscriptions import get as get_subscription
from router import Target
from router.persist import persist_batch

TEST_EVENT_TYPE = "hookline.test"


@dataclass(frozen=True)
class Health:
    """Share of finished deliveries that succeeded, per window (None: nothing finished)."""

    last_hour: float | None
    last_day: float | None
    finished_hour: int
    finished_day: int
    dead_day: int


def detail(
    session: Session, tenant_id: str, allowed: Collection[str] | None, delivery_id: str
) -> tuple[Delivery, list[Attempt]]:
    """One delivery the caller may see, and its attempts oldest first."""
    query = scoped(select(Delivery), tenant_id, allowed).where(
        Delivery.id == delivery_id, *on_its_day(Delivery.day, delivery_id)
    )
    row = session.scalars(query).first()
    if row is None:
        raise NotFound("delivery")
    return row, lookup.attempts(session, row.id)


Sent = list[tuple[str, str]]  # (name, value) in the order sent, secrets masked


def attempt_headers(
    session: Session, delivery: Delivery, attempts: list[Attempt]
) -> dict[int, Sent]:
    """attempt id -> the headers its request went out with, secrets masked (from its
    `header_sets` row). An attempt that sent nothing, or one recorded before migration
    0014, has no entry. Every view of attempts shows them through this function: the
    portal, `GET /v1/deliveries/{id}`, `GET /v1/dead-letters/{id}` and `hookline dlq show`."""
    ids = {a.header_set_id for a in attempts if a.header_set_id is not None}
    if not ids:
        return {}
    stored = dict(
        session.execute(select(HeaderSet.id, HeaderSet.headers).where(HeaderSet.id.in_(ids)))
        .tuples()
        .all()
    )
    return {
        a.id: headers_shown(stored[a.header_set_id], delivery.webhook_id, a.created_at)
        for a in attempts
        if a.header_set_id in stored
    }


def health(session: Session, tenant_id: str, subscription_id: str) -> Health:
    """Success rates of the deliveries created in the last hour and day that are finished
    (succeeded or dead). By creation time, so `ix_deliveries_subscription_created` reads
    only the window's rows."""
    now = utcnow()

    def counts(since: datetime) -> tuple[int, int, int]:
        rows = session.execute(
            select(Delivery.status, func.count())
            .where(
                Delivery.subscription_id == subscription_id,
                Delivery.created_at >= since,
                Delivery.tenant_id == tenant_id,
                Delivery.status.in_((DeliveryStatus.SUCCEEDED, DeliveryStatus.DEAD)),
            )
            .group_by(Delivery.status)
        ).all()
        by: dict[str, int] = {status: n for status, n in rows}
        finished = sum(by.values())
        return by.get(DeliveryStatus.SUCCEEDED, 0), finished, by.get(DeliveryStatus.DEAD, 0)

    ok_h, done_h, _ = counts(now - timedelta(hours=1))
    ok_d, done_d, dead_d = counts(now - timedelta(days=1))
    return Health(
        last_hour=ok_h / done_h if done_h else None,
        last_day=ok_d / done_d if done_d else None,
        finished_hour=done_h,
        finished_day=done_d,
        dead_day=dead_d,
    )


def send_test_event(
    session: Session,
    tenant_id: str,
    subscription_id: str,
    transport: Transport,
    *,
    actor: Actor,
    publish_timeout_s: float,
    shards: int,
) -> str:
    """Store a `hookline.test` event with one delivery, to this subscription only, and
    publish it; returns the delivery id. Commits: the delivery must exist before it is
    sent (as the router does)."""
    sub = get_subscription(session, tenant_id, subscription_id)
    if sub.status != "active":
        raise Conflict(f"the endpoint is {sub.status}: only an active one receives events")
    event = Event(
        tenant=tenant_id,
        type=TEST_EVENT_TYPE,
        data={"message": "a test event sent from the portal", "subscription_id": sub.id},
    )
    target = Target(subscription_id=sub.id, tenant_id=tenant_id, event_types=(TEST_EVENT_TYPE,))
    routed = persist_batch(session, [(event, [target])])
    audit.record(
        session, actor, action="subscription.test_sent",
        resource_type="subscription", resource_id=sub.id, tenant_id=tenant_id,
        details={"event_id": event.id},
    )  # fmt: skip
    session.commit()
    transport.publish(
        [
            Outgoing(
                topology.DELIVERIES,
                topology.DELIVERY_ROUTING_KEY,
                r.body,
                topology.shard_headers(tenant_id, shards),  # one message: never over a share
                r.delivery_id,
            )
            for r in routed
        ],
        timeout_s=publish_timeout_s,
    )
    return routed[0].delivery_id


def _replay(session: Session, dead: DeadFilter, actor: Actor, rate_per_s: float) -> ReplayJob:
    # Forced: the receiver asked for these, and a paused endpoint's copies wait for it.
    try:
        job, _ = create_job(session, dead, actor=actor.id, rate_per_s=rate_per_s, force=True)
    except ReplayRefused as exc:
        raise Conflict(str(exc)) from None
    return job


def retry_one(
    session: Session, tenant_id: str, allowed: Collection[str] | None, delivery_id: str, *,
    actor: Actor, rate_per_s: float,
) -> ReplayJob:  # fmt: skip
    """A replay job of one dead delivery (with its original `webhook-id`)."""
    row, _ = detail(session, tenant_id, allowed, delivery_id)
    if row.status != DeliveryStatus.DEAD:
        raise Conflict(f"the delivery is {row.status}; only failed (dead) ones are retried")
    return _replay(session, DeadFilter(tenant=tenant_id, ids=(row.id,)), actor, rate_per_s)


def recover(
    session: Session, tenant_id: str, subscription_id: str, since: datetime, *,
    actor: Actor, rate_per_s: float,
) -> ReplayJob:  # fmt: skip
    """A replay job of every delivery to the subscription that died since `since`."""
    get_subscription(session, tenant_id, subscription_id)
    dead = DeadFilter(tenant=tenant_id, subscription=subscription_id, since=since)
    return _replay(session, dead, actor, rate_per_s)


def replay_job(session: Session, tenant_id: str, job_id: str, actor: Actor) -> ReplayJob:
    """A replay job this caller started (another caller's is not found)."""
    job = get_job(session, job_id, tenant=tenant_id)
    if job is None or job.actor != actor.id:
        raise NotFound("replay job")
    return job


def endpoints_of(
    session: Session, tenant_id: str, allowed: Collection[str] | None
) -> list[Subscription]:
    """The subscriptions a caller may see (for a filter's choices), oldest first."""
    query = select(Subscription).where(Subscription.tenant_id == tenant_id)
    if allowed is not None:
        query = query.where(Subscription.id.in_(sorted(allowed)))
    return list(session.scalars(query.order_by(Subscription.created_at).limit(200)))
