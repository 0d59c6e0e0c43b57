"""One batch of a replay job through its row states: claim, then — once its copies are
published, confirmed — mark.

Why this order sends each delivery once per replay request and loses none:
- **Claim** (one transaction): the job's next items go `todo → claimed`, and the delivery's
  `replay_count` goes up by one only where the delivery is still dead *with the count the
  job saw at its start*. Another job on an overlapping set that claimed it first already
  bumped the count, so this job skips it (the item becomes `skipped`). The claim stamps
  the delivery's `updated_at` and the item's `claimed_at` with the claim time.
- **Publish**, confirmed (the runner's part): one `replay=True` copy per claimed delivery.
- **Mark** (one transaction): the delivery becomes `pending` for its fresh attempt cycle —
  only where it still carries the claim stamp, so a dispatcher that settled the copy first
  is not overwritten — and the items become `sent` (or `failed`: the event is gone).
A runner killed between claim and mark leaves `claimed` items. Resuming resolves them last
(`reclaim`): a delivery whose row moved on since its claim was published; one still
untouched is published again (at-least-once: re-sent only if its first copy was still queued).

On PostgreSQL the claim and the mark are one statement each (`rows_pg.py`): still four
row writes per delivery (item and delivery, twice), but two round trips per batch instead
of a dozen. Elsewhere (SQLite) the same steps run as ORM statements in one transaction
(`rows.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from common.transport import Outgoing
from common.transport.spill import Spill
from dispatcher.replay.copies import copy

# What a copy is built from: delivery id, subscription, tenant, event id, type, operation,
# timestamp, the event's data as JSON text, and the context it was routed in (`copies.copy`).
CopyRow = tuple[str, str, str, str, str, str | None, datetime, str, str | None]


@dataclass
class Batch:
    """What one claim took: the copies to publish, and what the mark must know."""

    picked: int  # items taken off the walk; 0 when nothing is left
    last_seq: int = 0
    stamps: dict[str, datetime] = field(default_factory=dict)  # claimed id -> claim stamp
    rows: list[CopyRow] = field(default_factory=list)  # one per copy to publish
    missing: list[str] = field(default_factory=list)  # claimed, but the event is gone
    skipped: int = 0  # counted on the job by the claim
    done: int = 0  # reclaimed items already published before the kill; counted too

    def copies(self, job_id: str, spill: Spill) -> list[Outgoing]:
        """The messages, built where they are published (off the claiming thread)."""
        return [copy(job_id, spill, *row) for row in self.rows]

    def sent(self) -> list[str]:
        return [row[0] for row in self.rows]
