"""What an attempt's request headers looked like, without anything secret in them: the
`HeaderShape` that the settler stores once per shape (`header_sets`, migration 0014) and
every attempt names by id, so the portal shows the headers that were sent, not the ones a
subscription has today.

A shape lists the header names in the order sent, with a value only where it is the same
on every request of the shape and says nothing secret: `content-type`, `user-agent`, and
for `webhook-signature` its schemes (`v1 v1` during a rotation, `v1a` for an ed25519 key),
never a signature. A subscription's own header values are not kept: any may be a
credential. `webhook-id` (`common.ids.webhook_id_for`: its tenant and event id) and
`webhook-timestamp` (the attempt's time in whole seconds) are the attempt's own and are
read back from its rows (`headers_shown`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

KEPT_VALUES = frozenset({"content-type", "user-agent"})
SIGNATURE = "webhook-signature"
MASK = "••••••"


@dataclass(frozen=True)
class HeaderShape:
    digest: str  # SHA-256 of `headers` as JSON: one `header_sets` row per shape
    headers: tuple[tuple[str, str | None], ...]


def header_shape(headers: Mapping[str, str]) -> HeaderShape:
    """The shape of a request's headers (as `build_headers` made them)."""
    names = tuple(headers)
    schemes = " ".join(token.partition(",")[0] for token in headers.get(SIGNATURE, "").split())
    kept = tuple(headers[name] for name in names if name in KEPT_VALUES)
    return _shape(names, schemes, kept)


@functools.lru_cache(maxsize=1024)
def _shape(names: tuple[str, ...], schemes: str, kept: tuple[str, ...]) -> HeaderShape:
    # Cached: a dispatcher sends few shapes, and the digest costs more than the request's
    # other bookkeeping. The key holds no secret (names, schemes, public values).
    values = iter(kept)
    headers = tuple(
        (name, schemes if name == SIGNATURE else next(values) if name in KEPT_VALUES else None)
        for name in names
    )
    canonical = json.dumps([list(pair) for pair in headers], separators=(",", ":"))
    return HeaderShape(hashlib.sha256(canonical.encode()).hexdigest(), headers)


def headers_shown(
    headers: Sequence[Sequence[str | None]], webhook_id: str, signed_at: datetime
) -> list[tuple[str, str]]:
    """A stored shape's headers as one attempt sent them, secrets masked: the signature's
    schemes with `MASK` for each signature, `MASK` for a subscription's own values."""
    out: list[tuple[str, str]] = []
    for name, value in headers:
        if name is None:
            continue
        if name == "webhook-id":
            value = webhook_id
        elif name == "webhook-timestamp":
            value = str(int(signed_at.timestamp()))
        elif name == SIGNATURE:
            value = " ".join(f"{scheme},{MASK}" for scheme in (value or "").split())
        out.append((name, MASK if value is None else value))
    return out
