"""One consumer session's routing, shared by the router's threads: the events waiting for a
writer, the writer threads themselves (take a batch, write it, publish it, or split one the
database or the broker refused), and the batches awaiting their confirm (acked from the
publisher's thread when it comes, failed by the consuming thread when it is overdue).
`worker.py` runs the consuming side.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from common.transport import Consumer, Message, Outgoing, poison_copy
from common.transport import topology as tp
from router.batches import Sending, Written, describe, refused
from router.persist import Key

if TYPE_CHECKING:
    from router.worker import Router

log = logging.getLogger(__name__)

# Batches handed to the broker that await their confirm. A writer takes no new batch while
# this many are out: what arrives meanwhile joins the next batch, so a burst goes in full
# batches (fewer commits and confirms) rather than as fast as writers come back.
IN_FLIGHT = 2


class Routing:
    """One consumer session's routing: the events waiting, the writer threads, and the
    batches awaiting their confirm. Its state is shared by the consuming thread, the
    writers and the publisher's thread (which settles confirms), under one lock."""

    def __init__(self, router: Router, consumer: Consumer) -> None:
        self._router = router
        self._consumer = consumer
        self.ending = threading.Event()  # stopping or failed: a database retry gives up
        self._wake = threading.Condition(threading.Lock())
        # Under `_wake`, like everything below.
        self._waiting: deque[Message] = deque()
        self._to_split: deque[Sequence[Message]] = deque()  # whose publish failed after all
        self._closing = False  # no more events come
        self._over = False  # the session ends: writers finish what they hold and leave
        self._failure: BaseException | None = None
        self._in_flight: dict[Sending, None] = {}  # awaiting their confirm, oldest first
        # Events whose rows this session committed but whose delivery messages failed to
        # go out: routed again, they are published although their id is known. (Not those
        # merely in flight: a repeat arriving meanwhile must publish nothing.)
        self._unpublished: set[Key] = set()
        self._writers = [
            threading.Thread(target=self._write_loop, name=f"router-write-{n}", daemon=True)
            for n in range(router.writer_count)
        ]
        for thread in self._writers:
            thread.start()

    # The consuming thread.

    def offer(self, message: Message) -> None:
        with self._wake:
            self._waiting.append(message)
            self._wake.notify()

    def check(self) -> None:
        """Raise what ended the session, or fail the oldest batch if its confirm is overdue."""
        with self._wake:
            oldest = next(iter(self._in_flight), None)
            if oldest is not None and oldest.due <= time.monotonic():
                del self._in_flight[oldest]
                self._wake.notify_all()  # as `_confirmed` does
            else:
                oldest = None
        if oldest is not None:
            self._settle(oldest)  # the confirm may have come just now; if not, it fails
        if self._failure is not None:
            raise self._failure

    def close(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify_all()

    def finished(self) -> bool:
        return not any(thread.is_alive() for thread in self._writers)

    def end(self, timeout_s: float) -> None:
        self.ending.set()
        with self._wake:
            self._closing = self._over = True
            self._wake.notify_all()
        deadline = time.monotonic() + timeout_s
        for thread in self._writers:
            thread.join(max(0.0, deadline - time.monotonic()))

    # The writer threads.

    def _write_loop(self) -> None:
        try:
            while True:
                with self._wake:
                    while not self._ready():
                        self._wake.wait()
                    if self._over or self._failure is not None:
                        return
                    split = bool(self._to_split)
                    if split:
                        batch = self._to_split.popleft()
                    elif self._waiting:
                        take = min(len(self._waiting), self._router.batch_size)
                        batch = [self._waiting.popleft() for _ in range(take)]
                    else:
                        return  # closing, and every batch settled
                if split:
                    self._bisect(batch)
                else:
                    self._route(batch)
        except BaseException as exc:  # the consuming thread raises it, and reconnects
            self._fail(exc)
        finally:
            self._router.writer.release()

    def _ready(self) -> bool:
        """Whether a writer has something to do (under `_wake`): a batch to write (once
        fewer than `IN_FLIGHT` await their confirm) or to split, or leaving. A closing
        session's writers stay until every confirm is in: a failed one leaves a batch to
        split."""
        if self._over or self._failure is not None or self._to_split:
            return True
        if self._waiting:
            return len(self._in_flight) < IN_FLIGHT
        return self._closing and not self._in_flight

    def _route(self, batch: Sequence[Message]) -> None:
        try:
            sending = self._publish(self._write(batch))
        except BaseException as exc:
            if not refused(exc):
                raise  # the database or the broker is away: the session's concern
            self._bisect(batch)
            return
        with self._wake:
            self._in_flight[sending] = None
        sending.confirmed.add_done_callback(lambda _: self._confirmed(sending))

    def _write(self, batch: Sequence[Message]) -> Written:
        with self._wake:
            unpublished = frozenset(self._unpublished)
        return self._router.writer.write(batch, unpublished, self.ending)

    def _bisect(self, batch: Sequence[Message]) -> None:
        """Route `batch` in halves, recursively, each confirmed before the next, on this
        writer: one bad row among 200 costs about 16 transactions, not 200, and a bad event
        poisons only its own message, never the session (and so never another tenant's
        routing)."""
        try:
            sending = self._publish(self._write(batch))
        except BaseException as exc:
            if not refused(exc):
                raise
            failed = exc
        else:
            try:
                sending.wait()
            except BaseException as exc:
                if not refused(exc):
                    raise
                with self._wake:
                    self._unpublished.update(sending.carried)  # published when routed again
                failed = exc
            else:
                self._done(sending)
                return
        if len(batch) > 1:
            half = len(batch) // 2
            self._bisect(batch[:half])
            self._bisect(batch[half:])
            return
        self._poison(batch[0], failed)

    def _poison(self, message: Message, exc: BaseException) -> None:
        # Ids and the error's class only: a driver's message quotes the statement's
        # parameters and the refused value, which are tenants' event data.
        error = describe(exc)
        log.warning(
            "event could not be routed; moved to poison",
            extra={"message_id": message.message_id, "error": error},
        )
        self._router.transport.publish([poison_copy(message, "handler_error", error)])
        self._router.metrics.dead_letters.labels(reason="poison").inc()
        self._consumer.ack(message)

    def _publish(self, written: Written) -> Sending:
        """Hand a committed batch's messages to the broker, each to its tenant's shard."""
        router = self._router
        try:
            out = written.out
            outgoing = [
                Outgoing(
                    tp.DELIVERIES,
                    tp.DELIVERY_ROUTING_KEY,
                    r.body,
                    router.spill.headers(r.event.tenant, recheck=r.recheck),
                    r.delivery_id,
                )
                for r in out
            ]
            if written.spans is not None:
                outgoing = written.spans.carried(outgoing, [r.event for r in out])
            timeout_s = router.settings.publish_timeout_s
            confirmed = router.transport.submit(outgoing + written.poisoned, timeout_s=timeout_s)
        except BaseException as exc:
            with self._wake:  # committed, never handed to the broker
                self._unpublished.update(written.unclear)
            written.end_spans(exc)
            raise
        carried = {(r.event.tenant, r.event.id) for r in out}
        due = time.monotonic() + timeout_s
        return Sending(written, confirmed, due, carried, len(outgoing))

    # Whichever thread settles a confirm: the publisher's, or the consuming one when late.

    def _confirmed(self, sending: Sending) -> None:
        with self._wake:
            if self._in_flight.pop(sending, self) is self:
                return  # failed as overdue already
            # A writer may take the next batch now; or, closing, leave once all are in.
            self._wake.notify_all()
        self._settle(sending)

    def _settle(self, sending: Sending) -> None:
        """Ack a confirmed batch; one whose publishing failed for what it carries goes to
        a writer to be split, anything else ends the session."""
        try:
            try:
                sending.wait()
            except BaseException as exc:
                if not refused(exc):
                    raise  # the session ends; the unacked batch comes back marked redelivered
                log.warning(
                    "publishing a routed batch failed; routing it again in parts",
                    extra={"error": describe(exc)},
                )
                with self._wake:
                    self._unpublished.update(sending.carried)
                    self._to_split.append(sending.batch)
                    self._wake.notify()
                return
            self._done(sending)
        except BaseException as exc:
            self._fail(exc)

    def _done(self, sending: Sending) -> None:
        written = sending.written
        with self._wake:
            self._unpublished.difference_update(written.keys)
        self._consumer.ack_many(written.batch)
        metrics = self._router.metrics
        metrics.events_routed.inc(written.events)
        metrics.deliveries_enqueued.labels(origin="new").inc(sending.deliveries)
        if written.poisoned:
            metrics.dead_letters.labels(reason="poison").inc(len(written.poisoned))

    def _fail(self, exc: BaseException) -> None:
        self.ending.set()
        with self._wake:
            if self._failure is None:
                self._failure = exc
            self._wake.notify_all()
