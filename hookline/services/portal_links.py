"""Portal links and the sessions they open: mint, exchange, look up, revoke.

A link carries a random token (`hlp_` + 43 URL-safe characters); only its SHA-256 is
stored. Opening the link exchanges the token, once, for a session token that lives in an
HttpOnly cookie (also stored as SHA-256 only); the session ends when the link expires, is
revoked, or its customer signs out. A session acts in the audit log as `portal:<link id>`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from common.db.models import PortalLink, Subscription
from common.db.session import rowcount, until_short
from common.wire import new_id, utcnow
from hookline.services import audit, tenants
from hookline.services.audit import Actor
from hookline.services.errors import Invalid, NotFound

TOKEN_PREFIX = "hlp_"
SESSION_PREFIX = "hls_"
READ, MANAGE = "read", "manage"
SCOPES = (READ, MANAGE)
MAX_TTL_S = 24 * 3600
DEFAULT_TTL_S = 3600
MAX_SUBSCRIPTIONS = 100
# An expired link still says so (401 "expired") for this long, then its row is deleted.
EXPIRED_KEPT = timedelta(days=1)
SWEEP_PER_MINT = 10  # long-expired links each mint deletes: more than it adds


class LinkRefused(Exception):
    """A link or session that does not open the portal (unknown, used, expired, revoked,
    signed out); `tenant_id` when the link is known, so that the refusal can carry the
    tenant's theme (and be shown inside the frame that embeds its portal)."""

    def __init__(self, message: str, tenant_id: str | None = None) -> None:
        super().__init__(message)
        self.tenant_id = tenant_id


