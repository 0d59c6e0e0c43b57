"""Opaque pagination cursors: the sort key of the last row of a page, base64-encoded.

Keyset pagination stays correct while rows are inserted between pages and costs the same
on page 1,000 as on page 1; the encoding only keeps clients from depending on its content.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from hookline.api.errors import ApiError


def _invalid() -> ApiError:
    return ApiError(422, "invalid_cursor", "cursor is not one this API returned")


def encode_position(created_at: datetime, row_id: str) -> str:
    """A cursor that resumes after the row created at `created_at` with id `row_id`."""
    raw = json.dumps([created_at.isoformat(), row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_position(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) in a cursor from `encode_position`; anything else is a 422."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_text, row_id = json.loads(raw)
        created_at = datetime.fromisoformat(created_text)
    except (binascii.Error, ValueError, TypeError):
        raise _invalid() from None
    if created_at.tzinfo is None or not isinstance(row_id, str):
        raise _invalid()
    return created_at, row_id
