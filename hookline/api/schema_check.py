"""The ingest check against the catalogue: one function for the single, batch and fast
ingest paths, and the per-process cache that keeps it off the database.

Per tenant the cache holds its `schema_validation` mode and, unless that is `off`, the
compiled validator of each catalogued type with a schema, for `HOOKLINE_CATALOGUE_REFRESH_S`
(default 1 s). When a tenant's entry expires one request reloads it (a thread-pool hop:
the mode, then each type's id and version) while concurrent requests keep the old one for
at most one more period, as the key cache does. Validators are compiled once per (entry
id, version) and kept in a bounded LRU, so a reload compiles only what changed. A change
through this process's API drops the tenant's entry at once; other API processes follow
within one or two periods. A stored schema that today's save-time checks would refuse (one
saved before its bound, such as `MAX_SCHEMA_EXPANSION`) is not compiled: its type goes
unchecked, as one without a schema, and an error is logged with the entry's id.

Cost when the tenant's mode is `off` (the default): one dictionary look-up per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from common.db.statuses import SchemaValidation
from common.metrics import Metrics
from hookline.api.schemas import EventIn
from hookline.services import event_schemas, event_types, tenant_settings
from hookline.services.event_schemas import Validator

log = logging.getLogger(__name__)
MAX_TENANTS = 10_000
MAX_VALIDATORS = 2_000
MAX_LOGGED_IDS = 10
# Schemas that expand to more subschemas than this (a realistic order schema: 15) are run
# on a worker thread: the loop's share stays ~100 steps per value of data, however large
# the body.
MAX_INLINE_EXPANSION = 100


@dataclass(frozen=True)
class Screen:
    """What the check found in one request: the tenant's mode, and by position in the
    request each event whose data breaks its type's schema (`data.path: message`)."""

    mode: SchemaValidation
    problems: dict[int, str] = field(default_factory=dict)

    @property
    def refused(self) -> bool:
        """The request (or these batch items) must be answered 422."""
        return self.mode == SchemaValidation.REJECT and bool(self.problems)


@dataclass(frozen=True)
class _Catalogue:
    mode: SchemaValidation
    validators: dict[str, Validator]  # event type -> compiled schema of its data
    inline: bool = True  # every schema cheap enough to run on the event loop


def _broken(
    validators: dict[str, Validator], events: Sequence[EventIn]
) -> dict[int, tuple[Validator, Any]]:
    """By position, each event whose data its type's schema refuses."""
    broken: dict[int, tuple[Validator, Any]] = {}
    for index, event in enumerate(events):
        validator = validators.get(event.type)
        if validator is not None and not validator.is_valid(event.data):
            broken[index] = (validator, event.data)
    return broken


def _problems(broken: dict[int, tuple[Validator, Any]]) -> dict[int, str]:
    return {
        index: event_schemas.problem(validator, data) or "data: invalid"
        for index, (validator, data) in broken.items()
    }


