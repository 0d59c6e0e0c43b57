"""Credentials that match nothing cost a query each: an address gets a few such look-ups a
second (`HOOKLINE_API_UNKNOWN_CREDENTIALS_PER_S`), then 429 without one, while known keys
and other addresses are served as before."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from hookline.api.errors import ApiError
from hookline.api.misses import MAX_ADDRESSES, SHARED, Misses, _source
from tests.api.support import Api, assert_error
from tests.portal.conftest import Portal

PER_S = 3


def unknown_key() -> dict[str, str]:
    return {"Authorization": f"Bearer hl_{secrets.token_urlsafe(24)}"}


def at_second_start() -> None:
    """The start of the next second of the clock `Misses` counts in."""
    time.sleep(1.0 - time.monotonic() % 1.0 + 0.01)


@contextmanager
def queries_of(api: Api, table: str) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if table in statement:
            seen.append(statement)

    event.listen(api.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(api.engine, "before_cursor_execute", record)


def refusals(api: Api, reason: str = "too_many_unknown_credentials") -> float:
    value = api.metrics.registry.get_sample_value("hookline_api_refusals_total", {"reason": reason})
    return value or 0.0


def within_one_second(attempt: Callable[[], Any]) -> Any:
    """`attempt()` begun at a second's start, again if the second ended amid it."""
    for _ in range(3):
        at_second_start()
        second = int(time.monotonic())
        result = attempt()
        if int(time.monotonic()) == second:
            return result
    raise AssertionError("no attempt fit in one second")


def test_unknown_api_keys_from_one_address_cost_a_few_queries_a_second(
    make_api: Callable[..., Api],
) -> None:
    # No key cache: a key already found is looked up on every request, and must pass.
    api = make_api(api_unknown_credentials_per_s=PER_S, api_key_cache_s=0)
    _, known = api.tenant()
    other = TestClient(api.app, client=("10.9.8.7", 40000))
    assert api.client.get("/v1/subscriptions", headers=known).status_code == 200

    def flood() -> dict[str, Any]:
        counted = refusals(api)
        with queries_of(api, "api_keys") as seen:
            answers = [api.client.get("/v1/subscriptions", headers=unknown_key())
                       for _ in range(PER_S + 2)]  # fmt: skip
            queried = len(seen)
            ingest = api.client.post("/v1/events", json={"type": "a.b"}, headers=unknown_key())
            keyed = api.client.post(
                "/v1/subscriptions", json={"url": "http://127.0.0.1:9/h", "event_types": ["a"]},
                headers={**unknown_key(), "Idempotency-Key": "k"},
            )  # fmt: skip
            after = len(seen)
            still = api.client.get("/v1/subscriptions", headers=known)
            known_queries = len(seen) - after
            elsewhere = other.get("/v1/subscriptions", headers=unknown_key())
        return {"answers": answers, "queried": queried, "after": after, "ingest": ingest,
                "keyed": keyed, "known": still, "known_queries": known_queries,
                "elsewhere": elsewhere, "counted": refusals(api) - counted}  # fmt: skip

    seen = within_one_second(flood)

    codes = [a.status_code for a in seen["answers"]]
    assert codes == [401] * PER_S + [429, 429], codes
    refused = seen["answers"][-1]
    assert "unknown credentials" in assert_error(refused, 429, "too_many_unknown_credentials")
    assert refused.headers["Retry-After"] == "1"
    assert seen["queried"] == PER_S  # one query per miss, none once the address is over
    # The fast ingest path and a keyed POST are refused the same way, without a query.
    assert_error(seen["ingest"], 429, "too_many_unknown_credentials")
    assert_error(seen["keyed"], 429, "too_many_unknown_credentials")
    assert seen["after"] == seen["queried"]
    assert seen["counted"] == 4  # counted for the operator, however the 429 was answered
    # A key found before is looked up again and served, from the same address.
    assert seen["known"].status_code == 200 and seen["known_queries"] >= 1
    assert_error(seen["elsewhere"], 401)  # another address has its own count
    time.sleep(1.0)
    assert_error(api.client.get("/v1/subscriptions", headers=unknown_key()), 401)
    other.close()


def test_unknown_portal_sessions_and_links_count_too(make_api: Callable[..., Api]) -> None:
    portal = Portal(make_api(api_unknown_credentials_per_s=PER_S, allow_http=True))
    api = portal.api
    tenant_id, _ = portal.tenant()
    portal.subscribe(tenant_id)
    signed_in = portal.open(tenant_id)  # the same address as `api.client`
    assert signed_in.get("/portal/endpoints").status_code == 200

    def flood() -> tuple[list[int], int, int, int, int, float]:
        counted = refusals(api)
        with queries_of(api, "portal_links") as seen:
            pages = []
            for _ in range(PER_S + 1):
                api.client.cookies.set("hookline_portal", f"hls_{secrets.token_urlsafe(24)}")
                pages.append(api.client.get("/portal/endpoints").status_code)
            api.client.cookies.clear()
            queried = len(seen)
            link = api.client.get("/portal/open", params={"token": "hlp_" + "x" * 30})
            after = len(seen)
            session = signed_in.get("/portal/endpoints")
        counted = refusals(api) - counted
        return pages, queried, link.status_code, after, session.status_code, counted

    pages, queried, link, after, session, counted = within_one_second(flood)

    assert pages == [401] * PER_S + [429]
    assert queried == PER_S
    assert (link, after) == (429, queried)  # a link's exchange is counted with the sessions
    assert session == 200  # a live session is served from the same address all along
    assert counted == 2
    portal.close()


def test_addresses_are_counted_by_host_and_bounded_in_number() -> None:
    assert _source("2001:db8:1:2:aaaa::1") == _source("2001:db8:1:2:bbbb::2")  # one /64
    assert _source("2001:db8:1:3::1") != _source("2001:db8:1:2::1")
    assert _source("::ffff:192.0.2.1") == "192.0.2.1"
    assert _source(None) == SHARED
    clock = [100.0]
    misses = Misses(1, clock=lambda: clock[0])
    for n in range(MAX_ADDRESSES):
        misses.charge(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}")
    misses.check("192.0.2.1", "hl_a")  # a new address past the table: the shared count, empty yet
    misses.charge("192.0.2.1")
    with pytest.raises(ApiError) as refused:
        misses.check("192.0.2.2", "hl_b")  # so is any other new one, this second
    assert refused.value.status_code == 429
    misses.found("hl_c")
    misses.check("192.0.2.2", "hl_c")  # found before: never refused here
    clock[0] += 1.0  # a new second: every count starts again
    misses.check("192.0.2.2", "hl_b")
