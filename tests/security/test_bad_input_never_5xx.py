"""Bad input is a 4xx the operation documents, never a 5xx (issue 14, point 8).

On PostgreSQL, which refuses what SQLite lets through (NUL in text, dates out of range):
each request below answered 500 (or an undocumented 400) before it was refused at the
edge. `tests/api/test_schemathesis.py` runs the generated version of this in CI.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.api.support import Api, assert_error
from tests.security.postgres import database_url  # noqa: F401  (PostgreSQL, not SQLite)

pytestmark = pytest.mark.postgres
FAR = "9999-12-31T23:59:59-14:00"  # year 10000 once in UTC
EARLY = "0001-01-01T00:00:00+14:00"  # year 0 once in UTC


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    built: Api = make_api(raise_server_exceptions=False)
    return built


@pytest.fixture
def auth(api: Api) -> dict[str, str]:
    return api.tenant()[1]


def documented(api: Api, method: str, path: str) -> set[int]:
    """The status codes `/openapi.json` lists for an operation."""
    schema = api.client.get("/openapi.json").json()
    return {int(code) for code in schema["paths"][path][method.lower()]["responses"]}


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v1/subscriptions/%00", "/v1/subscriptions/{subscription_id}"),
        ("/v1/events/evt%00x", "/v1/events/{event_id}"),
        ("/v1/deliveries/%00", "/v1/deliveries/{delivery_id}"),
        ("/v1/deliveries?subscription_id=%00", "/v1/deliveries"),
        ("/v1/deliveries?event_type=a%00", "/v1/deliveries"),
        ("/v1/dead-letters?reason=%00", "/v1/dead-letters"),
        ("/v1/subscriptions?cursor=%00", "/v1/subscriptions"),
        (f"/v1/deliveries?since={FAR}", "/v1/deliveries"),
        (f"/v1/deliveries?until={EARLY}", "/v1/deliveries"),
        (f"/v1/dead-letters?since={FAR}", "/v1/dead-letters"),
        ("/v1/deliveries?until=0.5", "/v1/deliveries"),
    ],
)
def test_a_bad_path_or_query_value_is_a_422(
    api: Api, auth: dict[str, str], path: str, template: str
) -> None:
    response = api.client.get(path.replace("+", "%2B"), headers=auth)
    assert_error(response, 422)
    assert 422 in documented(api, "GET", template)


def test_bad_query_values_of_the_admin_routes_are_422(api: Api) -> None:
    paths = (
        f"/v1/audit-log?since={FAR}".replace("+", "%2B"),
        "/v1/tenants/%00",
        "/v1/audit-log?cursor=9999999999999999999",  # past the bigint ids
    )
    for path in paths:
        assert_error(api.client.get(path, headers=api.admin), 422)


def cursor_after(row_id: str) -> str:
    raw = json.dumps(["2026-01-01T00:00:00+00:00", row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "row_id", ["a\u0000b", "a\ud800b", "a" * 201], ids=["nul", "surrogate", "long"]
)
def test_a_cursor_whose_id_could_not_be_stored_is_refused_by_every_list(
    api: Api, row_id: str
) -> None:
    """The id in a cursor is bound into the list's query: NUL or a lone surrogate in it
    was a 500 from the driver on each of these."""
    tenant_id, auth = api.tenant()
    lists = {path: auth for path in (
        "/v1/subscriptions", "/v1/deliveries", "/v1/dead-letters", "/v1/dead-letters/poison",
        "/v1/events", "/v1/event-types", "/v1/replays",
    )}  # fmt: skip
    lists |= {"/v1/tenants": api.admin, f"/v1/tenants/{tenant_id}/api-keys": api.admin}
    for path, headers in lists.items():
        response = api.client.get(path, params={"cursor": cursor_after(row_id)}, headers=headers)
        assert_error(response, 422, "invalid_cursor")


@pytest.mark.parametrize(
    ("method", "path", "body", "admin"),
    [
        ("POST", "/v1/tenants", {"name": "a\u0000b"}, True),
        ("POST", "/v1/events", {"type": "a.b", "data": {}, "timestamp": EARLY}, False),
        ("POST", "/v1/subscriptions", {"url": "https://example.com/h", "event_types": ["*"],
                                       "description": "x\u0000"}, False),
        ("POST", "/v1/subscriptions", {"url": "https://example.com/h", "event_types": ["*"],
                                       "metadata": {"k\u0000": 1}}, False),
        ("POST", "/v1/replays", {"subscription_id": "s", "since": FAR}, False),
    ],
)  # fmt: skip
def test_a_bad_body_value_is_a_422(
    api: Api, auth: dict[str, str], method: str, path: str, body: Any, admin: bool
) -> None:
    headers = api.admin if admin else auth
    response = api.client.request(method, path, json=body, headers=headers)
    assert_error(response, 422)


def test_infinity_where_a_number_is_expected_is_a_422(api: Api, auth: dict[str, str]) -> None:
    headers = {**auth, "content-type": "application/json"}
    for value in ("Infinity", "NaN", "1e400"):
        body = f'{{"subscription_id": "s", "rate_per_s": {value}}}'
        assert_error(api.client.post("/v1/replays", content=body, headers=headers), 422)


def test_a_batch_item_nested_too_deep_is_rejected_alone(api: Api, auth: dict[str, str]) -> None:
    deep: Any = {}
    for _ in range(400):
        deep = {"a": deep}
    body = json.dumps(
        {"events": [{"type": "a.b", "data": {"ok": 1}}, {"type": "a.b", "data": deep}]}
    )
    headers = {**auth, "content-type": "application/json"}
    response = api.client.post("/v1/events/batch", content=body, headers=headers)
    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected"]
    assert "nested deeper" in results[1]["error"]["message"]


NAMED = '{"name": "a"}'


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe{}", b"not json", b'{"name": "a"',
     # JSON, but not in UTF-8: `json.loads(bytes)` read these, and the tenant was created.
     NAMED.encode("utf-16"), NAMED.encode("utf-32-le"), NAMED.encode("utf-8-sig")],
)  # fmt: skip
def test_a_body_that_is_not_json_in_utf8_is_a_documented_422(api: Api, body: bytes) -> None:
    headers = {**api.admin, "content-type": "application/json"}
    assert_error(api.client.post("/v1/tenants", content=body, headers=headers), 422)
    assert 422 in documented(api, "POST", "/v1/tenants")
    assert 400 not in documented(api, "POST", "/v1/tenants")


def test_a_method_a_path_does_not_answer_lists_every_method_it_does(
    api: Api, auth: dict[str, str]
) -> None:
    response = api.client.options("/v1/subscriptions/sub_1", headers=auth)
    assert_error(response, 405)
    assert set(response.headers["allow"].split(", ")) == {"GET", "PATCH", "DELETE"}
