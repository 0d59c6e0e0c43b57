"""Issuing API keys and tenants: a key is `hl_` and 32 random URL-safe characters.

Only its SHA-256 is stored (with a short prefix to recognise it by), so a leaked database
does not leak working keys; the key has enough entropy that an unsalted fast hash is not a
weakness.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable

from sqlalchemy.orm import Session

from common.db.models import ApiKey, Tenant
from common.wire import new_id, utcnow
from hookline.api.schemas import ALL_SCOPES

KEY_PREFIX = "hl_"
KEY_RANDOM_BYTES = 24  # 32 URL-safe characters
DISPLAY_PREFIX_CHARS = len(KEY_PREFIX) + 8
# Every key ever issued (the form has not changed since the first).
KEY_SHAPE = re.compile(r"hl_[A-Za-z0-9_-]{32}")


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_key(
    session: Session,
    tenant_id: str,
    scopes: Iterable[str],
    *,
    name: str | None = None,
    allowed_cidrs: Iterable[str] = (),
) -> tuple[ApiKey, str]:
    """A new key row for `tenant_id` (flushed, not committed) and the key in clear."""
    key = new_api_key()
    row = ApiKey(
        id=new_id("key"),
        tenant_id=tenant_id,
        key_hash=hash_key(key),
        prefix=key[:DISPLAY_PREFIX_CHARS],
        name=name,
        scopes=list(dict.fromkeys(scopes)),
        allowed_cidrs=list(allowed_cidrs),
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row, key


def new_tenant(session: Session, name: str) -> tuple[Tenant, str]:
    """A new tenant and its first key, holding every scope (flushed, not committed): the
    tenant's owner needs one key that can do everything, to set the rest up with."""
    tenant = Tenant(id=new_id("ten"), name=name, created_at=utcnow())
    session.add(tenant)
    session.flush()
    _, key = issue_key(session, tenant.id, ALL_SCOPES)
    return tenant, key
