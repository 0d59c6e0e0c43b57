"""A routed batch in its two stages: written (decoded, matched and committed in one
statement, by one of the router's writer threads) and sending (its delivery messages handed
to the broker, until the confirm that acks its events)."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Collection, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from common import payload
from common.db.direct import DirectConnection
from common.db.session import single_statement
from common.errors import DecodeError, PublishError, TransportError
from common.filters import matches
from common.service import retry_database
from common.transport import Message, Outgoing, poison_copy
from common.wire import Event, decode
from router.index import SubscriptionIndex, Target
from router.loader import IndexLoader
from router.messages import Routed
from router.persist import Key, persist_batch, persist_new
from router.traces import RouteSpans

if TYPE_CHECKING:
    from common.tracing import Tracing

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Written:
    """A batch whose rows are committed; its messages are not on the broker yet."""

    batch: Sequence[Message]
    keys: set[Key]  # every event of the batch
    unclear: set[Key]  # events this write committed, or may have (a try that failed)
    out: list[Routed]
    events: int
    poisoned: list[Outgoing]  # copies of the undecodable or unmatchable messages, for poison
    spans: RouteSpans | None

    def end_spans(self, error: BaseException | None = None) -> None:
        if self.spans is not None:
            self.spans.end(error)


@dataclass(frozen=True, eq=False)
class Sending:
    """A written batch whose messages are on their way to the broker."""

    written: Written
    confirmed: Future[None]
    due: float  # monotonic time by which the confirm must be in
    carried: set[Key]  # the events whose delivery messages it carries
    deliveries: int

    @property
    def batch(self) -> Sequence[Message]:
        return self.written.batch

    def wait(self) -> None:
        """Wait for the confirm until `due`; the batch's route spans end here, failed or not."""
        try:
            self.confirmed.result(timeout=max(0.0, self.due - time.monotonic()))
        except concurrent.futures.TimeoutError:
            late = PublishError(f"no confirm for a batch of {len(self.batch)} in time")
            self.written.end_spans(late)
            raise late from None
        except BaseException as exc:
            self.written.end_spans(exc)
            raise
        self.written.end_spans()


class Writer:
    """Decodes, matches and commits a batch: what may run on several threads at once.

    Two copies of one event id in two batches at once are safe: the second statement waits
    on the first's unique key, then inserts nothing and so publishes nothing."""

    def __init__(
        self, loader: IndexLoader, sessions: sessionmaker[Session], tracing: Tracing | None
    ) -> None:
        self._loader = loader
        self._sessions = sessions
        self._tracing = tracing  # None: tracing is off, and costs nothing
        # On PostgreSQL a batch with nothing to recover goes on its thread's own connection.
        bind = sessions.kw["bind"]
        self._engine: Engine | None = bind if bind.dialect.name == "postgresql" else None
        self._local = threading.local()

    def _direct(self) -> DirectConnection | None:
        if self._engine is None:
            return None
        direct: DirectConnection | None = getattr(self._local, "direct", None)
        if direct is None:
            direct = self._local.direct = DirectConnection(self._engine)
        return direct

    def release(self) -> None:
        """Close the calling thread's own connection (a writer thread that leaves)."""
        direct: DirectConnection | None = getattr(self._local, "direct", None)
        if direct is not None:
            self._local.direct = None
            direct.close()

    def write(
        self, batch: Sequence[Message], unpublished: Collection[Key], stop: threading.Event
    ) -> Written:
        """`unpublished`: events this router committed without publishing their messages;
        their deliveries are published again, as are those of redelivered events."""
        events: list[Event] = []
        redelivered: set[Key] = set()
        poisoned: list[Outgoing] = []
        decoded: list[tuple[Message, Event]] = []
        for message in batch:
            try:
                event = storable(decode(Event, message.body))
            except DecodeError as exc:
                # The id only: what the model or the data check says may quote the body.
                log.warning("event could not be decoded; moved to poison",
                            extra={"message_id": message.message_id})  # fmt: skip
                poisoned.append(poison_copy(message, "undecodable", str(exc)))
                continue
            events.append(event)
            decoded.append((message, event))
            if message.redelivered or message.delivery_count:
                redelivered.add((event.tenant, event.id))
        spans = RouteSpans(self._tracing, decoded) if self._tracing is not None else None
        keys = {(e.tenant, e.id) for e in events}
        # Written by a try whose statement failed (it may have landed), or by the last try.
        unclear: set[Key] = set()

        # Events whose matching raised (a filter this version cannot read), by position in
        # `events` (and so in `decoded`): poison each on its own, and route the rest of the
        # batch without splitting it.
        unmatchable: dict[int, BaseException] = {}

        def match_and_persist() -> list[Routed]:
            routed = match(self._loader.current(), events, unmatchable)
            recover = redelivered | unclear | (keys & set(unpublished))
            traced = spans.traceparents() if spans is not None else None
            direct = self._direct() if not recover else None
            try:
                if direct is not None:
                    out = persist_new(direct.run, routed, traced)
                else:
                    with self._sessions() as session, session.begin():
                        single_statement(session)  # the batch's writes are one statement
                        out = persist_batch(session, routed, recover, traced)
                unclear.update((r.event.tenant, r.event.id) for r in out)
            except DBAPIError as exc:
                if not is_data_error(exc):  # e.g. the connection lost: it may have landed
                    unclear.update(keys)
                raise
            return out

        # In place: the consuming thread keeps the batch unacked and the connection pumped,
        # so a database outage costs no redelivery (see retry_database).
        try:
            out = retry_database(match_and_persist, abandon=stop)
        except BaseException as exc:
            if spans is not None:
                spans.end(exc)
            raise
        for n, error in unmatchable.items():
            message = decoded[n][0]
            log.warning(
                "event could not be matched; moved to poison",
                extra={"message_id": message.message_id, "error": describe(error)},
            )
            poisoned.append(poison_copy(message, "handler_error", describe(error)))
        routed = len(events) - len(unmatchable)
        return Written(batch, keys, unclear, out, routed, poisoned, spans)


