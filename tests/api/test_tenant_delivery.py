"""`GET/PUT /v1/tenants/{id}/delivery`: the operator sets a tenant's delivery share, the
router's loader picks it up, and the spill applies it."""

from __future__ import annotations

from sqlalchemy import select

from common.db.models import AuditEntry
from common.transport import topology as tp
from common.transport.spill import Spill
from router.loader import IndexLoader
from tests.api.support import Api, assert_error


def test_a_tenant_delivery_share_is_set_audited_and_cleared(api: Api) -> None:
    tenant_id, _ = api.tenant()
    url = f"/v1/tenants/{tenant_id}/delivery"
    default = api.client.get(url, headers=api.admin).json()
    assert default == {"tenant_id": tenant_id, "delivery_share_per_s": None,
                       "effective_share_per_s": 100}  # fmt: skip

    changed = api.client.put(url, json={"delivery_share_per_s": 5}, headers=api.admin)

    assert changed.status_code == 200, changed.text
    assert changed.json()["effective_share_per_s"] == 5
    assert api.client.get(url, headers=api.admin).json()["delivery_share_per_s"] == 5
    with api.sessionmaker() as session:
        [entry] = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "tenant.delivery_updated")
        ).all()
    assert entry.details == {"delivery_share_per_s": 5, "before": None}

    cleared = api.client.put(url, json={"delivery_share_per_s": None}, headers=api.admin)
    assert cleared.json()["effective_share_per_s"] == 100


def test_the_router_spills_by_the_tenants_own_share(api: Api) -> None:
    tenant_id, _ = api.tenant()
    api.client.put(
        f"/v1/tenants/{tenant_id}/delivery", json={"delivery_share_per_s": 2}, headers=api.admin
    )
    loader = IndexLoader(api.sessionmaker, refresh_s=0.0)
    loader.current(force=True)
    spill = Spill(8, 100, loader.shares)

    shards = [spill.headers(tenant_id)[tp.H_SHARD] for _ in range(4)]

    assert shards.count(tp.OVERFLOW_SHARD) == 2  # the default 100 would spill none


def test_the_delivery_routes_are_the_operators_and_check_their_input(api: Api) -> None:
    tenant_id, key = api.tenant()
    url = f"/v1/tenants/{tenant_id}/delivery"
    assert api.client.put(url, json={"delivery_share_per_s": 5}, headers=key).status_code in (
        401, 403,
    )  # fmt: skip
    assert_error(api.client.put(url, json={"delivery_share_per_s": -1}, headers=api.admin), 422)
    assert_error(api.client.put(url, json={"share": 1}, headers=api.admin), 422)
    missing = api.client.put(
        "/v1/tenants/ten_nope/delivery", json={"delivery_share_per_s": 1}, headers=api.admin
    )
    assert_error(missing, 404)
