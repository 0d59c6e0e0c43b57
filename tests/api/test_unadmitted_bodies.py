"""A caller the route will refuse never has its body parsed (`over_limit.py`).

The framework parses a JSON body before the route's dependencies check the caller, so a
body that is not JSON used to get a 422 from anyone, credentials or not: proof that it had
been parsed. Now such a caller gets the route's own refusal, and an admitted one still has
its body checked.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from httpx import Response

from tests.api.support import Api, assert_error

NOT_JSON = b'{"events": [' + b"{" * 1000  # what a parse would refuse with a 422


def _post(api: Api, path: str, headers: dict[str, str], body: bytes = NOT_JSON) -> Response:
    sent = {**headers, "content-type": "application/json"}
    response: Response = api.client.post(path, content=body, headers=sent)
    return response


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer hl_" + "A" * 32, "Bearer not-a-key", "Basic dXNlcjpwYXNz"],
    ids=["none", "unknown-key", "not-a-key", "basic"],
)
def test_a_body_without_a_credential_is_refused_unparsed(
    api: Api, authorization: str | None
) -> None:
    tenant_id, _ = api.tenant()
    headers = {"Authorization": authorization} if authorization else {}
    for path in ("/v1/events/batch", f"/v1/tenants/{tenant_id}/subscriptions", "/v1/tenants"):
        response = _post(api, path, headers)
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"


def test_a_revoked_key_or_one_from_another_address_is_refused_unparsed(api: Api) -> None:
    tenant_id, _ = api.tenant()
    keys = f"/v1/tenants/{tenant_id}/api-keys"
    made = api.client.post(keys, json={"scopes": ["events:write"]}, headers=api.admin).json()
    revoked = api.client.delete(f"{keys}/{made['id']}", headers=api.admin)
    assert revoked.status_code == 200, revoked.text
    gone = {"Authorization": f"Bearer {made['api_key']}"}
    message = assert_error(_post(api, "/v1/events/batch", gone), 401, "unauthorized")
    assert "revoked" in message

    elsewhere = api.client.post(
        keys, json={"scopes": ["events:write"], "allowed_cidrs": ["10.0.0.0/8"]}, headers=api.admin
    ).json()
    headers = {"Authorization": f"Bearer {elsewhere['api_key']}"}
    assert_error(_post(api, "/v1/events/batch", headers), 403, "forbidden")


def test_an_admitted_caller_still_has_its_body_checked(api: Api) -> None:
    tenant_id, headers = api.tenant()
    for path in ("/v1/events/batch", f"/v1/tenants/{tenant_id}/subscriptions"):
        assert_error(_post(api, path, headers), 422)
    assert_error(_post(api, "/v1/tenants", api.admin), 422)
    accepted = api.client.post(
        "/v1/events/batch",
        json={"events": [{"type": "order.created", "data": {}}]},
        headers=headers,
    )
    assert accepted.status_code == 202, accepted.text


def test_a_chunked_body_without_a_credential_is_refused_unparsed(api: Api) -> None:
    def chunks() -> Iterator[bytes]:
        yield NOT_JSON[:10]
        yield NOT_JSON[10:]

    response = api.client.post(
        "/v1/events/batch", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(response, 401, "unauthorized")


def test_too_many_unknown_credentials_from_one_address_get_the_routes_429(make_api) -> None:
    api = make_api(api_unknown_credentials_per_s=2)
    answers = [
        _post(api, "/v1/events/batch", {"Authorization": f"Bearer hl_{n:032d}"}).status_code
        for n in range(6)
    ]
    assert answers[:2] == [401, 401] and 429 in answers, answers
