"""Writes a batch of routed events and their delivery rows in one transaction.

Events are unique per (tenant, id), and only the transaction whose insert created an event
row publishes its deliveries: a repeated id (a producer retry, a second POST, a copy routed
by another router at the same moment) creates nothing and publishes nothing, so it is not
delivered twice even while the first copy is still queued.

The one exception is recovery: a router that committed the rows and died (or lost its
broker) before the delivery messages were confirmed leaves deliveries nobody will publish.
For events the caller names in `recover` — its message was redelivered, or this process
itself committed them without publishing — the deliveries that are not final yet are
published again, marked for the dispatcher to re-check.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import Select, Table, TextClause, bindparam, select, text, tuple_
from sqlalchemy.orm import Session

from common.db.bulk import POSTGRES, recordset
from common.db.models import Delivery, EventRow
from common.db.session import insert_ignoring_conflicts
from common.db.statuses import FINAL_STATUSES, DeliveryStatus
from common.db.types import UtcDateTime
from common.ids import day_of, event_day
from common.wire import Event, delivery_id_for, utcnow
from router.index import Target
from router.messages import EventMessages, Routed

Key = tuple[str, str]  # (tenant, event id)

_events = cast(Table, EventRow.__table__)
_deliveries = cast(Table, Delivery.__table__)
_STAMP = UtcDateTime()  # refuses naive timestamps, as an ORM insert of the column would

# One statement for the whole batch on PostgreSQL (see common/db/bulk.py): the rows go as
# JSON documents, and what every row shares (its time, the new delivery's state) as plain
# parameters. The deliveries are inserted only for the events the same statement created,
# so a batch is one round trip, with or without repeated ids. ON CONFLICT on deliveries
# only matters for a delivery row left without its event, which the router never writes.
#
# Partitioned by day (migration 0011), PostgreSQL keeps (tenant, id) unique per partition
# only. An event whose id carries its day (`common.ids.event_day`) always lands in that one
# partition, so ON CONFLICT alone sees a repeat; any other id is first looked for in every
# partition (`carried` false: the LATERAL look-up), and ON CONFLICT covers two copies at
# once. The look-up is a LATERAL with LIMIT so that every plan probes each partition's
# (tenant_id, id) index per row: as `carried OR NOT EXISTS (...)`, the generic plan of the
# prepared statement (which guesses 100 rows for a batch) hashed every events row of the
# day on every batch while the day was small enough (up to 6,000 to 9,000 events; 2.8 ms
# for a lone event's statement at 6,000, 0.55 ms as a probe): every day's first hour at
# 2 events/s, a small installation's whole day.
# `traceparent` is in a row only when the router traces: a field the JSON leaves out reads
# as NULL, so an untraced batch carries nothing more than before.
_EVENT_FIELDS = ("tenant_id", "id", "type", "operation", "timestamp", "data", "day", "traceparent")
_DELIVERY_FIELDS = ("id", "tenant_id", "event_id", "subscription_id", "event_type", "day")


def _columns(names: Sequence[str], alias: str = "") -> str:
    return ", ".join(f'{alias}"{name}"' for name in names)


# The look-up of ids that carry no day. A batch whose every id carries its day goes without
# it: gated by `NOT r.carried`, it finds nothing, yet PostgreSQL still opens every events
# partition's index for it on each statement (0.12 ms more for a lone event at 30 kept
# days, 0.44 ms at 90: docs/benchmarks.md, "Session 16").
_LOOKUP = (
    "LEFT JOIN LATERAL (SELECT true AS found FROM events e WHERE NOT r.carried "
    "AND e.tenant_id = r.tenant_id AND e.id = r.id LIMIT 1) known ON true "
    "WHERE known.found IS NULL "
)


def _insert_batch(lookup: str) -> TextClause:
    return text(
        f'WITH created AS (INSERT INTO events ({_columns(_EVENT_FIELDS)}, "received_at") '
        f"SELECT {_columns(_EVENT_FIELDS, 'r.')}, :now "
        f"FROM {recordset(_events, _EVENT_FIELDS, {'carried': 'boolean'})} "
        f"{lookup}"
        'ON CONFLICT DO NOTHING RETURNING "tenant_id", "id"), '
        f"inserted AS (INSERT INTO deliveries ({_columns(_DELIVERY_FIELDS)}, "
        '"status", "attempts", "replay_count", "created_at", "updated_at") '
        f"SELECT {_columns(_DELIVERY_FIELDS, 'd.')}, '{DeliveryStatus.PENDING}', 0, 0, "
        ":now, :now "
        f"FROM {recordset(_deliveries, _DELIVERY_FIELDS, param='deliveries', alias='d')} "
        "JOIN created c ON c.tenant_id = d.tenant_id AND c.id = d.event_id "
        "ON CONFLICT DO NOTHING) "
        'SELECT "tenant_id", "id" FROM created'
    ).bindparams(bindparam("now", type_=UtcDateTime()))


_PG_INSERT_BATCH = _insert_batch(_LOOKUP)  # a batch holding an id without its day
_PG_INSERT_CARRIED = _insert_batch("")  # every id of the batch carries its day


# Runs the batch's statement on a writer's own connection (`common.db.direct`): its rows.
Run = Callable[[TextClause, Mapping[str, Any]], Iterable[Sequence[Any]]]


def persist_batch(
    session: Session,
    routed: Sequence[tuple[Event, list[Target]]],
    recover: Collection[Key] = (),
    traceparents: Mapping[Key, str] | None = None,
) -> list[Routed]:
    """Insert new events and deliveries; return the delivery messages to publish.

    The caller commits, then publishes, then acks: a crash anywhere before the ack is
    repaired by the redelivery, whose key the caller passes in `recover`. On PostgreSQL
    the writes are one statement, so the session may run in autocommit. `traceparents`
    (when the router traces) is stored with each new event, for its replays.
    """
    if not routed:
        return []
    now = utcnow()
    batch = _Batch(routed, now)
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        statement, parameters = _pg_insert(batch, now, traceparents or {})
        created = {(t, i) for t, i in session.execute(statement, parameters).tuples()}
    else:
        created = _insert_sqlite(session, batch, now, traceparents or {})
    out = batch.messages(created)
    out.extend(_republish_unfinished(session, routed, set(recover) - created, now.date()))
    return out


def persist_new(
    run: Run,
    routed: Sequence[tuple[Event, list[Target]]],
    traceparents: Mapping[Key, str] | None = None,
) -> list[Routed]:
    """`persist_batch` on PostgreSQL for a batch with nothing to recover: the same one
    statement, run by `run` rather than through a session."""
    if not routed:
        return []
    now = utcnow()
    batch = _Batch(routed, now)
    statement, parameters = _pg_insert(batch, now, traceparents or {})
    return batch.messages({(t, i) for t, i in run(statement, parameters)})


class _Batch:
    """A batch's events (each id once) and the delivery rows of their targets."""

    def __init__(self, routed: Sequence[tuple[Event, list[Target]]], now: datetime) -> None:
        first: dict[Key, tuple[Event, list[Target]]] = {}
        for event, targets in routed:
            first.setdefault((event.tenant, event.id), (event, targets))  # once per batch
        self.first = first
        self.deliveries: dict[str, dict[str, object]] = {}
        # (delivery id, subscription id) per event
        self.ids: dict[Key, list[tuple[str, str]]] = {}
        for key, (event, targets) in first.items():
            self.ids[key] = []
            day = event_day(event.id, now.date())
            for target in targets:
                delivery_id = delivery_id_for(event.tenant, event.id, target.subscription_id, day)
                self.ids[key].append((delivery_id, target.subscription_id))
                self.deliveries[delivery_id] = {
                    "id": delivery_id,
                    "tenant_id": event.tenant,
                    "event_id": event.id,
                    "subscription_id": target.subscription_id,
                    "event_type": event.type,
                    "day": day,
                }
        self.events = [e for e, _ in first.values()]

    def messages(self, created: set[Key]) -> list[Routed]:
        """The delivery messages of the events this batch's insert created."""
        out: list[Routed] = []
        for key, (event, _) in self.first.items():
            if key in created:
                message = EventMessages(event)
                out.extend(message.to(d, sub, recheck=False) for d, sub in self.ids[key])
        return out


