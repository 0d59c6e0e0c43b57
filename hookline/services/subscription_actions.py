"""What a tenant does with a subscription beyond editing it: pause and resume, rotate and
reveal its secret, and read the public key of its ed25519 signatures. Each takes the
caller's session; the caller commits."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from common import signing
from common.db.models import Subscription
from common.db.statuses import SubscriptionStatus
from common.secretbox import SecretBox
from common.wire import utcnow
from hookline.services import audit
from hookline.services.audit import Actor
from hookline.services.errors import Conflict, NotFound, NotVerified
from hookline.services.subscriptions import owned


def _move(
    session: Session,
    tenant_id: str,
    subscription_id: str,
    *,
    actor: Actor,
    action: str,
    allowed_from: tuple[str, ...],
) -> Subscription:
    row = owned(session, tenant_id, subscription_id)
    # Checked first: a pending subscription, too, becomes active only by the handshake.
    if action == "resume" and row.verified_at is None:
        raise NotVerified("the endpoint has not passed the handshake: verify first")
    if row.status not in allowed_from:
        raise Conflict(f"a subscription that is {row.status} cannot {action}")
    row.status = SubscriptionStatus.PAUSED if action == "pause" else SubscriptionStatus.ACTIVE
    if action == "resume":
        # Re-enabled, the delivery engine's failure streak starts from nothing.
        row.disabled_reason, row.failing_since, row.consecutive_dead = None, None, 0
    row.updated_at = utcnow()
    audit.record(
        session, actor, action=f"subscription.{action}d",
        resource_type="subscription", resource_id=row.id, tenant_id=row.tenant_id,
    )  # fmt: skip
    return row


def pause(session: Session, tenant_id: str, subscription_id: str, *, actor: Actor) -> Subscription:
    """Stop routing new events to the subscription until it is resumed."""
    return _move(
        session, tenant_id, subscription_id, actor=actor,
        action="pause",
        allowed_from=(
            SubscriptionStatus.ACTIVE, SubscriptionStatus.PENDING_VERIFICATION,
            SubscriptionStatus.PAUSED,
        ),
    )  # fmt: skip


def resume(session: Session, tenant_id: str, subscription_id: str, *, actor: Actor) -> Subscription:
    """Make a paused or disabled subscription active again (it must have been verified)."""
    return _move(
        session, tenant_id, subscription_id, actor=actor,
        action="resume",
        allowed_from=(
            SubscriptionStatus.PAUSED, SubscriptionStatus.DISABLED, SubscriptionStatus.ACTIVE
        ),
    )  # fmt: skip


def rotate_secret(
    session: Session,
    tenant_id: str,
    subscription_id: str,
    *,
    overlap_s: int,
    actor: Actor,
    box: SecretBox,
) -> tuple[str, datetime | None]:
    """A new signing secret, and until when the previous one keeps signing too."""
    secret = signing.new_secret()
    now = utcnow()
    row = owned(session, tenant_id, subscription_id)
    if overlap_s > 0:
        row.previous_secret_enc = row.secret_enc
        row.previous_secret_expires_at = now + timedelta(seconds=overlap_s)
    else:
        row.previous_secret_enc, row.previous_secret_expires_at = None, None
    row.secret_enc = box.seal(secret)
    row.updated_at = now
    audit.record(
        session, actor, action="subscription.secret_rotated",
        resource_type="subscription", resource_id=row.id, tenant_id=row.tenant_id,
        details={"overlap_s": overlap_s},
    )  # fmt: skip
    return secret, row.previous_secret_expires_at


def reveal_secret(
    session: Session, tenant_id: str, subscription_id: str, *, actor: Actor, box: SecretBox
) -> tuple[str, datetime | None]:
    """The current signing secret (and the previous one's expiry); every reveal is audited."""
    row = owned(session, tenant_id, subscription_id)
    revealed = box.open(row.secret_enc), row.previous_secret_expires_at
    audit.record(
        session, actor, action="subscription.secret_revealed",
        resource_type="subscription", resource_id=row.id, tenant_id=row.tenant_id,
    )  # fmt: skip
    return revealed


def public_key(session: Session, tenant_id: str, subscription_id: str, *, box: SecretBox) -> str:
    """The ed25519 public key (`whpk_...`) that verifies the subscription's `v1a` signatures."""
    row = owned(session, tenant_id, subscription_id)
    if not row.signing_key_enc:
        raise NotFound("public key (the subscription signs with HMAC only)")
    return signing.public_key(box.open(row.signing_key_enc))
