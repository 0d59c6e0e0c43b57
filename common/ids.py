"""Identifiers that carry their day, so a lookup by id reaches one partition.

The hex part of a new id is laid out as a UUIDv7: 48 bits of Unix milliseconds, the
version nibble `7`, the RFC 4122 variant, then random (or, for delivery ids, hashed) bits.
A producer's own id carries its day too when it ends in a UUIDv7, in those 32 hex digits
or in the usual hyphenated form (`0193a0c4-5e1f-7abc-9def-0123456789ab`, what UUIDv7
libraries print), or in a ULID (26 characters of Crockford's base 32, the first ten its
48 bits of milliseconds: `01JEKX0Q2R4S6T8V0W2Y4Z6A8C`). Ids written before migration
0011 (24 random hex digits, or a uuid5 delivery id) carry no time: `day_of` returns None
for them and callers fall back to a lookup without the day.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from datetime import UTC, date, datetime, timedelta

_DELIVERY_NAMESPACE = uuid.UUID("8f3b5c1e-6a47-4a3e-9a55-1f0d3c2b7e90")
_WEBHOOK_NAMESPACE = uuid.UUID("3e9d2a71-0c5b-4f86-b1d4-7a2e6c90f415")
_EPOCH = date(1970, 1, 1)
_MS_PER_DAY = 86_400_000
# An id's own day is trusted as the partition day only this close to the day of ingest, so
# a producer's made-up id cannot aim at a partition that does not exist (see `event_day`).
ID_DAY_SLACK = timedelta(days=1)
# A UUIDv7 in 32 hex digits: 48 bits of milliseconds, the version, the RFC 4122 variant.
_V7 = re.compile(r"[0-9a-fA-F]{12}7[0-9a-fA-F]{3}[89abAB][0-9a-fA-F]{15}")
# A ULID: 48 bits of milliseconds in ten characters (so the first is at most 7), then 80
# random bits, in Crockford's base 32 (no I, L, O or U), either case.
_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_FROM_CROCKFORD = str.maketrans(
    _CROCKFORD + _CROCKFORD.lower(), "0123456789abcdefghijklmnopqrstuv" * 2
)


def _v7(ms: int, rest: bytes) -> str:
    raw = bytearray(ms.to_bytes(6, "big") + rest[:10])
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def new_id(prefix: str, at: datetime | None = None) -> str:
    """A random, URL-safe identifier such as `evt_0193...`, sortable by creation time (now,
    or `at`: rows of another day, as tests and imports write them)."""
    ms = int((at or datetime.now(UTC)).timestamp() * 1000)
    return f"{prefix}_{_v7(ms, secrets.token_bytes(10))}"


def delivery_id_for(tenant: str, event_id: str, subscription_id: str, day: date) -> str:
    """The id of the delivery of one event to one subscription, the same on every retry.

    Deterministic (`day` is the event's partition day, stored with the event), so a
    redelivered event yields the same ids and the router can publish them again without
    reading them back. The time part is the day's midnight: the id says where it lives.
    """
    name = f"{tenant}\x1f{event_id}\x1f{subscription_id}"
    digest = hashlib.sha1(_DELIVERY_NAMESPACE.bytes + name.encode()).digest()
    return "dlv_" + _v7((day - _EPOCH).days * _MS_PER_DAY, digest)


def webhook_id_for(tenant: str, event_id: str) -> str:
    """The `webhook-id` every request for one event carries: to each of its subscriptions,
    on every retry and every replay.

    Event ids are unique within a tenant only, and Standard Webhooks asks that a webhook id
    be unique across all messages: a receiver subscribed to two tenants de-duplicates on it,
    so two tenants' `order-1001` must not share one. Hashed with the tenant (`\\x1f` cannot
    occur in either id), so it is stable without being stored.
    """
    name = f"{tenant}\x1f{event_id}"
    return "msg_" + hashlib.sha256(_WEBHOOK_NAMESPACE.bytes + name.encode()).digest()[:16].hex()


def day_of(identifier: str) -> date | None:
    """The UTC day an id carries, or None for an id without time (older, or foreign), or
    whose time lies past the calendar's end (year 9999): 48 bits of milliseconds reach the
    year 10889, and a producer may send such an event id of its own."""
    _, _, tail = identifier.rpartition("_")
    if len(tail) == 26 and _ULID.fullmatch(tail) is not None:
        ms = int(tail[:10].translate(_FROM_CROCKFORD), 32)
    else:
        if len(tail) == 36 and tail[8] == tail[13] == tail[18] == tail[23] == "-":
            tail = tail.replace("-", "")  # 8-4-4-4-12; hyphens elsewhere leave it too long
        if len(tail) != 32 or _V7.fullmatch(tail) is None:
            return None
        ms = int(tail[:12], 16)
    try:
        return _EPOCH + timedelta(days=ms // _MS_PER_DAY)
    except OverflowError:
        return None


def event_day(event_id: str, ingested: date) -> date:
    """The partition day of an event: its id's day when the id carries one near `ingested`,
    else the day of ingest. Uniqueness does not rest on this choice (see router/persist.py)."""
    carried = day_of(event_id)
    if carried is not None and abs(carried - ingested) <= ID_DAY_SLACK:
        return carried
    return ingested