def _insert_sqlite(
    session: Session, batch: _Batch, now: datetime, traceparents: Mapping[Key, str]
) -> set[Key]:
    """Insert the batch's events, skipping ids that exist, and the deliveries of those it
    created; returns the keys of the events created."""
    bind = session.get_bind()
    statement = insert_ignoring_conflicts(bind, _events).returning(
        _events.c.tenant_id, _events.c.id
    )
    rows = [_event_row(e, now, traceparents.get((e.tenant, e.id))) for e in batch.events]
    result = session.execute(statement, rows)
    created = {(tenant, event_id) for tenant, event_id in result.tuples()}
    constant = {"status": DeliveryStatus.PENDING, "attempts": 0, "replay_count": 0}
    full = [
        {**row, **constant, "created_at": now, "updated_at": now}
        for row in batch.deliveries.values()
        if (row["tenant_id"], row["event_id"]) in created
    ]
    if full:
        session.execute(insert_ignoring_conflicts(bind, _deliveries), full)
    return created


def _pg_insert(
    batch: _Batch, now: datetime, traceparents: Mapping[Key, str]
) -> tuple[TextClause, dict[str, Any]]:
    """The batch's one statement on PostgreSQL and its parameters: it inserts the events,
    skipping ids that exist, and the deliveries of those it created, and returns the keys
    of the events created."""
    rows = [
        {
            "tenant_id": e.tenant,
            "id": e.id,
            "type": e.type,
            "operation": e.operation,
            "timestamp": _STAMP.process_bind_param(e.timestamp, POSTGRES),
            "data": e.data,
            "day": event_day(e.id, now.date()),
            "carried": _carried_day(e.id, now.date()) is not None,
        }
        for e in batch.events
    ]
    if traceparents:
        for event, row in zip(batch.events, rows, strict=True):
            traceparent = traceparents.get((event.tenant, event.id))
            if traceparent is not None:
                row["traceparent"] = traceparent
    deliveries = list(batch.deliveries.values())
    parameters = {"rows": _document(rows), "deliveries": _document(deliveries), "now": now}
    carried = all(row["carried"] for row in rows)
    return (_PG_INSERT_CARRIED if carried else _PG_INSERT_BATCH), parameters


