"""Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.

Secrets look like `whsec_<base64>`; the part after the prefix is the key. Receivers can
verify with the public `standardwebhooks` library.

Asymmetric signing (`v1a,<base64 ed25519 signature>` of the same string) uses a signing
key `whsk_<base64 32-byte seed>`; receivers verify with the public key `whpk_<base64>`.
Both kinds of key go through `signature_header` alike: each key adds its own token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SECRET_PREFIX = "whsec_"
SIGNING_KEY_PREFIX = "whsk_"
PUBLIC_KEY_PREFIX = "whpk_"
DEFAULT_TOLERANCE_S = 300


class SignatureError(ValueError):
    """A webhook's signature, timestamp or headers do not verify."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def new_signing_key() -> str:
    """A fresh ed25519 signing key, `whsk_<base64 seed>`."""
    return SIGNING_KEY_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _decode(text: str, prefix: str) -> bytes:
    try:
        return base64.b64decode(text.removeprefix(prefix), validate=True)
    except ValueError:
        raise SignatureError(f"key is not {prefix}<base64>") from None


def _key(secret: str) -> bytes:
    return _decode(secret, SECRET_PREFIX)


def _ed25519(signing_key: str) -> Ed25519PrivateKey:
    seed = _decode(signing_key, SIGNING_KEY_PREFIX)
    if len(seed) != 32:
        raise SignatureError("an ed25519 signing key holds 32 bytes")
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key(signing_key: str) -> str:
    """The `whpk_...` public key a receiver verifies `v1a` signatures with."""
    raw = _ed25519(signing_key).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode()


def _signed(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + body


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One token for `body`: `v1,...` under a `whsec_` secret, `v1a,...` under a `whsk_` key."""
    if secret.startswith(SIGNING_KEY_PREFIX):
        signature = _ed25519(secret).sign(_signed(msg_id, timestamp, body))
        return "v1a," + base64.b64encode(signature).decode()
    digest = hmac.new(_key(secret), _signed(msg_id, timestamp, body), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets_: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one token per secret or signing key, space-separated
    (two HMAC tokens during a rotation, plus a `v1a` token when the subscription has a key)."""
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets_)


def _parse(headers: Mapping[str, str]) -> tuple[str, int, list[str]]:
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        return (
            lowered["webhook-id"],
            int(lowered["webhook-timestamp"]),
            lowered["webhook-signature"].split(),
        )
    except (KeyError, ValueError):
        raise SignatureError("missing or malformed webhook headers") from None


def _fresh(timestamp: int, tolerance_s: int, now: float | None) -> None:
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureError("timestamp outside the tolerance window")


def verify_public(
    public: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Check a `v1a` signature with a `whpk_` public key; raises `SignatureError`."""
    msg_id, timestamp, tokens = _parse(headers)
    _fresh(timestamp, tolerance_s, now)
    key = Ed25519PublicKey.from_public_bytes(_decode(public, PUBLIC_KEY_PREFIX))
    for token in tokens:
        version, _, encoded = token.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(encoded), _signed(msg_id, timestamp, body))
            return
        except (InvalidSignature, ValueError):
            continue
    raise SignatureError("no v1a signature matches")


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Check a received webhook; raises `SignatureError` unless one v1 token matches."""
    msg_id, timestamp, tokens = _parse(headers)
    _fresh(timestamp, tolerance_s, now)
    expected = sign(secret, msg_id, timestamp, body)
    if not any(hmac.compare_digest(expected, token) for token in tokens):
        raise SignatureError("no signature matches")
