"""Encryption of secrets at rest (Fernet), keyed by `HOOKLINE_SECRET_KEY`.

The variable holds a key ring: one key, or several separated by commas, the newest first.
Everything is sealed under the first key; every key in the ring opens. So a key is changed
by putting the new one in front, restarting, running `hookline secrets rewrap` (which
re-seals every stored value under the first key), and then dropping the old one.

Each key must be a full-entropy random value (`openssl rand -hex 32`): it is turned into
a Fernet key by one SHA-256, which is sound for random keys and would be weak for a
password, so anything that does not look random is refused outside dev (`check_secret_key`).
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections import Counter
from collections.abc import Mapping

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from common.errors import ConfigurationError

# Used only when no key is configured, by the dev server and tests; every other command
# refuses to start without a real HOOKLINE_SECRET_KEY (`check_secret_key`).
DEV_SECRET_KEY = "hookline-dev-only-secret-key"
MIN_SECRET_KEY_CHARS = 16  # the admin token's floor (`check_admin_token`)
MIN_KEY_CHARS = 32
# Estimated from the key's own character frequencies: 64 random hex digits score ~240 bits,
# `openssl rand -base64 32` ~215; a word, a repeated character or a short key far less.
MIN_KEY_ENTROPY_BITS = 128
# Every Fernet token starts so (version byte 0x80, then a timestamp's zero high bytes).
FERNET_PREFIX = "gAAAAA"
HOW_TO_MAKE_ONE = "generate one with: openssl rand -hex 32"
PLACEHOLDERS = frozenset(
    {"change-me", "changeme", "change_me", "replace-me", "secret", "password", "todo", "xxx"}
)
_PLACEHOLDER_WORDS = frozenset(p.replace("_", "-") for p in PLACEHOLDERS)


def key_ring(secret_key: str | None) -> list[str]:
    """The keys of `HOOKLINE_SECRET_KEY`, newest (the sealing one) first."""
    return [k.strip() for k in (secret_key or "").split(",") if k.strip()]


def check_secret_key(secret_key: str | None, *, name: str = "HOOKLINE_SECRET_KEY") -> str:
    """The key ring, unless its first key is missing, a placeholder or not random enough:
    `ConfigurationError` (outside dev). Older keys in the ring only need to be there: they
    are kept to open what they sealed until `hookline secrets rewrap` has run."""
    keys = key_ring(secret_key)
    if not keys:
        raise ConfigurationError(f"{name} is not set; {HOW_TO_MAKE_ONE}")
    first = keys[0]
    if _placeholder(first) or first == DEV_SECRET_KEY:
        raise ConfigurationError(f"{name} is still a placeholder; {HOW_TO_MAKE_ONE}")
    if (
        len(first) < MIN_KEY_CHARS
        or entropy_bits(first) < MIN_KEY_ENTROPY_BITS
        or _repetitive(first)
    ):
        raise ConfigurationError(
            f"{name} is too short or not random enough (it seals every stored secret); "
            f"{HOW_TO_MAKE_ONE}"
        )
    return ",".join(keys)


def check_admin_token(token: str, *, name: str = "HOOKLINE_ADMIN_TOKEN") -> str:
    """The admin token, unless it is a placeholder or shorter than 16 characters."""
    value = token.strip()
    if not value or _placeholder(value) or value == DEV_SECRET_KEY:
        raise ConfigurationError(f"{name} is still a placeholder; set a random value")
    if len(value) < MIN_SECRET_KEY_CHARS:
        raise ConfigurationError(f"{name} is shorter than {MIN_SECRET_KEY_CHARS} characters")
    return value


def entropy_bits(value: str) -> float:
    """A rough estimate of the randomness in `value`: its length times the Shannon entropy
    of its own character frequencies. It cannot tell a random-looking constant from a random
    value, but it refuses what people type by hand: words, repeats, short keys."""
    counts = Counter(value)
    total = len(value)
    return -total * sum(n / total * math.log2(n / total) for n in counts.values())


def _repetitive(value: str) -> bool:
    """A pattern repeated (`0123456789` four times) rather than random characters: in a
    random key nearly every run of three characters is different."""
    runs = [value[i : i + 3] for i in range(len(value) - 2)]
    return len(set(runs)) < 0.9 * len(runs)


def _placeholder(value: str) -> bool:
    """`change-me`, or a value that starts with one, such as `change-me-secret-key`."""
    word = value.lower().replace("_", "-")  # CHANGE_ME and change-me alike
    return any(word == p or word.startswith((p + "-", p + ".")) for p in _PLACEHOLDER_WORDS)


def _fernet(key: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))


class SecretBox:
    """Seals under the ring's first key; opens with any of them."""

    def __init__(self, secret_key: str) -> None:
        keys = key_ring(secret_key)
        if not keys:
            raise ConfigurationError("HOOKLINE_SECRET_KEY is empty")
        self._current = _fernet(keys[0])
        self._ring = MultiFernet([self._current, *(_fernet(k) for k in keys[1:])])

    def seal(self, plaintext: str) -> str:
        return self._ring.encrypt(plaintext.encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._ring.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ConfigurationError(
                "cannot decrypt a stored secret: HOOKLINE_SECRET_KEY differs from the key "
                "it was sealed with"
            ) from None

    def is_current(self, token: str) -> bool:
        """Whether `token` is sealed under the first key already (nothing to rewrap)."""
        try:
            self._current.decrypt(token.encode())
        except InvalidToken:
            return False
        return True

    def rewrap(self, token: str) -> str | None:
        """`token` sealed again under the first key, or None if it already is."""
        if self.is_current(token):
            return None
        self.open(token)  # a token no key opens is a ConfigurationError, as everywhere
        return self._ring.rotate(token.encode()).decode()

    def seal_values(self, values: Mapping[str, str]) -> dict[str, str]:
        """Each value sealed, names kept (a subscription's static headers)."""
        return {name: self.seal(value) for name, value in values.items()}

    def open_values(self, values: Mapping[str, str]) -> dict[str, str]:
        """Each value opened; one stored in clear (written before migration 0008, or by a
        process of an older version during an upgrade) is taken as it is."""
        return {name: self.open(v) if is_sealed(v) else v for name, v in values.items()}


def is_sealed(value: str) -> bool:
    return value.startswith(FERNET_PREFIX)
