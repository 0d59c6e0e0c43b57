"""The answer an `Idempotency-Key` keeps, with its credentials sealed.

Top-level fields of an answer that hold a credential (`api_key`, `secret`: a new API key or
webhook secret; a new portal link's `url`, which carries its token) are never stored in
clear: the stored body holds `null` in their place and the fields themselves are sealed
with the subscription secrets' key (`secrets_enc`). A replay puts them back, so it is byte
for byte the first answer; if they can no longer be opened, the caller is told which
fields it left out.
"""

from __future__ import annotations

import json
from typing import Any

from common.db.models import IdempotencyRecord
from common.errors import ConfigurationError
from common.secretbox import SecretBox

SECRET_FIELDS = ("api_key", "secret")  # in whichever answer they appear
# Fields that carry a credential in one route's answer only: a portal link's `url` holds the
# token that opens the portal (elsewhere a `url` is a subscription's endpoint).
ROUTE_SECRET_FIELDS = {"/v1/portal/links": ("url",)}


def secret_fields(path: str) -> tuple[str, ...]:
    """The fields of an answer to a POST on `path` that are sealed, not stored."""
    return SECRET_FIELDS + ROUTE_SECRET_FIELDS.get(path, ())


def _render(content: Any) -> bytes:
    """JSON as FastAPI's `JSONResponse` renders it, so a replay is byte for byte the same."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode()


def sealed(body: bytes, box: SecretBox, path: str) -> tuple[str, str | None]:
    """The body to store, with its credential fields set to null, and those fields sealed."""
    text = body.decode("utf-8", errors="replace")
    try:
        content = json.loads(body)
    except ValueError:
        return text, None
    if not isinstance(content, dict):
        return text, None
    found = {k: content[k] for k in secret_fields(path) if isinstance(content.get(k), str)}
    if not found:
        return text, None
    content.update(dict.fromkeys(found))
    return _render(content).decode(), box.seal(json.dumps(found))


def opened(row: IdempotencyRecord, box: SecretBox, path: str) -> tuple[bytes, list[str]]:
    """The stored body with its sealed fields put back, and the fields that could not be."""
    body = (row.body or "").encode()
    if row.secrets_enc is None:
        return body, []
    content = json.loads(body)
    try:
        content.update(json.loads(box.open(row.secrets_enc)))
    except ConfigurationError:
        return body, [k for k in secret_fields(path) if k in content]
    return _render(content), []
