"""`/v1/subscriptions`: create (idempotent, SSRF-checked, signed with a one-time secret),
list with cursors, and read one, within one tenant.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from standardwebhooks import Webhook

from common import signing
from common.db.models import Subscription
from common.db.statuses import SubscriptionStatus
from common.secretbox import DEV_SECRET_KEY, SecretBox
from tests.api.support import Api, assert_error

HOOK_URL = "http://127.0.0.1:9/hooks/orders"


def subscriptions_stored(api: Api) -> int:
    with api.sessionmaker() as session:
        return session.scalar(select(func.count()).select_from(Subscription)) or 0


def subscribe(api: Api, auth: dict[str, str], **fields: Any) -> Any:
    body = {"url": HOOK_URL, "event_types": ["order.created"], **fields}
    return api.client.post("/v1/subscriptions", json=body, headers=auth)


def test_a_new_subscription_awaits_verification_with_a_secret_shown_once(api):
    _, headers = api.tenant()

    response = subscribe(
        api,
        headers,
        event_types=["order.*", "invoice.paid"],
        operations=["sync"],
        headers={"Authorization": "Bearer receiver-token"},
        description="site B",
        metadata={"team": "billing"},
        rate_limit_per_s=5,
        max_in_flight=3,
    )

    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["secret"].startswith("whsec_")
    assert body["url"] == HOOK_URL
    assert body["event_types"] == ["invoice.paid", "order.*"]
    assert body["operations"] == ["sync"]
    assert body["header_names"] == ["Authorization"]
    assert "receiver-token" not in response.text
    # Nothing answers on port 9, so the handshake failed: pending until verified.
    assert body["status"] == SubscriptionStatus.PENDING_VERIFICATION
    assert body["description"] == "site B"
    assert body["metadata"] == {"team": "billing"}
    assert body["rate_limit_per_s"] == 5
    assert body["max_in_flight"] == 3
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None
    assert body["updated_at"] == body["created_at"]

    shown = api.client.get(f"/v1/subscriptions/{body['id']}", headers=headers)
    assert shown.status_code == 200
    assert "secret" not in shown.json()
    # The creation answer adds the secret and the handshake's outcome to the subscription.
    assert body["verification"]["status"] == "failed"
    assert shown.json() == {
        key: value for key, value in body.items() if key not in ("secret", "verification")
    }


def test_the_secret_is_stored_sealed_and_the_row_is_ready_for_dispatch(api):
    tenant_id, headers = api.tenant()

    body = subscribe(api, headers, headers={"X-Token": "t0ken"}).json()

    with api.sessionmaker() as session:
        row = session.get(Subscription, body["id"])
    assert row is not None
    assert row.tenant_id == tenant_id
    assert body["secret"] not in row.secret_enc
    assert SecretBox(DEV_SECRET_KEY).open(row.secret_enc) == body["secret"]
    assert SecretBox(DEV_SECRET_KEY).open_values(row.headers) == {"X-Token": "t0ken"}
    assert "t0ken" not in str(row.headers)  # sealed like the secret
    assert row.updated_at is not None and row.updated_at.tzinfo is not None


def test_the_secret_is_sealed_with_the_configured_key(make_api):
    api = make_api(secret_key="production-key-for-this-test")
    _, headers = api.tenant()

    body = subscribe(api, headers).json()

    with api.sessionmaker() as session:
        row = session.get(Subscription, body["id"])
    assert SecretBox("production-key-for-this-test").open(row.secret_enc) == body["secret"]


def test_the_secret_verifies_signatures_with_standard_webhooks(api):
    _, headers = api.tenant()
    secret = subscribe(api, headers).json()["secret"]
    payload = json.dumps({"type": "order.created", "data": {"order": 1}}).encode()
    timestamp = int(time.time())
    signed = {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signing.sign(secret, "evt_1", timestamp, payload),
    }

    assert Webhook(secret).verify(payload, signed) == {
        "type": "order.created",
        "data": {"order": 1},
    }
    signing.verify(secret, signed, payload)


def test_subscribing_again_returns_the_existing_subscription_without_its_secret(api):
    _, headers = api.tenant()
    first = subscribe(api, headers, event_types=["b.x", "a.*"], operations=["u", "c"])

    again = subscribe(
        api, headers, event_types=["a.*", "b.x", "a.*"], operations=["c", "u"], description="2"
    )

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert "secret" not in again.json()
    assert again.json()["description"] is None
    assert subscriptions_stored(api) == 1


def test_other_types_operations_or_urls_are_other_subscriptions(api):
    _, headers = api.tenant()
    ids = {
        subscribe(api, headers).json()["id"],
        subscribe(api, headers, operations=["sync"]).json()["id"],
        subscribe(api, headers, event_types=["order.*"]).json()["id"],
        subscribe(api, headers, url=HOOK_URL + "/v2").json()["id"],
    }

    assert len(ids) == 4
    assert subscriptions_stored(api) == 4


def test_the_same_subscription_in_two_tenants_is_two_subscriptions(api):
    _, acme = api.tenant("acme")
    _, globex = api.tenant("globex")

    assert subscribe(api, acme).status_code == 201
    assert subscribe(api, globex).status_code == 201
    assert subscriptions_stored(api) == 2


@pytest.mark.parametrize(
    "fields",
    [
        {"event_types": []},
        {"event_types": ["order.*.created"]},
        {"event_types": ["order created"]},
        {"event_types": ["**"]},
        {"event_types": ["order."]},
        {"event_types": "order.created"},
        {"operations": ["has space"]},
        {"headers": {"Webhook-Signature": "v1,forged"}},
        {"headers": {"Content-Type": "text/plain"}},
        {"headers": {"tracestate": "vendor=1"}},
        {"propagate_trace": "yes please"},
        {"headers": {"Bad Name": "x"}},
        {"headers": {"X-Split": "a\r\nInjected: yes"}},
        {"rate_limit_per_s": 0},
        {"max_in_flight": 0},
        {"colour": "blue"},
        {"url": ""},
    ],
)
def test_an_invalid_subscription_is_refused_and_nothing_is_stored(api, fields):
    _, headers = api.tenant()

    response = subscribe(api, headers, **fields)

    assert_error(response, 422, "validation_error")
    assert subscriptions_stored(api) == 0


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1:9/hook", "non-public"),
        ("https://10.0.0.5/hook", "non-public"),
        ("https://[::ffff:169.254.169.254]/latest", "non-public"),
        ("https://[::1]/hook", "non-public"),
        ("ftp://example.com/hook", "scheme"),
        ("https://user:pass@127.0.0.1/hook", "credentials"),
        ("https:///no-host", "no host"),
    ],
)
def test_an_unsafe_url_is_refused_with_the_reason(make_api, url, reason):
    api = make_api(allow_private_targets=False)
    _, headers = api.tenant()

    response = subscribe(api, headers, url=url)

    message = assert_error(response, 422, "unsafe_target")
    assert reason in message
    assert "pass" not in message
    assert subscriptions_stored(api) == 0


@pytest.mark.parametrize(
    "url", ["https://-1.0.0.1/hook", "https://0x-1.0.0.1/", "https://1.2.3.999/"]
)
def test_a_host_ending_in_a_number_but_no_address_is_a_422_on_every_route(make_api, url):
    def resolver(host: str, port: int) -> list[str]:
        raise AssertionError(f"{host!r} is no name to resolve")

    api = make_api(resolver=resolver, raise_server_exceptions=False)
    tenant_id, headers = api.tenant()
    created = subscribe(api, headers, url="http://127.0.0.1:9/h").json()["id"]

    answers = [
        subscribe(api, headers, url=url),
        api.client.patch(f"/v1/subscriptions/{created}", json={"url": url}, headers=headers),
        api.client.post(
            f"/v1/tenants/{tenant_id}/subscriptions",
            json={"url": url, "event_types": ["*"]},
            headers=api.admin,
        ),
    ]

    for answer in answers:
        assert "not a valid IPv4 address" in assert_error(answer, 422, "unsafe_target")
    assert subscriptions_stored(api) == 1


def test_an_internationalised_host_is_stored_in_its_ascii_form_on_every_route(make_api):
    """Stored as browsers and HTTP clients send it, so every attempt can build its `Host`
    header; a name with no ASCII form is refused, with the way out."""
    api = make_api(resolver=lambda host, port: ["127.0.0.1"])
    tenant_id, headers = api.tenant()
    admin_url = f"/v1/tenants/{tenant_id}/subscriptions"

    mine = subscribe(api, headers, url="https://b\u00fccher.example/hook")
    operator = api.client.post(
        admin_url, json={"url": "https://\u4f8b\u3048.jp/hook", "event_types": ["*"]},
        headers=api.admin,
    )  # fmt: skip
    moved = api.client.patch(
        f"/v1/subscriptions/{mine.json()['id']}",
        json={"url": "https://\uff11\uff12\uff17.\uff10.\uff10.\uff12:9/hook"},
        headers=headers,
    )

    assert mine.status_code == operator.status_code == 201, (mine.text, operator.text)
    assert mine.json()["url"] == "https://xn--bcher-kva.example/hook"
    assert operator.json()["url"] == "https://xn--r8jz45g.jp/hook"
    assert moved.status_code == 200, moved.text
    assert moved.json()["url"] == "https://127.0.0.2:9/hook"
    with api.sessionmaker() as session:
        assert all(url.isascii() for url in session.scalars(select(Subscription.url)))
    assert "xn--" in assert_error(subscribe(api, headers, url="https://i\u2764.ws/"), 422)


def test_plain_http_to_a_public_address_needs_allow_http(make_api):
    strict = make_api(allow_private_targets=False)
    _, headers = strict.tenant()

    response = subscribe(strict, headers, url="http://93.184.215.14/hook")

    assert "http" in assert_error(response, 422, "unsafe_target")
    lenient = make_api(allow_private_targets=False, allow_http=True)
    assert subscribe(lenient, headers, url="http://93.184.215.14/hook").status_code == 201


def test_subscribing_needs_the_write_scope(api):
    tenant_id, _ = api.tenant()
    reader = api.key(tenant_id, "subscriptions:read")

    assert_error(subscribe(api, reader), 403, "forbidden")
    assert_error(subscribe(api, {}), 401, "unauthorized")
    assert subscriptions_stored(api) == 0


def test_the_list_pages_through_every_subscription_once_in_creation_order(api):
    _, headers = api.tenant()
    created = [subscribe(api, headers, url=f"{HOOK_URL}/{n}").json()["id"] for n in range(7)]

    seen, cursor, pages = [], None, 0
    while pages < 10:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        response = api.client.get("/v1/subscriptions", params=params, headers=headers)
        assert response.status_code == 200
        page = response.json()
        assert len(page["data"]) <= 3
        assert all("secret" not in item for item in page["data"])
        seen += [item["id"] for item in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == created
    assert pages == 3


def test_the_list_defaults_to_100_and_refuses_limits_outside_1_to_500(api):
    _, headers = api.tenant()
    subscribe(api, headers)

    assert len(api.client.get("/v1/subscriptions", headers=headers).json()["data"]) == 1
    for limit in (0, 501, "many"):
        response = api.client.get("/v1/subscriptions", params={"limit": limit}, headers=headers)
        assert_error(response, 422, "validation_error")


@pytest.mark.parametrize("cursor", ["garbage", "e30", "WyJ4Il0", "WyJub3QtYS1kYXRlIiwieCJd"])
def test_a_cursor_the_api_did_not_issue_is_refused(api, cursor):
    _, headers = api.tenant()

    response = api.client.get("/v1/subscriptions", params={"cursor": cursor}, headers=headers)

    assert_error(response, 422, "invalid_cursor")


def test_the_list_holds_only_the_callers_subscriptions(api):
    _, acme = api.tenant("acme")
    _, globex = api.tenant("globex")
    mine = subscribe(api, acme).json()["id"]
    subscribe(api, globex, url=HOOK_URL + "/globex")

    listed = api.client.get("/v1/subscriptions", headers=acme).json()

    assert [item["id"] for item in listed["data"]] == [mine]


def test_another_tenants_subscription_is_not_found(api):
    _, acme = api.tenant("acme")
    _, globex = api.tenant("globex")
    theirs = subscribe(api, globex).json()["id"]

    assert_error(api.client.get(f"/v1/subscriptions/{theirs}", headers=acme), 404, "not_found")
    assert_error(api.client.get("/v1/subscriptions/sub_nope", headers=acme), 404, "not_found")
    assert api.client.get(f"/v1/subscriptions/{theirs}", headers=globex).status_code == 200


def test_reading_subscriptions_needs_the_read_scope(api):
    tenant_id, headers = api.tenant()
    sub_id = subscribe(api, headers).json()["id"]
    writer = api.key(tenant_id, "subscriptions:write")

    assert_error(api.client.get("/v1/subscriptions", headers=writer), 403, "forbidden")
    assert_error(api.client.get(f"/v1/subscriptions/{sub_id}", headers=writer), 403)


DEEP_CURSOR = base64.urlsafe_b64encode(b"[" * 20_000).decode()


@pytest.mark.parametrize(
    "path", ["/v1/subscriptions", "/v1/deliveries", "/v1/dead-letters", "/v1/dead-letters/poison"]
)
def test_a_cursor_nested_past_any_parser_is_refused_not_a_crash(api, path):
    _, headers = api.tenant()

    response = api.client.get(path, params={"cursor": DEEP_CURSOR}, headers=headers)

    assert response.status_code == 422  # a route's length limit, or invalid_cursor
    if path.startswith("/v1/dead-letters"):  # no limit of their own: the decoder's
        assert_error(response, 422, "invalid_cursor")


def cursor_at(created_at: str) -> str:
    raw = json.dumps([created_at, "evt_0"]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("created_at", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
@pytest.mark.parametrize(
    "path", ["/v1/events", "/v1/deliveries", "/v1/dead-letters", "/v1/dead-letters/poison",
             "/v1/replays"],
)  # fmt: skip
def test_a_cursor_whose_time_leaves_the_calendar_in_utc_is_refused_not_a_crash(
    api, path, created_at
):
    """A cursor's time with an offset that takes it before year 1 or past 9999 in UTC: the
    lists' queries overflowed converting it (a 500 on each)."""
    _, headers = api.tenant()

    response = api.client.get(path, params={"cursor": cursor_at(created_at)}, headers=headers)

    assert_error(response, 422, "invalid_cursor")
