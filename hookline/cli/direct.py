"""The operator commands' direct mode (no `HOOKLINE_API_URL`: an in-cluster job with the
database and broker at hand). It calls what the API's routes call and shapes each answer
with the routes' own models, so `-o json` and the tables are the same in both modes."""

from __future__ import annotations

import getpass
import threading
from collections.abc import Callable
from typing import Any

from common.db.models import PoisonMessage, ReplayJob
from common.instants import InstantError, parse_instant
from common.service import install_stop_handlers
from common.settings import Settings
from dispatcher.deadletters import (
    DeadFilter,
    FilterError,
    PoisonFilter,
    ResubmitError,
    drain_poison,
    list_dead,
    list_poison,
    show_dead,
    summarize_dead,
)
from dispatcher.replay import (
    JobBusy,
    ReplayRefused,
    Runner,
    cancel_job,
    create_job,
    get_job,
    plan_replay,
)
from hookline.api.cursor import decode_position, encode_position
from hookline.api.errors import ApiError
from hookline.api.ops_schemas import (
    DeadLetterSummary,
    PoisonPurgeRequest,
    PurgeRequest,
    ReplayCreate,
)
from hookline.api.routes.deadletters import dead_letter_detail, dead_letter_out, poison_out
from hookline.api.routes.replays import job_out, plan_out
from hookline.cli.direct_admin import DirectAdmin, as_json, refused, valid
from hookline.runtime import Runtime, build_runtime
from hookline.services import poison
from hookline.services.audit import CLI, Actor
from hookline.services.deadletters import PurgeRefused, purge, refuse_unnamed

Json = dict[str, Any]
FLAGS = {"all": "--all", "force": "--force"}
SHELL = Actor(CLI)


_refused = refused


def _when(text: str | None, name: str) -> Any:
    if text is None:
        return None
    try:
        return parse_instant(text)
    except InstantError as exc:
        raise _refused("validation_error", f"{name}: {exc}") from None


def dead_filter(query: Json, ids: tuple[str, ...] = ()) -> DeadFilter:
    try:
        return DeadFilter(
            tenant=query.get("tenant"),
            subscription=query.get("subscription_id"),
            event_type=query.get("event_type"),
            reason=query.get("reason"),
            status_class=query.get("status_class"),
            since=_when(query.get("since"), "query.since"),
            until=_when(query.get("until"), "query.until"),
            ids=ids,
        )
    except FilterError as exc:
        raise _refused("validation_error", str(exc)) from None


def _body_filter(body: PurgeRequest | ReplayCreate, ids: tuple[str, ...] = ()) -> DeadFilter:
    """A request body's filters (its times already read by the API's own types)."""
    try:
        return DeadFilter(
            tenant=body.tenant, subscription=body.subscription_id, event_type=body.event_type,
            reason=body.reason, status_class=body.status_class, since=body.since,
            until=body.until, ids=ids,
        )  # fmt: skip
    except FilterError as exc:
        raise _refused("validation_error", str(exc)) from None


def actor() -> str:
    """Who acts, for the audit log: the shell and the operator's login name."""
    return f"cli:{getpass.getuser()}"[:64]


def _position(cursor: str | None) -> Any:
    try:
        return decode_position(cursor) if cursor else None
    except ApiError as exc:
        raise _refused(exc.code, exc.message) from None


