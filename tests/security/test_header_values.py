"""Static header values: sealed at rest, never shown again, opened only to be sent (issue 14).

A subscription's static headers often carry a credential the receiver issued, under any
name (`X-Shared-Pass`), so no value is shown by any route or command, whatever its name.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import MetaData, Table, insert, select, text, update
from typer.testing import CliRunner

from common.db import migrate
from common.db.models import Delivery, Subscription
from common.db.session import make_engine, make_sessionmaker
from common.db.statuses import DeliveryStatus
from common.secretbox import DEV_SECRET_KEY, SecretBox
from common.wire import utcnow
from dispatcher.http import MASK
from dispatcher.subscriptions import SubscriptionCache
from hookline.cli import app
from tests import builders
from tests.api.support import Api
from tests.services import temporary_database

HEADERS = {"X-Shared-Pass": "hunter2", "Authorization": "Bearer receiver-token-1"}
VALUES = ("hunter2", "receiver-token-1")


def _subscribed(api: Api) -> tuple[str, str, dict[str, str]]:
    """A subscription with static headers, a dead delivery to it, and a read-only key."""
    tenant_id, auth = api.tenant()
    created = api.client.post(
        "/v1/subscriptions",
        json={"url": "http://127.0.0.1:9/hook", "event_types": ["order.*"], "headers": HEADERS},
        headers=auth,
    )
    assert created.status_code == 201, created.text
    sub_id = created.json()["id"]
    with api.sessionmaker.begin() as session:
        message = builders.delivery(session, builders.event(tenant_id, type="order.paid"), sub_id)
        session.execute(
            update(Delivery)
            .where(Delivery.id == message.delivery_id)
            .values(status=DeliveryStatus.DEAD, dead_reason="max_attempts", finished_at=utcnow())
        )
        builders.attempt(session, message.delivery_id, 1, static=HEADERS)  # as it was sent
    return sub_id, message.delivery_id, api.key(tenant_id, "deliveries:read", "subscriptions:read")


def test_no_route_shows_a_header_value_whatever_its_name(api: Api):
    sub_id, delivery_id, reader = _subscribed(api)

    shown = [
        api.client.get(f"/v1/dead-letters/{delivery_id}", headers=reader),
        api.client.get(f"/v1/dead-letters/{delivery_id}", headers=api.admin),
        api.client.get("/v1/dead-letters", headers=reader),
        api.client.get(f"/v1/deliveries/{delivery_id}", headers=reader),
        api.client.get("/v1/deliveries", headers=reader),
        api.client.get(f"/v1/subscriptions/{sub_id}", headers=reader),
        api.client.get("/v1/subscriptions", headers=reader),
    ]

    for response in shown:
        assert response.status_code == 200, response.text
        for value in VALUES:
            assert value not in response.text, response.request.url
    headers = shown[0].json()["headers"]
    assert headers["X-Shared-Pass"] == headers["Authorization"] == MASK
    for response in (shown[0], shown[3]):  # the dead letter and the delivery
        (sent,) = [a["request_headers"] for a in response.json()["attempts"]]
        assert {h["name"]: h["value"] for h in sent}["X-Shared-Pass"] == MASK


def test_dlq_show_masks_every_header_value(api: Api, monkeypatch: pytest.MonkeyPatch):
    _, delivery_id, _ = _subscribed(api)
    monkeypatch.setenv("HOOKLINE_DATABASE_URL", str(api.engine.url.render_as_string(False)))
    monkeypatch.setenv("HOOKLINE_BROKER_URL", "memory://")
    monkeypatch.setenv("HOOKLINE_ALLOW_MEMORY_BROKER", "true")

    for output in ("json", "table"):
        result = CliRunner().invoke(app, ["dlq", "show", delivery_id, "-o", output])
        assert result.exit_code == 0, result.output
        assert "X-Shared-Pass" in result.output
        for value in VALUES:
            assert value not in result.output


def test_header_values_are_sealed_at_rest_and_opened_for_sending(api: Api):
    sub_id, _, _ = _subscribed(api)
    patched = api.client.patch(
        f"/v1/subscriptions/{sub_id}",
        json={"headers": {**HEADERS, "X-Other": "second-value"}},
        headers=api.key(api_tenant(api, sub_id), "subscriptions:write"),
    )
    assert patched.status_code == 200, patched.text

    with api.engine.connect() as connection:
        stored = connection.execute(
            text("SELECT headers FROM subscriptions WHERE id = :id"), {"id": sub_id}
        ).scalar_one()
    for value in (*VALUES, "second-value"):
        assert value not in str(stored)
    cache = SubscriptionCache(api.sessionmaker, SecretBox(DEV_SECRET_KEY), refresh_s=60)
    endpoint = cache.get(sub_id)
    assert endpoint is not None
    assert endpoint.headers == {**HEADERS, "X-Other": "second-value"}


def api_tenant(api: Api, sub_id: str) -> str:
    with api.sessionmaker() as session:
        return session.get_one(Subscription, sub_id).tenant_id


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/m.db"
        return
    with temporary_database() as url:
        yield url


def test_the_migration_seals_stored_values_and_its_downgrade_opens_them(empty_url: str):
    key = "Vd2Uo0tq4sRCfN3m9gYqj1XbZyW8eKc5LhPaTnBvEiG"
    box = SecretBox(key)
    migrate.upgrade(empty_url, "0007")
    engine = make_engine(empty_url)
    sessions = make_sessionmaker(engine)
    try:
        with sessions.begin() as session:
            session.execute(
                text("INSERT INTO tenants (id, name, created_at) VALUES ('ten_a', 'a', :now)"),
                {"now": utcnow()},
            )
            # The table as revision 0007 has it (today's model has columns added since).
            at_0007 = Table("subscriptions", MetaData(), autoload_with=session.connection())
            session.execute(
                insert(at_0007).values(
                    id="sub_1", tenant_id="ten_a", url="http://x.test/", event_types=["*"],
                    operations=[], secret_enc=box.seal("whsec_x"), headers=dict(HEADERS),
                    metadata={}, status="active", dedupe_key="d", created_at=utcnow(),
                    updated_at=utcnow(), consecutive_dead=0,
                )
            )  # fmt: skip

        migrate.upgrade(empty_url, secret_key=key)
        with sessions() as session:
            sealed = session.scalars(select(Subscription.headers)).one()
        migrate.downgrade(empty_url, "0007", secret_key=key)
        with sessions() as session:
            opened = session.scalars(select(Subscription.headers)).one()
    finally:
        engine.dispose()

    assert set(sealed) == set(HEADERS)
    assert {k: box.open(v) for k, v in sealed.items()} == HEADERS
    assert opened == HEADERS
