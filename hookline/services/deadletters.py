"""Purging dead letters: one rule and one audit row for `POST /v1/dead-letters/purge` and
`hookline dlq purge` in its direct mode. Listing and showing are the dispatcher's
(`dispatcher.deadletters`); a purge is the operator's decision, so it lives here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.orm import Session

from common.db.session import without_statement_timeout
from common.db.statuses import DeliveryStatus
from dispatcher.deadletters import DeadFilter, purge_dead, summarize_dead
from dispatcher.replay import audit
from hookline.services.errors import Conflict


class PurgeRefused(Conflict):
    """A purge without any filter and without `all`: each shell names that option its own
    way (`--all`, `"all": true`), through `worded()`."""

    code = "purge_refused"
    template = "no filter given: name what to purge, or set {option}"

    def __init__(self) -> None:
        super().__init__(self.template.format(option="all"))

    def worded(self, spelling: Mapping[str, str]) -> str:
        return self.template.format(option=spelling.get("all", "all"))


class Selection(Protocol):
    """What a purge selects by: dead letters' or poison messages' filters."""

    @property
    def narrows(self) -> bool: ...
    @property
    def tenant(self) -> str | None: ...


def refuse_unnamed(selection: Selection, *, everything: bool, by_tenant_key: bool = False) -> None:
    """`PurgeRefused` for a purge that names nothing (no filter, no tenant) and does not
    say `everything`. A tenant's own key can only reach its tenant, so for it the tenant
    names nothing: an empty purge from it would be all of the tenant's."""
    tenant_named = selection.tenant is not None and not by_tenant_key
    if not selection.narrows and not tenant_named and not everything:
        raise PurgeRefused()


@dataclass(frozen=True)
class Purged:
    matched: int
    purged: int
    dry_run: bool

    def to_json(self) -> dict[str, object]:
        return {"matched": self.matched, "purged": self.purged, "dry_run": self.dry_run}


def purge(
    session: Session,
    dead: DeadFilter,
    *,
    actor: str,
    everything: bool,
    dry_run: bool,
    by_tenant_key: bool = False,
) -> Purged:
    """Count, and unless `dry_run` cancel, the dead letters `dead` selects (`hookline gc`
    removes cancelled rows later); the caller commits."""
    refuse_unnamed(dead, everything=everything, by_tenant_key=by_tenant_key)
    matched = summarize_dead(session, dead).total
    if dry_run or matched == 0:
        return Purged(matched, 0, dry_run)
    without_statement_timeout(session)  # millions of dead letters are purged all the same
    purged = purge_dead(session, dead, status=DeliveryStatus.CANCELLED)
    audit(
        session,
        actor=actor,
        tenant_id=dead.tenant,
        action="dlq.purge",
        resource_type="dead_letters",
        resource_id=None,
        details={"purged": purged, "tenant": dead.tenant, "reason": dead.reason},
    )
    return Purged(matched, purged, dry_run)
