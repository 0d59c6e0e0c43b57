"""Opaque pagination cursors: the sort key of the last row of a page, base64-encoded.

Keyset pagination stays correct while rows are inserted between pages and costs the same
on page 1,000 as on page 1; the encoding only keeps clients from depending on its content.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

from common.payload import is_storable_text
from hookline.api.errors import ApiError


class _Keyed(Protocol):
    @property
    def created_at(self) -> datetime: ...
    @property
    def id(self) -> str: ...


Row = TypeVar("Row", bound=_Keyed)


MAX_CURSOR_CHARS = 1000
MAX_ROW_ID_CHARS = 200  # the longest id a list pages by: a tenant's event id


def _invalid() -> ApiError:
    return ApiError(422, "invalid_cursor", "cursor is not one this API returned")


def encode_position(created_at: datetime, row_id: str) -> str:
    """A cursor that resumes after the row created at `created_at` with id `row_id`."""
    raw = json.dumps([created_at.isoformat(), row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_position(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) in a cursor from `encode_position`; anything else is a 422.
    Bounded here for every list, whatever its route declares: ours are ~150 characters,
    and JSON nested deeper than the interpreter's recursion limit would be a 500. The id is
    bound into the query as is: NUL or a lone surrogate in it was a 500 from the driver."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise _invalid()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_text, row_id = json.loads(raw)
        created_at = datetime.fromisoformat(created_text)
        if created_at.tzinfo is None or not _is_row_id(row_id):
            raise _invalid()
        # In UTC here, as the database compares it: a time whose offset takes it past
        # year 1 or 9999 (`0001-01-01T00:00:00+14:00`) overflowed in every list's query.
        created_at = created_at.astimezone(UTC)
    except (binascii.Error, ValueError, TypeError, RecursionError, OverflowError):
        raise _invalid() from None
    return created_at, row_id


def _is_row_id(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_ROW_ID_CHARS and is_storable_text(value)


def oldest_first(
    session: Session, query: Select[tuple[Row]], model: Any, limit: int, cursor: str | None
) -> tuple[list[Row], str | None]:
    """One page of `query`'s rows of `model` by (`created_at`, `id`), after `cursor`; and
    the cursor of the next page, None on the last."""
    if cursor is not None:
        created_at, last_id = decode_position(cursor)
        later = and_(model.created_at == created_at, model.id > last_id)
        query = query.where(or_(model.created_at > created_at, later))
    rows = list(session.scalars(query.order_by(model.created_at, model.id).limit(limit + 1)))
    page, more = rows[:limit], len(rows) > limit
    last = page[-1] if more else None
    return page, encode_position(last.created_at, last.id) if last is not None else None
