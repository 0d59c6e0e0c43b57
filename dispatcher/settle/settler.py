"""Settling outcomes: the one place that records attempts, publishes onward copies and acks.

Sending threads hand their outcomes to one settler thread, which takes them in batches: one
transaction for the attempt and delivery rows of the whole batch, then one confirmed publish
for every retry copy, dead letter and poison message, and only then the acks. If the write
or the publish fails nothing of the batch is acked, so the broker hands it out again. On
PostgreSQL a batch with no failure streak, no new header shape and nothing to disable (the
common one) is written as one statement in autocommit (`rows_pg.record_statement`), on the
settler's own connection (`common.db.direct`), not through a session.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, cast

from sqlalchemy import Table
from sqlalchemy.orm import Session, sessionmaker

from common.background import BackgroundThread
from common.db.bulk import insert_rows
from common.db.direct import DirectConnection
from common.db.models import Attempt
from common.db.statuses import DeliveryStatus
from common.ids import day_of
from common.metrics import Metrics
from common.payload import storable_text
from common.service import retry_database
from common.transport import Consumer, Transport
from common.transport import topology as tp
from common.wire import utcnow
from dispatcher.outcome import Attempted, Outcome
from dispatcher.policy import autodisable
from dispatcher.policy.retry import DeadReason, Verdict
from dispatcher.settle import rows_pg
from dispatcher.settle.counts import SettleCounts
from dispatcher.settle.header_sets import HeaderSets, name_header_sets
from dispatcher.settle.onward import onward_message
from dispatcher.settle.rows import unstored, update_deliveries
from dispatcher.traces import SettleSpans

if TYPE_CHECKING:
    from common.tracing import Tracing

log = logging.getLogger(__name__)

BATCH_SIZE = 200
LINGER_S = 0.005  # gathering sleeps this long, again while outcomes came meanwhile
LINGER_MAX_S = 0.02  # and this long at most from the batch's first
STORED_BODY_BYTES = 4096
_STATUS_BY_OUTCOME = {
    Verdict.SUCCESS: DeliveryStatus.SUCCEEDED,
    Verdict.RETRY: DeliveryStatus.RETRYING,
    Verdict.DEAD: DeliveryStatus.DEAD,
}
DEFAULT_POLICY = autodisable.Policy(failing_for=timedelta(days=5), dead_in_a_row=100)
# A subscription this settler saw succeed and left with no streak is not reset again for
# this long: a success-only batch then writes nothing to `subscriptions`. A streak another
# dispatcher starts meanwhile ends at most this much later than it would have.
KNOWN_CLEAN_S = 5.0

_attempts = cast(Table, Attempt.__table__)


class Settler(BackgroundThread):
    """The settling thread of one consumer session. `stop` settles what is queued first."""

    def __init__(
        self,
        consumer: Consumer,
        transport: Transport,
        sessionmaker: sessionmaker[Session],
        metrics: Metrics,
        *,
        publish_timeout_s: float,
        on_disabled: Callable[[str, str], None] = lambda _id, _reason: None,
        policy: autodisable.Policy = DEFAULT_POLICY,
        batch_size: int = BATCH_SIZE,
        shards: int = tp.DEFAULT_SHARDS,
        tracing: Tracing | None = None,
    ) -> None:
        super().__init__("hookline-settler")
        self._tracing = tracing  # None: off; otherwise a settle span per traced outcome
        self._consumer = consumer
        self._transport = transport
        self._sessionmaker = sessionmaker
        bind = sessionmaker.kw["bind"]
        # On PostgreSQL the common batch's one statement goes on this thread's connection.
        self._direct = DirectConnection(bind) if bind.dialect.name == "postgresql" else None
        self._metrics = metrics
        self._publish_timeout_s = publish_timeout_s
        self._on_disabled = on_disabled
        self._policy = policy
        self._batch_size = batch_size
        self._shards = shards
        self._queue: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._clean_at: dict[str, float] = {}  # subscription id -> when known streak-free
        self._header_sets = HeaderSets()
        self._counts = SettleCounts(metrics)
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        """Messages taken from the queue and not settled yet."""
        with self._lock:
            return self._held

    def hold(self) -> None:
        with self._lock:
            self._held += 1

    def put(self, outcome: Outcome) -> None:
        self._queue.put(outcome)

    def run(self) -> None:
        """Settle in batches until stopped with nothing queued, or until a failure (a
        dependency that failed outside, through `fail`, stops settling too)."""
        try:
            self._settle_until_stopped()
        finally:
            if self._direct is not None:
                self._direct.close()

    def _settle_until_stopped(self) -> None:
        while self.failure is None:
            try:
                batch = [self._queue.get(timeout=0.1)]
            except queue.Empty:
                if self.stopping.is_set():
                    return
                continue
            # Gather while outcomes keep coming: the settler sleeps `LINGER_S`, takes what
            # came meanwhile, and sleeps again while something did, up to `LINGER_MAX_S`
            # from the first. A lone delivery is settled `LINGER_S` after its outcome; a
            # stream shares each statement and each ack among what arrives in `LINGER_MAX_S`,
            # however quick the statement. (A fixed `LINGER_S` from the first left the
            # one-statement form's batches so small that a drain's costs per delivery grew:
            # RabbitMQ's by half, the dispatchers' by a sixth, PostgreSQL's by a quarter. And
            # a wait for each next outcome woke this thread once per outcome: four times as
            # many switches, a tenth more of its CPU. Architecture section 1.)
            first = time.monotonic()
            while len(batch) < self._batch_size:
                wait = min(LINGER_S, first + LINGER_MAX_S - time.monotonic())
                if wait > 0:
                    time.sleep(wait)
                if not self._take(batch) or wait <= 0:
                    break
            try:
                self.settle(batch)
            except Exception as exc:
                log.warning("settling failed; the batch stays unacked", exc_info=True)
                self.fail(exc)

    def _take(self, batch: list[Outcome]) -> int:
        """Move what is queued into `batch`, up to the batch size; how many came."""
        took = 0
        while len(batch) < self._batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
            took += 1
        return took

    def settle(self, batch: Sequence[Outcome]) -> None:
        """Record, publish onward, ack, count: for every outcome of the batch, in that order."""
        if self._tracing is None:
            self._settle(batch)
            return
        spans = SettleSpans(self._tracing, batch)
        try:
            self._settle(batch)
        except BaseException as exc:
            spans.end(exc)
            raise
        spans.end()

    def _settle(self, batch: Sequence[Outcome]) -> None:
        attempted = [o for o in batch if isinstance(o, Attempted)]
        if attempted:
            self._record(attempted)
        onward = [m for o in batch if (m := onward_message(o, self._shards)) is not None]
        if onward:
            self._transport.publish(onward, timeout_s=self._publish_timeout_s)
        self._consumer.ack_many([outcome.message for outcome in batch])
        with self._lock:
            self._held -= len(batch)
        for outcome in batch:
            self._counts.count(outcome)

    def _record(self, attempted: Sequence[Attempted]) -> None:
        now = utcnow()
        attempts, updates, disabled = [], [], set()
        shapes = {o.result.shape.digest: o.result.shape for o in attempted if o.result.shape}
        for o in attempted:
            delivery, decision, result = o.delivery, o.decision, o.result
            final = decision.outcome != Verdict.RETRY
            error = storable_text(result.error) if result.error else result.error
            # The receiver's own bytes: a NUL in them would fail the whole batch's write.
            body = storable_text(result.body[:STORED_BODY_BYTES].decode("utf-8", "replace"))
            attempts.append(
                {
                    "delivery_id": delivery.delivery_id,
                    "attempt": delivery.attempt,
                    "outcome": decision.outcome,
                    "status_code": result.status_code,
                    "duration_s": result.duration_s,
                    "error": error,
                    "response_body": body or None,
                    # When it was signed (`webhook-timestamp`), or began if nothing was sent.
                    "created_at": result.signed_at or o.started_at,
                    # The delivery's partition day (migration 0011); today for old ids.
                    "day": day_of(delivery.delivery_id) or now.date(),
                }
            )
            next_at = None if final else now + timedelta(seconds=decision.delay_s or 0)
            updates.append(
                {
                    "id": delivery.delivery_id,
                    "replay": delivery.replay,
                    "attempts": delivery.attempt,
                    "status": _STATUS_BY_OUTCOME[decision.outcome],
                    "last_status_code": result.status_code,
                    "last_error": error,
                    "dead_reason": decision.reason,
                    "next_attempt_at": next_at,
                    "updated_at": now,
                    "finished_at": now if final else None,
                }
            )
            if decision.disable_subscription:
                disabled.add(delivery.subscription_id)

        streaks = autodisable.streaks(attempted)
        known_clean = time.monotonic() - KNOWN_CLEAN_S
        to_write = {
            sid: streak
            for sid, streak in streaks.items()
            if streak.failed or self._clean_at.get(sid, -KNOWN_CLEAN_S) < known_clean
        }

        known_ids = self._header_sets.known(shapes.values())
        healthy = [sid for sid, streak in to_write.items() if not streak.failed]
        direct = self._direct
        one_statement = (
            direct is not None
            and known_ids is not None
            and not disabled
            and len(healthy) == len(to_write)
        )

        tries = 0

        def write() -> tuple[list[autodisable.Disabled], dict[str, int]]:
            nonlocal tries
            tries += 1
            if one_statement:  # the common batch: nothing fails, nothing new
                assert direct is not None and known_ids is not None
                name_header_sets(attempts, [o.result.shape for o in attempted], known_ids)
                # In autocommit a try whose answer was lost may have landed: a retry
                # stores none of the attempts that one stored.
                unclear = tries > 1
                direct.run(*rows_pg.record_statement(attempts, updates, healthy, unclear=unclear))
                return [], known_ids
            with self._sessionmaker() as session, session.begin():
                ids = self._header_sets.ids(session, shapes.values()) if shapes else {}
                name_header_sets(attempts, [o.result.shape for o in attempted], ids)
                # A try whose COMMIT's answer was lost may have committed: a retry stores
                # none of the attempts that one stored.
                insert_rows(
                    session, _attempts, unstored(session, attempts) if tries > 1 else attempts
                )
                update_deliveries(session, updates)
                newly = autodisable.apply(session, to_write, disabled, self._policy, now)
                if newly:
                    # Announced before the disable commits: a failed publish rolls it back
                    # (and the batch comes back), so a disable is never left unannounced.
                    # A commit that fails after the publish can announce it twice.
                    events = autodisable.events(newly, now)
                    self._transport.publish(events, timeout_s=self._publish_timeout_s)
                return newly, ids

        # The batch's messages stay unacked meanwhile; the consumer keeps them, see
        # `retry_database` for why the session is not given up at the first error.
        newly_disabled, header_set_ids = retry_database(write, abandon=self.stopping)
        self._header_sets.remember(header_set_ids)
        self._remember_clean(to_write)
        for d in newly_disabled:
            extra = {"subscription_id": d.subscription_id, "reason": d.reason, "ended": d.ended}
            log.warning("subscription disabled", extra=extra)
            self._on_disabled(d.subscription_id, d.reason)
            self._metrics.subscriptions_disabled.labels(reason=d.reason).inc()
            # Counted now, as they end, not when their queued copies come back (refused).
            self._metrics.finished.labels(result="dead").inc(d.ended)
            self._metrics.dead_letters.labels(reason=DeadReason.ENDPOINT_DISABLED).inc(d.ended)

    def _remember_clean(self, written: dict[str, autodisable.Streak]) -> None:
        written_at = time.monotonic()
        for sid, streak in written.items():
            if streak.failed:
                self._clean_at.pop(sid, None)
            else:
                self._clean_at[sid] = written_at
        if len(self._clean_at) > 100_000:  # bounded: forget the oldest half
            for sid in sorted(self._clean_at, key=self._clean_at.__getitem__)[:50_000]:
                del self._clean_at[sid]