class SchemaCheck:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        metrics: Metrics,
        refresh_s: float,
        *,
        max_tenants: int = MAX_TENANTS,
        max_validators: int = MAX_VALIDATORS,
    ) -> None:
        self._sessions = sessions
        self._metrics = metrics
        self._refresh_s = refresh_s
        self._max_tenants = max_tenants
        self._max_validators = max_validators
        # tenant -> (expires at, catalogue, a caller is reloading it)
        self._tenants: OrderedDict[str, tuple[float, _Catalogue, bool]] = OrderedDict()
        # (entry id, version) -> its validator and expansion, None for an entry without a schema
        self._compiled: OrderedDict[tuple[str, int], tuple[Validator, int] | None] = OrderedDict()
        self._lock = threading.Lock()

    async def screen(self, tenant: str, events: Sequence[EventIn]) -> Screen:
        """The one check every ingest path runs before publishing."""
        catalogue = self._cached(tenant)
        if catalogue is None:
            catalogue = await run_in_threadpool(self.load, tenant)
        if catalogue.mode == SchemaValidation.OFF or not catalogue.validators:
            return Screen(catalogue.mode)
        if catalogue.inline:
            broken = _broken(catalogue.validators, events)
        else:  # its cost grows with the schema times the body: off the loop others share
            broken = await run_in_threadpool(_broken, catalogue.validators, events)
        if not broken:
            return Screen(catalogue.mode)
        # Wording a problem walks the failing branches again, dearer than `is_valid`: on a
        # worker thread, not on the loop every tenant's requests share.
        return Screen(catalogue.mode, await run_in_threadpool(_problems, broken))

    def report(self, tenant: str, screen: Screen, events: Sequence[EventIn]) -> None:
        """Count (and log, by ids only) what a screen found, once the answer is final."""
        if not screen.problems:
            return
        self._metrics.schema_violations.labels(mode=screen.mode.value).inc(len(screen.problems))
        found = [events[index] for index in sorted(screen.problems)[:MAX_LOGGED_IDS]]
        # Ids and type names only: neither the data nor the message (which quotes data).
        log.warning(
            "event data breaks the catalogued schema",
            extra={
                "tenant": tenant,
                "mode": screen.mode.value,
                "count": len(screen.problems),
                "event_types": sorted({event.type for event in found}),
                "event_ids": [event.id for event in found if event.id is not None],
            },
        )

    def forget(self, tenant: str) -> None:
        """Drop the tenant's entry: the next request reloads it (a change went through)."""
        with self._lock:
            self._tenants.pop(tenant, None)

    def _cached(self, tenant: str) -> _Catalogue | None:
        with self._lock:
            entry = self._tenants.get(tenant)
            if entry is None:
                return None
            expires, catalogue, reloading = entry
            now = time.monotonic()
            if now < expires or (reloading and now < expires + self._refresh_s):
                return catalogue
            self._tenants[tenant] = (expires, catalogue, True)
            return None

    def load(self, tenant: str) -> _Catalogue:
        """Read the tenant's mode and catalogue versions, compile what is new, cache it."""
        with self._sessions() as session:
            mode = SchemaValidation(tenant_settings.of(session, tenant).schema_validation)
            versions = {}
            if mode != SchemaValidation.OFF:
                versions = event_types.schema_versions(session, tenant)
            with self._lock:
                missing = [entry for entry in versions.values() if entry not in self._compiled]
            loaded = event_types.schemas(session, [entry_id for entry_id, _ in missing])
        validators: dict[str, Validator] = {}
        inline = True
        for name, (entry_id, version) in versions.items():
            compiled = self._validator(entry_id, version, loaded)
            if compiled is not None:
                validators[name] = compiled[0]
                inline = inline and compiled[1] <= MAX_INLINE_EXPANSION
        catalogue = _Catalogue(mode, validators, inline)
        with self._lock:
            self._tenants[tenant] = (time.monotonic() + self._refresh_s, catalogue, False)
            self._tenants.move_to_end(tenant)
            while len(self._tenants) > self._max_tenants:
                self._tenants.popitem(last=False)
        return catalogue

    def _validator(
        self, entry_id: str, version: int, loaded: dict[str, tuple[int, dict[str, object]]]
    ) -> tuple[Validator, int] | None:
        key = (entry_id, version)
        with self._lock:
            if key in self._compiled:
                self._compiled.move_to_end(key)
                return self._compiled[key]
        found = loaded.get(entry_id)
        validator = None
        if found is not None and found[0] == version:
            try:
                validator = (
                    event_schemas.compile_schema(found[1]),
                    event_schemas.expansion(found[1]),
                )
            except event_schemas.InvalidSchema as exc:
                # Saved before a bound it breaks (a schema too costly to run): its type goes
                # unchecked, as one without a schema, rather than stall this process.
                log.error(
                    "catalogued schema is past today's bounds: not checked",
                    extra={"entry": entry_id, "reason": str(exc)},
                )
            except Exception:  # checked when saved; a library change must not stop ingest
                log.exception("catalogued schema does not compile", extra={"entry": entry_id})
        elif found is not None:
            return None  # changed between the two reads: the next reload compiles it
        with self._lock:
            self._compiled[key] = validator
            while len(self._compiled) > self._max_validators:
                self._compiled.popitem(last=False)
        return validator
