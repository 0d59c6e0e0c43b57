"""Encryption of subscription secrets at rest, keyed by `HOOKLINE_SECRET_KEY`."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

from common.errors import ConfigurationError

# Used only when no key is configured, by the dev server and tests; every other command
# refuses to start without a real HOOKLINE_SECRET_KEY (`check_secret_key`).
DEV_SECRET_KEY = "hookline-dev-only-secret-key"
MIN_SECRET_KEY_CHARS = 16
PLACEHOLDERS = frozenset(
    {"change-me", "changeme", "change_me", "replace-me", "secret", "password", "todo", "xxx"}
)
_PLACEHOLDER_WORDS = frozenset(p.replace("_", "-") for p in PLACEHOLDERS)


def check_secret_key(secret_key: str | None, *, name: str = "HOOKLINE_SECRET_KEY") -> str:
    """The key, unless it is missing or a placeholder: `ConfigurationError` outside dev."""
    value = (secret_key or "").strip()
    if not value:
        raise ConfigurationError(f"{name} is not set; generate one (e.g. openssl rand -hex 32)")
    if _placeholder(value) or value == DEV_SECRET_KEY:
        raise ConfigurationError(f"{name} is still a placeholder; set a random value")
    if len(value) < MIN_SECRET_KEY_CHARS:
        raise ConfigurationError(f"{name} is shorter than {MIN_SECRET_KEY_CHARS} characters")
    return value


def _placeholder(value: str) -> bool:
    """`change-me`, or a value that starts with one, such as `change-me-secret-key`."""
    word = value.lower().replace("_", "-")  # CHANGE_ME and change-me alike
    return any(word == p or word.startswith((p + "-", p + ".")) for p in _PLACEHOLDER_WORDS)


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
