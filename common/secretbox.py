"""Encryption of subscription secrets at rest, keyed by `HOOKLINE_SECRET_KEY`."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

from common.errors import ConfigurationError

# Used only when no key is configured, by the dev server and tests; `Settings` users in
# production must set HOOKLINE_SECRET_KEY (the API refuses to start without it unless --dev).
DEV_SECRET_KEY = "hookline-dev-only-secret-key"


class SecretBox:
    def __init__(self, secret_key: str) -> None:
        if not secret_key:
            raise ConfigurationError("HOOKLINE_SECRET_KEY is empty")
        key = base64.urlsafe_b64encode(hashlib.sha256(secret_key.encode()).digest())
        self._fernet = Fernet(key)

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ConfigurationError(
                "cannot decrypt a stored secret: HOOKLINE_SECRET_KEY differs from the key "
                "it was sealed with"
            ) from None