def storable(event: Event) -> Event:
    """`event`, once its data holds nothing its row cannot: raise `DecodeError` (poison,
    alone) for data that the SDK and the API refuse (`common.payload`: a NUL, NaN...; the
    model refuses a time without a zone or outside years 1-9999 in UTC). Those doors check
    it; an event published straight to the exchange got here unchecked, and the statement
    refusing it would split its batch at the cost of every other tenant in it."""
    try:
        payload.check(event.data, "data")
    except payload.UnstorableValue as exc:
        raise DecodeError(f"Event: {exc}") from None
    return event


def match(
    index: SubscriptionIndex, events: Sequence[Event], unmatchable: dict[int, BaseException]
) -> list[tuple[Event, list[Target]]]:
    """Each event with the targets that want it, but those in (or now added to)
    `unmatchable`: matching is pure, so an event whose matching raises (a bug, or a filter
    written by a newer version) would raise on every try; one such event must not fail the
    batch, which would be split down to it at the cost of every other tenant in it."""
    routed = []
    for n, event in enumerate(events):
        if n in unmatchable:
            continue
        try:
            targets = index.match(event.tenant, event.type, event.operation)
            routed.append((event, [t for t in targets if wants(t, event)]))
        except Exception as exc:
            unmatchable[n] = exc
    return routed


def refused(exc: BaseException) -> bool:
    """Whether a batch failed for what it holds (split it to find the culprits) rather
    than because the database or the broker is away (the session's concern). A pool
    with no connection free in its timeout is the database away too (too slow to hand
    one back), not a bad row: split, every event of the batch would be poisoned."""
    if isinstance(exc, (OperationalError, TransportError, PoolTimeout)):
        return False
    if isinstance(exc, DBAPIError):
        return is_data_error(exc)
    return isinstance(exc, Exception)


def is_data_error(exc: BaseException) -> bool:
    """A database error caused by one row's data rather than by the database being away."""
    return (
        isinstance(exc, DBAPIError)
        and not exc.connection_invalidated
        and not isinstance(exc, OperationalError)
    )


def describe(exc: BaseException) -> str:
    """An error as its class (and SQLSTATE), never its message: what the database says
    about a refused row quotes the row."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    sqlstate = getattr(cause, "sqlstate", None)
    return f"{type(cause).__name__} (SQLSTATE {sqlstate})" if sqlstate else type(cause).__name__


def wants(target: Target, event: Event) -> bool:
    """The subscription's payload filter (validated when it was saved) passes the event."""
    return matches(target.payload_filter, event.data)
