"""`POST /v1/dead-letters/purge` with a tenant's key: 409 `purge_refused` unless it names
what to purge or says `"all": true`, as with the admin token. A tenant's key reaches its
own tenant only, so its tenant is no filter: an empty body from it would cancel every dead
letter the tenant has."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select

from common.db.models import Delivery
from common.db.statuses import DeliveryStatus
from common.wire import utcnow
from tests import builders
from tests.api.support import Api, assert_error
from tests.dead_letters import dead_letter

PURGE = "/v1/dead-letters/purge"


def _dead_letters(api: Api, tenant_id: str, count: int) -> str:
    with api.sessionmaker() as session, session.begin():
        sub, _ = builders.subscription(session, tenant_id, f"http://127.0.0.1:9/{tenant_id}")
        for n in range(count):
            dead_letter(session, tenant_id, sub.id, died_at=utcnow() - timedelta(minutes=n + 1))
    return sub.id


def _dead(api: Api, tenant_id: str) -> int:
    with api.sessionmaker() as session:
        rows = session.scalars(
            select(Delivery.id).where(
                Delivery.tenant_id == tenant_id, Delivery.status == DeliveryStatus.DEAD
            )
        )
        return len(list(rows))


def test_a_tenant_key_must_name_what_it_purges_or_say_all(make_api: Callable[..., Api]) -> None:
    api = make_api()
    a_id, a_auth = api.tenant("a")
    b_id, _ = api.tenant("b")
    a_sub = _dead_letters(api, a_id, 3)
    _dead_letters(api, b_id, 2)

    for body in ({}, {"dry_run": False}, {"tenant": a_id}):
        refused = api.client.post(PURGE, json=body, headers=a_auth)
        message = assert_error(refused, 409, "purge_refused")
        assert message == 'no filter given: name what to purge, or set "all": true'
    assert (_dead(api, a_id), _dead(api, b_id)) == (3, 2)

    named = api.client.post(PURGE, json={"subscription_id": a_sub, "dry_run": True}, headers=a_auth)
    assert named.json() == {"matched": 3, "purged": 0, "dry_run": True}
    everything = api.client.post(PURGE, json={"all": True}, headers=a_auth)
    assert everything.json() == {"matched": 3, "purged": 3, "dry_run": False}
    assert (_dead(api, a_id), _dead(api, b_id)) == (0, 2)  # its own only


def test_the_admin_token_names_a_tenant_as_a_filter(make_api: Callable[..., Api]) -> None:
    api = make_api()
    a_id, _ = api.tenant("a")
    b_id, _ = api.tenant("b")
    _dead_letters(api, a_id, 2)
    _dead_letters(api, b_id, 1)

    assert_error(api.client.post(PURGE, json={}, headers=api.admin), 409, "purge_refused")
    one_tenant = api.client.post(PURGE, json={"tenant": a_id}, headers=api.admin)
    assert one_tenant.json() == {"matched": 2, "purged": 2, "dry_run": False}
    assert (_dead(api, a_id), _dead(api, b_id)) == (0, 1)