def _document(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows as `json_to_recordset` reads them; datetimes as ISO 8601 (bound and checked
    as the column would bind them, see `_STAMP`)."""
    return json.dumps(rows, default=_iso, separators=(",", ":"))


def _iso(value: datetime | date) -> str:
    return value.isoformat()


def _carried_day(event_id: str, today: date) -> date | None:
    """The day an event id carries, when it is also the event's partition day."""
    day = day_of(event_id)
    return day if day is not None and event_day(event_id, today) == day else None


def _republish_unfinished(
    session: Session,
    routed: Sequence[tuple[Event, list[Target]]],
    recover: set[Key],
    today: date,
) -> list[Routed]:
    events = {(e.tenant, e.id): e for e, _ in routed if (e.tenant, e.id) in recover}
    if not events:
        return []
    # On PostgreSQL an event whose id carries its day was just refused by the unique key
    # of that day's partition: it lives there, and its deliveries with it. Any other
    # event may live on any day (every partition is read for those).
    carried: dict[Key, date] = {}
    if session.get_bind().dialect.name == "postgresql":
        for key, event in events.items():
            day = _carried_day(event.id, today)
            if day is not None:
                carried[key] = day
    rest = [key for key in events if key not in carried]

    def unfinished(keys: list[Key]) -> Select[Any]:
        return (
            select(Delivery.id, Delivery.tenant_id, Delivery.event_id, Delivery.subscription_id)
            .where(tuple_(Delivery.tenant_id, Delivery.event_id).in_(keys))
            .where(Delivery.status.not_in(FINAL_STATUSES))
        )

    queries = [unfinished(rest)] if rest else []
    if carried:
        days = sorted(set(carried.values()))
        queries.append(unfinished(list(carried)).where(Delivery.day.in_(days)))
    messages = {key: EventMessages(event) for key, event in events.items()}
    return [
        messages[(r.tenant_id, r.event_id)].to(r.id, r.subscription_id, recheck=True)
        for query in queries
        for r in session.execute(query)
    ]


def _event_row(event: Event, now: datetime, traceparent: str | None) -> dict[str, object]:
    return {
        "traceparent": traceparent,
        "tenant_id": event.tenant,
        "id": event.id,
        "type": event.type,
        "operation": event.operation,
        "timestamp": event.timestamp,
        "data": event.data,
        "received_at": now,
        "day": event_day(event.id, now.date()),
    }
