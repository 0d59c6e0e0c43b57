import base64
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from common.signing import SignatureError, new_secret, sign, signature_header, verify

BODY = b'{"type":"order.created","timestamp":"2026-01-01T00:00:00Z","data":{"n":1}}'


def headers(msg_id: str, ts: int, signature: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


def test_our_signature_verifies_with_the_public_standardwebhooks_library() -> None:
    secret = new_secret()
    ts = int(time.time())
    sent = headers("evt_1", ts, signature_header([secret], "evt_1", ts, BODY))
    assert Webhook(secret).verify(BODY, sent) is not None


def test_both_rotation_signatures_verify_with_standardwebhooks() -> None:
    old, new = new_secret(), new_secret()
    ts = int(time.time())
    value = signature_header([new, old], "evt_2", ts, BODY)
    assert len(value.split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(BODY, headers("evt_2", ts, value))


def test_standardwebhooks_signature_verifies_with_ours() -> None:
    secret = new_secret()
    ts = int(time.time())
    from datetime import UTC, datetime

    theirs = Webhook(secret).sign("evt_3", datetime.fromtimestamp(ts, UTC), BODY.decode())
    verify(secret, headers("evt_3", ts, theirs), BODY)
    assert theirs == sign(secret, "evt_3", ts, BODY)


def test_tampered_body_wrong_secret_and_stale_timestamp_are_refused() -> None:
    secret = new_secret()
    ts = int(time.time())
    good = headers("evt_4", ts, sign(secret, "evt_4", ts, BODY))
    with pytest.raises(SignatureError):
        verify(secret, good, BODY + b" ")
    with pytest.raises(SignatureError):
        verify(new_secret(), good, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, good)
    old = ts - 3600
    with pytest.raises(SignatureError, match="tolerance"):
        verify(secret, headers("evt_4", old, sign(secret, "evt_4", old, BODY)), BODY)


def test_secrets_are_whsec_prefixed_32_byte_keys() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert new_secret() != secret


def test_an_ed25519_key_adds_a_v1a_token_that_verifies_with_the_public_key() -> None:
    from common.signing import new_signing_key, public_key, verify_public

    secret, key = new_secret(), new_signing_key()
    ts = int(time.time())
    value = signature_header([secret, key], "evt_5", ts, BODY)
    versions = [token.split(",")[0] for token in value.split()]
    assert versions == ["v1", "v1a"]
    sent = headers("evt_5", ts, value)
    verify_public(public_key(key), sent, BODY)
    # The HMAC token beside it still verifies with the public library.
    Webhook(secret).verify(BODY, sent)
    with pytest.raises(SignatureError):
        verify_public(public_key(new_signing_key()), sent, BODY)
    with pytest.raises(SignatureError):
        verify_public(public_key(key), sent, BODY + b"x")


def test_the_public_key_is_the_standard_raw_ed25519_key() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from common.signing import new_signing_key, public_key

    key = new_signing_key()
    ts = int(time.time())
    token = sign(key, "evt_6", ts, BODY)
    raw = base64.b64decode(public_key(key).removeprefix("whpk_"))
    Ed25519PublicKey.from_public_bytes(raw).verify(
        base64.b64decode(token.removeprefix("v1a,")), f"evt_6.{ts}.".encode() + BODY
    )
