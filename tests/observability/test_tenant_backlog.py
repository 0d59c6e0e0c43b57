"""The fairness gauges: top tenants by due backlog (by rank, never by id), the oldest due
delivery per shard, and every label present from the start."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from common import tenant_backlog
from common.db.models import Delivery
from common.transport import topology as tp
from common.wire import utcnow
from tests import builders


def test_top_tenants_and_shard_ages_come_from_the_due_deliveries(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        heavy = builders.tenant(session, name="heavy").id
        light = builders.tenant(session, name="light").id
        for tenant, count in ((heavy, 30), (light, 2)):
            sub, _ = builders.subscription(session, tenant, "https://example.com/h")
            for n in range(count):
                builders.delivery(session, builders.event(tenant, id=f"e{n}"), sub.id)
        # The light tenant's deliveries have waited ten minutes; the heavy one's are new.
        session.execute(
            update(Delivery).where(Delivery.tenant_id == light)
            .values(created_at=utcnow() - timedelta(minutes=10))
        )  # fmt: skip
    with sessions() as session:
        backlog = tenant_backlog.read(session, utcnow(), 8)

    assert backlog.tenants == 2
    assert [count for count, _ in backlog.top] == [30, 2]
    assert backlog.top[0][1] < 60 and 590 < backlog.top[1][1] < 700
    assert set(backlog.shard_age_s) == set(range(8))
    assert 590 < backlog.shard_age_s[tp.shard_of(light, 8)] < 700
    others = set(range(8)) - {tp.shard_of(light, 8), tp.shard_of(heavy, 8)}
    assert all(backlog.shard_age_s[shard] == 0 for shard in others)


def test_every_rank_and_shard_is_exported_even_when_nothing_waits() -> None:
    empty = tenant_backlog.TenantBacklog([], dict.fromkeys(range(3), 0.0), 0)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in tenant_backlog.families(empty)
        for sample in family.samples
    }
    ranks = [str(n) for n in range(1, tenant_backlog.TOP_TENANTS + 1)]
    for rank in ranks:
        assert samples[("hookline_tenant_backlog_top_deliveries", (("rank", rank),))] == 0
        assert samples[("hookline_tenant_backlog_top_age_seconds", (("rank", rank),))] == 0
    assert {labels for name, labels in samples if name == "hookline_shard_backlog_age_seconds"} == {
        (("shard", str(n)),) for n in range(3)
    }
    assert samples[("hookline_tenants_with_backlog", ())] == 0
