"""Replay jobs: planning one (the dry run), creating one with its fixed set, cancelling one.

A job's set is fixed when it is created: every matching dead delivery becomes a
`replay_items` row in the same transaction, with the delivery's replay count at that moment.
A delivery that dies again while the job runs is therefore never picked up twice by it;
running the job (`runner.py`) only ever walks those rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, insert, literal, select, update
from sqlalchemy.orm import Session

from common.db.models import (
    ITEM_TODO,
    JOB_CANCELLED,
    JOB_CANCELLING,
    JOB_FAILED,
    JOB_RUNNING,
    SUB_DISABLED,
    SUB_PAUSED,
    AuditEntry,
    Delivery,
    ReplayItem,
    ReplayJob,
    Subscription,
)
from common.wire import new_id, utcnow
from dispatcher.deadletters import DeadFilter, Summary, summarize_dead

# A runner that has not written a heartbeat for this long is taken to be gone (killed).
LEASE_S = 30.0
DEFAULT_RATE_PER_S = 50.0


class ReplayRefused(Exception):
    """A replay that would do something the operator did not clearly ask for; `option` is
    what would allow it (`all`, `force`), which each shell words its own way (`--all` on
    the command line, `all=true` in the API): `worded()`."""

    def __init__(self, template: str, option: str) -> None:
        super().__init__(template.format(option=option))
        self.template = template
        self.option = option

    def worded(self, spelling: Mapping[str, str]) -> str:
        return self.template.format(option=spelling.get(self.option, self.option))


@dataclass(frozen=True)
class Plan:
    """What a replay would do: the dry run's answer, and the check before a real one."""

    summary: Summary
    paused: dict[str, int]  # subscription id -> dead letters it holds
    disabled: dict[str, int]

    @property
    def force_note(self) -> str:
        """What `--force` will do with the deliveries of paused and disabled subscriptions."""
        notes = []
        if self.paused:
            n = sum(self.paused.values())
            notes.append(
                f"{n} deliveries of {len(self.paused)} paused subscription(s) will be queued "
                "and held (not sent) until the subscription is resumed"
            )
        if self.disabled:
            n = sum(self.disabled.values())
            notes.append(
                f"{n} deliveries of {len(self.disabled)} disabled subscription(s) will be "
                "queued and die again as subscription_disabled unless it is re-enabled first"
            )
        return "; ".join(notes)

    def to_json(self) -> dict[str, Any]:
        return {**self.summary.to_json(), "paused": self.paused, "disabled": self.disabled}


def plan(session: Session, dead: DeadFilter) -> Plan:
    summary = summarize_dead(session, dead)
    paused: dict[str, int] = {}
    disabled: dict[str, int] = {}
    if summary.by_subscription:
        statuses = dict(
            session.execute(
                select(Subscription.id, Subscription.status).where(
                    Subscription.id.in_(list(summary.by_subscription)),
                    Subscription.status.in_((SUB_PAUSED, SUB_DISABLED)),
                )
            )
            .tuples()
            .all()
        )
        for subscription_id, status in statuses.items():
            target = paused if status == SUB_PAUSED else disabled
            target[subscription_id] = summary.by_subscription[subscription_id]
    return Plan(summary, paused, disabled)


def audit(
    session: Session,
    *,
    actor: str,
    tenant_id: str | None,
    action: str,
    resource_type: str,
    resource_id: str | None,
    details: dict[str, Any],
) -> None:
    """One row in the control plane's `audit_log` for an operations action."""
    session.add(
        AuditEntry(
            at=utcnow(),
            actor=actor,
            tenant_id=tenant_id,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            details=details,
        )
    )


def create(
    session: Session,
    dead: DeadFilter,
    *,
    actor: str,
    rate_per_s: float | None = DEFAULT_RATE_PER_S,
    everything: bool = False,
    force: bool = False,
) -> tuple[ReplayJob, Plan]:
    """A running job holding every matching dead delivery (flushed; the caller commits)."""
    if not dead.narrows and not everything:
        raise ReplayRefused("no filter given: name what to replay, or set {option}", "all")
    checked = plan(session, dead)
    if (checked.paused or checked.disabled) and not force:
        raise ReplayRefused(
            f"refused: {checked.force_note}. Resume or re-enable those subscriptions, narrow "
            "the filter, or set {option} to replay anyway",
            "force",
        )
    now = utcnow()
    job = ReplayJob(
        id=new_id("rpl"),
        tenant_id=dead.tenant,
        actor=actor,
        filters=dead.to_json(),
        state=JOB_RUNNING,
        rate_per_s=rate_per_s,
        total=0,
        done=0,
        failed=0,
        skipped=0,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    session.flush()
    rows = select(
        literal(job.id),
        Delivery.id,
        func.row_number().over(order_by=(Delivery.finished_at, Delivery.id)),
        Delivery.replay_count,
        literal(ITEM_TODO),
    ).where(*dead.conditions())
    columns = ["job_id", "delivery_id", "seq", "base_replay_count", "state"]
    session.execute(insert(ReplayItem).from_select(columns, rows))
    job.total = (
        session.scalar(
            select(func.count()).select_from(ReplayItem).where(ReplayItem.job_id == job.id)
        )
        or 0
    )
    details = {"filters": job.filters, "total": job.total, "rate_per_s": rate_per_s}
    if force and checked.force_note:
        details["forced"] = checked.force_note
    audit(
        session,
        actor=actor,
        tenant_id=dead.tenant,
        action="replay.start",
        resource_type="replay_job",
        resource_id=job.id,
        details=details,
    )
    session.flush()
    return job, checked


def get(session: Session, job_id: str, *, tenant: str | None = None) -> ReplayJob | None:
    job = session.get(ReplayJob, job_id)
    if job is None or (tenant is not None and job.tenant_id != tenant):
        return None
    return job


def runner_alive(job: ReplayJob) -> bool:
    beat = job.heartbeat_at
    return (
        job.runner is not None and beat is not None and utcnow() - beat < timedelta(seconds=LEASE_S)
    )


def cancel(session: Session, job: ReplayJob, *, actor: str) -> ReplayJob:
    """Ask the runner to stop after its batch; a job nobody runs is cancelled at once."""
    if job.state not in (JOB_RUNNING, JOB_FAILED, JOB_CANCELLING):
        return job
    state = JOB_CANCELLING if job.state != JOB_FAILED and runner_alive(job) else JOB_CANCELLED
    now = utcnow()
    session.execute(
        update(ReplayJob)
        .where(ReplayJob.id == job.id, ReplayJob.state == job.state)
        .values(state=state, updated_at=now, finished_at=now if state == JOB_CANCELLED else None)
    )
    audit(
        session,
        actor=actor,
        tenant_id=job.tenant_id,
        action="replay.cancel",
        resource_type="replay_job",
        resource_id=job.id,
        details={"done": job.done, "total": job.total},
    )
    session.flush()
    session.refresh(job)
    return job


def pending_counts(session: Session, job_id: str) -> dict[str, int]:
    """How many of a job's items are in each state (todo, claimed, sent, skipped, failed)."""
    rows = session.execute(
        select(ReplayItem.state, func.count())
        .where(ReplayItem.job_id == job_id)
        .group_by(ReplayItem.state)
    )
    return dict(rows.tuples().all())
