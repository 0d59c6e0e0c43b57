"""The verification handshake and secret rotation, against a real receiver on 127.0.0.1,
with signatures checked by the public `standardwebhooks` library."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from common.settings import Settings
from common.signing import new_secret, verify_public
from common.ssrf import system_resolver
from common.wire import DeliveryMessage, new_id
from dispatcher.http import Sender
from dispatcher.subscriptions import SubscriptionCache
from hookline.api.deps import Services
from hookline.receiver import Received, Receiver, Reply
from hookline.services.verification import handshake
from tests import builders
from tests.api.support import Api, assert_error


def echo(request: Received) -> Reply:
    """What a receiver that wants its webhooks does with the challenge."""
    body = json.loads(request.body)
    if body.get("type") == "webhook.verification":
        return Reply(200, json.dumps({"challenge": body["challenge"]}).encode())
    return Reply(204)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(respond=echo) as running:
        yield running


def subscribe(api: Api, auth: dict[str, str], url: str, **fields: Any) -> Any:
    body = {"url": url, "event_types": ["order.*"], **fields}
    return api.client.post("/v1/subscriptions", json=body, headers=auth)


def test_an_endpoint_that_echoes_the_challenge_becomes_active(api, receiver):
    _, auth = api.tenant()

    response = subscribe(api, auth, f"{receiver.url}/hooks", headers={"X-Token": "t0k"})

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "active"
    assert body["verified_at"] is not None
    (challenge,) = receiver.received
    sent = json.loads(challenge.body)
    assert sent["type"] == "webhook.verification"
    assert len(sent["challenge"]) >= 32
    assert challenge.path == "/hooks"
    assert challenge.headers["x-token"] == "t0k"
    # Signed like every webhook: the receiver can check it is really Hookline asking.
    assert Webhook(body["secret"]).verify(challenge.body, challenge.headers) == sent


def test_an_endpoint_that_does_not_echo_stays_pending_until_verify_succeeds(api):
    _, auth = api.tenant()
    answers = [Reply(200, b"ok"), Reply(200, b'{"challenge": "wrong"}'), Reply(500)]

    def respond(request: Received) -> Reply:
        return answers.pop(0) if answers else echo(request)

    with Receiver(respond=respond) as receiver:
        created = subscribe(api, auth, f"{receiver.url}/hooks").json()
        sub_id = created["id"]
        assert created["status"] == "pending_verification"
        assert created["verified_at"] is None

        wrong = api.client.post(f"/v1/subscriptions/{sub_id}/verify", headers=auth).json()
        failing = api.client.post(f"/v1/subscriptions/{sub_id}/verify", headers=auth).json()
        passed = api.client.post(f"/v1/subscriptions/{sub_id}/verify", headers=auth).json()

    assert wrong == {
        "verified": False,
        "status": "pending_verification",
        "detail": 'the endpoint did not echo {"challenge": "<the challenge>"}',
    }
    assert failing["verified"] is False
    assert "HTTP 500" in failing["detail"]
    assert passed["verified"] is True
    assert passed["status"] == "active"
    # Each try sent a fresh challenge.
    challenges = {json.loads(r.body)["challenge"] for r in receiver.received}
    assert len(challenges) == 4


def test_an_answer_nested_past_the_json_parser_fails_the_handshake_not_the_request(api):
    _, auth = api.tenant()
    with Receiver(respond=lambda r: Reply(200, b"[" * 16_000)) as receiver:
        created = subscribe(api, auth, f"{receiver.url}/hooks").json()
        response = api.client.post(f"/v1/subscriptions/{created['id']}/verify", headers=auth)

    assert created["status"] == "pending_verification"
    assert response.status_code == 200
    assert response.json()["detail"] == 'the endpoint did not echo {"challenge": "<the challenge>"}'


def test_a_redirect_is_not_followed_and_does_not_verify(api):
    _, auth = api.tenant()
    with (
        Receiver(respond=echo) as elsewhere,
        Receiver(respond=lambda r: Reply(307, headers={"location": elsewhere.url})) as receiver,
    ):
        created = subscribe(api, auth, f"{receiver.url}/hooks").json()

    assert created["status"] == "pending_verification"
    assert elsewhere.count == 0


def test_a_pending_subscription_is_verified_again_when_subscribed_again(api):
    _, auth = api.tenant()
    ready = {"echo": False}

    def respond(request: Received) -> Reply:
        return echo(request) if ready["echo"] else Reply(503)

    with Receiver(respond=respond) as receiver:
        first = subscribe(api, auth, f"{receiver.url}/hooks")
        ready["echo"] = True
        again = subscribe(api, auth, f"{receiver.url}/hooks")

    assert first.json()["status"] == "pending_verification"
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["status"] == "active"


def test_the_operator_registers_pre_verified_without_a_handshake(api, receiver):
    tenant_id, auth = api.tenant()

    response = api.client.post(
        f"/v1/tenants/{tenant_id}/subscriptions",
        json={"url": f"{receiver.url}/hooks", "event_types": ["order.*"]},
        headers=api.admin,
    )

    assert response.status_code == 201, response.text
    assert response.json()["status"] == "active"
    assert response.json()["tenant_id"] == tenant_id
    assert receiver.count == 0
    listed = api.client.get("/v1/subscriptions", headers=auth).json()["data"]
    assert [s["id"] for s in listed] == [response.json()["id"]]


def test_the_operator_may_ask_for_the_handshake(api):
    tenant_id, _ = api.tenant()
    with Receiver(respond=lambda r: Reply(200)) as receiver:
        response = api.client.post(
            f"/v1/tenants/{tenant_id}/subscriptions",
            json={"url": f"{receiver.url}/h", "event_types": ["a"], "verify": True},
            headers=api.admin,
        )

    assert response.json()["status"] == "pending_verification"
    assert receiver.count == 1


def test_a_new_url_must_pass_the_handshake_again(api, receiver):
    _, auth = api.tenant()
    sub = subscribe(api, auth, f"{receiver.url}/hooks").json()
    assert sub["status"] == "active"

    with Receiver(respond=lambda r: Reply(200)) as silent:
        moved = api.client.patch(
            f"/v1/subscriptions/{sub['id']}", json={"url": f"{silent.url}/new"}, headers=auth
        )

    assert moved.status_code == 200, moved.text
    assert moved.json()["url"] == f"{silent.url}/new"
    assert moved.json()["status"] == "pending_verification"
    assert silent.count == 1


def test_the_handshake_connects_to_the_checked_address_and_keeps_the_name(make_api, receiver):
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    api = make_api(resolver=resolver)
    _, auth = api.tenant()

    created = subscribe(api, auth, f"http://receiver.test:{receiver.port}/hooks").json()

    assert created["status"] == "active"
    assert receiver.received[0].headers["host"] == f"receiver.test:{receiver.port}"
    # Checked on creation and again for the handshake itself.
    assert asked == ["receiver.test", "receiver.test"]


def test_the_handshake_is_refused_when_the_name_moves_to_a_forbidden_address(make_api, receiver):
    answers = {"receiver.test": "127.0.0.1"}
    api = make_api(resolver=lambda host, port: [answers[host]])
    _, auth = api.tenant()
    sub = subscribe(api, auth, f"http://receiver.test:{receiver.port}/hooks").json()
    services: Services = api.app.state.services
    strict = api.app.state.services = Services(
        **{**services.__dict__, "settings": api.settings.model_copy(
            update={"allow_private_targets": False, "allow_http": True})}
    )  # fmt: skip
    assert strict.settings.allow_private_targets is False
    answers["receiver.test"] = "169.254.169.254"

    outcome = api.client.post(f"/v1/subscriptions/{sub['id']}/verify", headers=auth).json()

    assert outcome["verified"] is False
    assert "non-public" in outcome["detail"]
    assert receiver.count == 1  # only the handshake at creation


def deliver(api: Api, subscription_id: str, tenant_id: str) -> Any:
    """Send one webhook the way the dispatcher does: its cache, its sender, its signing."""
    services: Services = api.app.state.services
    cache = SubscriptionCache(api.sessionmaker, services.secret_box, refresh_s=60)
    endpoint = cache.get(subscription_id)
    assert endpoint is not None
    event = builders.event(tenant_id)
    message = DeliveryMessage(
        delivery_id=new_id("dlv"), event_id=event.id, tenant=tenant_id,
        subscription_id=subscription_id, attempt=1, event=event,
    )  # fmt: skip
    sender = Sender(api.settings)
    try:
        result = sender.send(endpoint, message)
    finally:
        sender.close()
    assert result.status_code == 204, result


def test_during_the_overlap_webhooks_verify_with_the_old_and_the_new_secret(api, receiver):
    tenant_id, auth = api.tenant()
    sub = subscribe(api, auth, f"{receiver.url}/hooks").json()
    old = sub["secret"]

    rotated = api.client.post(f"/v1/subscriptions/{sub['id']}/rotate-secret", headers=auth)

    assert rotated.status_code == 200, rotated.text
    assert rotated.headers["cache-control"] == "no-store"
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != old
    assert rotated.json()["previous_secret_expires_at"] is not None
    deliver(api, sub["id"], tenant_id)
    webhook = receiver.received[-1]
    assert len(webhook.headers["webhook-signature"].split()) == 2
    for secret in (old, new):
        Webhook(secret).verify(webhook.body, webhook.headers)


def test_without_an_overlap_only_the_new_secret_signs(api, receiver):
    tenant_id, auth = api.tenant()
    sub = subscribe(api, auth, f"{receiver.url}/hooks").json()

    new = api.client.post(
        f"/v1/subscriptions/{sub['id']}/rotate-secret", json={"overlap_s": 0}, headers=auth
    ).json()["secret"]
    deliver(api, sub["id"], tenant_id)

    webhook = receiver.received[-1]
    Webhook(new).verify(webhook.body, webhook.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(sub["secret"]).verify(webhook.body, webhook.headers)


def test_an_ed25519_subscription_signs_v1a_with_a_public_key_the_receiver_can_fetch(api, receiver):
    tenant_id, auth = api.tenant()
    sub = subscribe(api, auth, f"{receiver.url}/hooks", ed25519=True).json()

    key = api.client.get(f"/v1/subscriptions/{sub['id']}/public-key", headers=auth)
    deliver(api, sub["id"], tenant_id)

    assert key.status_code == 200
    assert key.json()["algorithm"] == "ed25519"
    assert key.json()["public_key"] == sub["public_key"]
    for request in receiver.received:  # the handshake and the webhook
        verify_public(key.json()["public_key"], request.headers, request.body)
        Webhook(sub["secret"]).verify(request.body, request.headers)


def test_an_hmac_only_subscription_has_no_public_key(api, receiver):
    _, auth = api.tenant()
    sub = subscribe(api, auth, f"{receiver.url}/hooks").json()

    response = api.client.get(f"/v1/subscriptions/{sub['id']}/public-key", headers=auth)

    assert_error(response, 404, "not_found")
    assert sub["public_key"] is None


def test_an_answer_dripped_byte_by_byte_fails_the_handshake_at_its_deadline():
    def dripping(request: Received) -> Reply:
        echoed = echo(request)
        return Reply(echoed.status, echoed.body, drip_s=0.1)  # ~10 s for the whole answer

    settings = Settings(allow_private_targets=True, allow_http=True, request_timeout_s=1.0)
    with Receiver(respond=dripping) as slow:
        started = time.monotonic()
        outcome = handshake(
            f"{slow.url}/hooks", [new_secret()], {}, settings, resolver=system_resolver
        )
        took_s = time.monotonic() - started

    assert not outcome.verified
    assert "within 1 s" in outcome.detail
    assert took_s < 2.5  # the deadline bounds the exchange, not each read
