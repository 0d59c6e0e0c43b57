"""The `header_sets` rows that attempts name (migration 0014): one row per shape of request
headers (`dispatcher/http/shape.py`), written the first time any dispatcher records an
attempt of that shape, then known by its id.

A new shape is inserted in the settler's own transaction (`INSERT ... ON CONFLICT DO
NOTHING`, then read back: two dispatchers meeting the same new shape at once end with one
row) and its id is remembered only after that transaction commits, so a batch that rolls
back leaves no id in memory naming a row that does not exist.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from common.db.models import HeaderSet
from common.db.session import insert_ignoring_conflicts
from dispatcher.http import HeaderShape

MAX_KNOWN = 10_000  # shapes remembered; past it the memory starts again (a lookup each)

_table = cast(Table, HeaderSet.__table__)


class HeaderSets:
    """The ids of header shapes. Used by one settler thread: no lock."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}

    def ids(self, session: Session, shapes: Iterable[HeaderShape]) -> dict[str, int]:
        """digest -> row id for every shape, inserting the rows of new ones (not committed:
        `remember` the answer once the caller's transaction has)."""
        wanted = {shape.digest: shape for shape in shapes}
        found = {digest: self._ids[digest] for digest in wanted if digest in self._ids}
        new = [shape for digest, shape in wanted.items() if digest not in found]
        if new:
            rows = [{"digest": s.digest, "headers": [list(h) for h in s.headers]} for s in new]
            session.execute(insert_ignoring_conflicts(session.get_bind(), _table), rows)
            stored = session.execute(
                select(HeaderSet.digest, HeaderSet.id).where(
                    HeaderSet.digest.in_([shape.digest for shape in new])
                )
            )
            found.update(stored.tuples().all())
        return found

    def known(self, shapes: Iterable[HeaderShape]) -> dict[str, int] | None:
        """digest -> row id for every shape if each is known already, else None."""
        try:
            return {shape.digest: self._ids[shape.digest] for shape in shapes}
        except KeyError:
            return None

    def remember(self, ids: dict[str, int]) -> None:
        if len(self._ids) + len(ids) > MAX_KNOWN:
            self._ids.clear()
        self._ids.update(ids)


def name_header_sets(
    rows: Sequence[dict[str, Any]], shapes: Sequence[HeaderShape | None], ids: dict[str, int]
) -> None:
    """Each attempt row names the header set its request went out with (`ids`: digest ->
    row id, from `HeaderSets`); None where nothing was sent."""
    for row, shape in zip(rows, shapes, strict=True):
        row["header_set_id"] = ids[shape.digest] if shape is not None else None