class DirectOps(DirectAdmin):
    """The database and the broker of this deployment, as the API's routes use them."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._taken: dict[str, Runner] = {}  # jobs `resume` took over, for `follow` to run
        self._show: Callable[[Json], None] = lambda _job: None

    @classmethod
    def open(cls) -> DirectOps:
        return cls(build_runtime(Settings()))

    def close(self) -> None:
        self.rt.close()

    def dead_letters(self, query: Json, limit: int, cursor: str | None) -> Json:
        dead, after = dead_filter(query), _position(cursor)
        with self.rt.sessionmaker() as session:
            rows = list_dead(session, dead, limit=limit + 1, after=after)
        more, rows = len(rows) > limit, rows[:limit]
        last = rows[-1] if more else None
        next_cursor = (
            encode_position(last.finished_at, last.id) if last and last.finished_at else None
        )
        return {"data": [as_json(dead_letter_out(r)) for r in rows], "next_cursor": next_cursor}

    def dead_summary(self, query: Json) -> Json:
        with self.rt.sessionmaker() as session:
            summary = summarize_dead(session, dead_filter(query))
        return as_json(DeadLetterSummary(**summary.to_json()))

    def poison(self, query: Json, limit: int, cursor: str | None) -> Json:
        wanted = PoisonFilter(
            query.get("tenant"), None, _when(query.get("since"), "query.since"),
            _when(query.get("until"), "query.until"),
        )  # fmt: skip
        after = _position(cursor)
        self.rt.transport.declare(self.rt.topology())
        drain_poison(self.rt.transport, self.rt.sessionmaker)
        with self.rt.sessionmaker() as session:
            rows = list_poison(session, wanted, limit=limit + 1, after=after)
        more, rows = len(rows) > limit, rows[:limit]
        next_cursor = encode_position(rows[-1].received_at, rows[-1].id) if more else None
        return {"data": [as_json(poison_out(r)) for r in rows], "next_cursor": next_cursor}

    def dead_letter(self, delivery_id: str) -> Json:
        with self.rt.sessionmaker() as session:
            found = show_dead(session, delivery_id, tenant=None)
            if found is None:
                raise _refused("not_found", "dead letter not found", 404)
            return as_json(dead_letter_detail(session, found))

    def purge(self, body: Json) -> Json:
        wanted: PurgeRequest = valid(PurgeRequest, body)
        dead = _body_filter(wanted)
        with self.rt.sessionmaker() as session, session.begin():
            try:
                done = purge(
                    session, dead, actor=actor(), everything=wanted.all, dry_run=wanted.dry_run
                )
            except PurgeRefused as exc:
                raise _refused(exc.code, exc.worded(FLAGS), 409) from None
        return done.to_json()

    def purge_poison(self, body: Json) -> Json:
        wanted: PoisonPurgeRequest = valid(PoisonPurgeRequest, body)
        selected = PoisonFilter(wanted.tenant, wanted.source_queue, wanted.since, wanted.until)
        try:
            refuse_unnamed(selected, everything=wanted.all)  # before the drain, as the API
            self.rt.transport.declare(self.rt.topology())
            drain_poison(self.rt.transport, self.rt.sessionmaker)
            with self.rt.sessionmaker() as session, session.begin():
                done = poison.purge(
                    session, selected, actor=actor(), everything=wanted.all,
                    dry_run=wanted.dry_run,
                )  # fmt: skip
        except PurgeRefused as exc:
            raise _refused(exc.code, exc.worded(FLAGS), 409) from None
        return done.to_json()

    def resubmit_poison(self, poison_id: str, body: bytes | None) -> Json:
        self.rt.transport.declare(self.rt.topology())
        with self.rt.sessionmaker() as session, session.begin():
            row = session.get(PoisonMessage, poison_id)
            if row is None:
                raise _refused("not_found", "poison message not found", 404)
            try:
                poison.resubmit(
                    session, self.rt.transport, row, body=body, actor=actor(),
                    publish_timeout_s=self.rt.settings.publish_timeout_s,
                    shards=self.rt.settings.delivery_shards,
                )  # fmt: skip
            except ResubmitError as exc:
                raise _refused("not_resubmittable", str(exc)) from None
            session.flush()
            return as_json(poison_out(row))

    def replay(self, body: Json) -> Json:
        wanted: ReplayCreate = valid(ReplayCreate, body)
        dead = _body_filter(wanted, ids=tuple(wanted.ids))
        with self.rt.sessionmaker() as session, session.begin():
            if wanted.dry_run:
                return as_json(plan_out(plan_replay(session, dead)))
            try:
                job, plan = create_job(
                    session, dead, actor=actor(), rate_per_s=wanted.rate_per_s,
                    everything=wanted.all, force=wanted.force,
                )  # fmt: skip
            except ReplayRefused as exc:
                raise _refused("replay_refused", exc.worded(FLAGS), 409) from None
            return as_json(job_out(job, plan.force_note or None))

    def _job(self, job_id: str) -> ReplayJob:
        with self.rt.sessionmaker() as session:
            job = get_job(session, job_id)
        if job is None:
            raise _refused("not_found", "replay job not found", 404)
        return job

    def replay_job(self, job_id: str) -> Json:
        return as_json(job_out(self._job(job_id)))

    def cancel_replay(self, job_id: str) -> Json:
        with self.rt.sessionmaker() as session, session.begin():
            job = get_job(session, job_id)
            if job is None:
                raise _refused("not_found", "replay job not found", 404)
            return as_json(job_out(cancel_job(session, job, actor=actor())))

    def resume(self, job_id: str) -> Json:
        """Take a stopped, failed or orphaned job over (its lease, now: a refusal comes
        before any progress is shown); `follow` then runs it here."""
        self._job(job_id)  # an unknown job is not found, as through the API
        runner = self._runner(job_id)
        job = self._take(runner, resumed_by=actor())
        self._taken[job_id] = runner
        return as_json(job_out(job))

    def follow(self, job_id: str, show: Callable[[Json], None]) -> Json:
        """Run the job in this process (SIGTERM: finish the batch, leave it resumable)."""
        runner = self._taken.pop(job_id, None) or self._runner(job_id)
        self._show = show
        stop = threading.Event()
        install_stop_handlers(stop)
        show(as_json(job_out(self._take(runner, resumed_by=None))))
        return as_json(job_out(runner.run(stop)))

    def _runner(self, job_id: str) -> Runner:
        self.rt.transport.declare(self.rt.topology())
        return Runner(
            self.rt.transport, self.rt.sessionmaker, job_id, metrics=self.rt.metrics,
            # The runner reports progress with a partial row (its counters): show the job as
            # stored, one read a batch.
            on_progress=lambda _partial: self._show(as_json(job_out(self._job(job_id)))),
            publish_timeout_s=self.rt.settings.publish_timeout_s,
            shards=self.rt.settings.delivery_shards,
            share_per_s=self.rt.settings.delivery_share_per_s,
        )  # fmt: skip

    @staticmethod
    def _take(runner: Runner, resumed_by: str | None) -> ReplayJob:
        try:
            return runner.take(resumed_by=resumed_by)
        except JobBusy as exc:
            raise _refused("job_busy", str(exc), 409) from None