@dataclass(frozen=True)
class PortalSession:
    """Who is looking: one tenant's customer, through one link, with its scope."""

    link_id: str
    tenant_id: str
    scope: str
    subscription_ids: frozenset[str] | None  # None: every subscription of the tenant
    session_token: str

    @property
    def can_manage(self) -> bool:
        return self.scope == MANAGE

    @property
    def actor_id(self) -> str:
        return f"portal:{self.link_id}"

    def allows(self, subscription_id: str) -> bool:
        return self.subscription_ids is None or subscription_id in self.subscription_ids

    def csrf_token(self) -> str:
        """The per-session CSRF token: derived from the session token, so it needs no row."""
        return hmac.new(self.session_token.encode(), b"portal-csrf", hashlib.sha256).hexdigest()

    def csrf_ok(self, given: str | None) -> bool:
        # As bytes: compare_digest refuses str holding non-ASCII (a forged form may).
        expected = self.csrf_token().encode()
        return bool(given) and hmac.compare_digest(expected, (given or "").encode())


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sweep(session: Session, batch_size: int) -> int:
    """Delete at most `batch_size` of the links (any tenant's) expired more than
    `EXPIRED_KEPT` ago, oldest first; how many went. Every mint runs it, so the table
    holds about a day of expired links beside the live ones, whatever the traffic; what
    is left once minting stops, `hookline gc` deletes (`sweep_all`). Their sessions ended
    with them; the audit log keeps who minted and used each."""
    oldest = (
        select(PortalLink.id)
        .where(PortalLink.expires_at < utcnow() - EXPIRED_KEPT)
        .order_by(PortalLink.expires_at)
        .limit(batch_size)
        .with_for_update(skip_locked=True)  # two mints at once each take other rows
    )
    result = session.execute(
        delete(PortalLink)
        .where(PortalLink.id.in_(oldest.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


def sweep_all(session_for: Callable[[], Session], batch_size: int = 1000) -> int:
    """Every link expired more than `EXPIRED_KEPT` ago, a batch per transaction."""

    def one_batch() -> int:
        with session_for() as session, session.begin():
            return sweep(session, batch_size)

    return until_short(one_batch, batch_size)


def mint(
    session: Session,
    tenant_id: str,
    *,
    scope: str,
    ttl_s: int = DEFAULT_TTL_S,
    subscription_ids: Iterable[str] = (),
    actor: Actor,
) -> tuple[PortalLink, str]:
    """A new link for the tenant (flushed, not committed) and its token in clear."""
    tenants.get(session, tenant_id)
    if scope not in SCOPES:
        raise Invalid(f"scope must be one of {', '.join(SCOPES)}")
    if not 60 <= ttl_s <= MAX_TTL_S:
        raise Invalid(f"expires_in_s must be between 60 and {MAX_TTL_S}")
    ids = sorted(set(subscription_ids))
    if len(ids) > MAX_SUBSCRIPTIONS:
        raise Invalid(f"at most {MAX_SUBSCRIPTIONS} subscription ids")
    if ids:
        found = set(
            session.scalars(
                select(Subscription.id).where(
                    Subscription.tenant_id == tenant_id, Subscription.id.in_(ids)
                )
            )
        )
        missing = [i for i in ids if i not in found]
        if missing:
            raise Invalid(f"subscription_ids: {len(missing)} are not this tenant's")
    sweep(session, SWEEP_PER_MINT)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = PortalLink(
        id=new_id("pl"),
        tenant_id=tenant_id,
        token_hash=_hash(token),
        scope=scope,
        subscription_ids=ids,
        created_by=actor.id,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
    )
    session.add(row)
    session.flush()
    audit.record(
        session, actor, action="portal_link.created",
        resource_type="portal_link", resource_id=row.id, tenant_id=tenant_id,
        details={"scope": scope, "ttl_s": ttl_s, "subscriptions": len(ids)},
    )  # fmt: skip
    return row, token


def revoke(session: Session, tenant_id: str, link_id: str, *, actor: Actor) -> PortalLink:
    """Revoke a link and its session (twice is fine, audited once)."""
    row = session.scalars(
        select(PortalLink).where(PortalLink.id == link_id, PortalLink.tenant_id == tenant_id)
    ).first()
    return _end(session, row, "revoked_at", "portal_link.revoked", actor)


def sign_out(session: Session, link_id: str, *, actor: Actor) -> None:
    """End the link's session because its customer signed out (twice is fine, audited
    once); the caller commits. The cookie then opens nothing, as after a revocation."""
    row = session.get(PortalLink, link_id, with_for_update=True)
    _end(session, row, "signed_out_at", "portal_session.signed_out", actor)


def _end(
    session: Session, row: PortalLink | None, stamp: str, action: str, actor: Actor
) -> PortalLink:
    """Set the link's `stamp` (`revoked_at` or `signed_out_at`) once, and audit it once."""
    if row is None:
        raise NotFound("portal link")
    if getattr(row, stamp) is None:
        setattr(row, stamp, utcnow())
        audit.record(
            session, actor, action=action,
            resource_type="portal_link", resource_id=row.id, tenant_id=row.tenant_id,
        )  # fmt: skip
    return row


def _usable(row: PortalLink | None) -> PortalLink:
    if row is None:
        raise LinkRefused("unknown link")
    if row.revoked_at is not None:
        raise LinkRefused("this link has been revoked", row.tenant_id)
    if row.signed_out_at is not None:
        raise LinkRefused("you signed out of this portal session", row.tenant_id)
    if row.expires_at <= utcnow():
        raise LinkRefused("this link has expired", row.tenant_id)
    return row


def exchange(session: Session, token: str, *, source_ip: str | None) -> tuple[PortalLink, str]:
    """Trade a link's token for a session token (once); the caller commits."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
        raise LinkRefused("unknown link")
    row = _usable(
        session.scalars(
            select(PortalLink).where(PortalLink.token_hash == _hash(token)).with_for_update()
        ).first()
    )
    if row.used_at is not None:
        raise LinkRefused("this link has been used already", row.tenant_id)
    session_token = SESSION_PREFIX + secrets.token_urlsafe(32)
    row.used_at = utcnow()
    row.session_hash = _hash(session_token)
    audit.record(
        session, Actor(f"portal:{row.id}", source_ip), action="portal_session.opened",
        resource_type="portal_link", resource_id=row.id, tenant_id=row.tenant_id,
    )  # fmt: skip
    return row, session_token


def session_of(session: Session, session_token: str | None) -> PortalSession:
    """The live session a cookie names; refused when unknown, expired or revoked."""
    if not session_token or not session_token.startswith(SESSION_PREFIX):
        raise LinkRefused("no portal session: open the link you were given")
    if len(session_token) > 100:
        raise LinkRefused("unknown session")
    row = _usable(
        session.scalars(
            select(PortalLink).where(PortalLink.session_hash == _hash(session_token))
        ).first()
    )
    ids = frozenset(row.subscription_ids) if row.subscription_ids else None
    return PortalSession(row.id, row.tenant_id, row.scope, ids, session_token)
