from router.index import SubscriptionIndex, Target


def target(sub_id: str, *types: str, tenant: str = "t1", ops: tuple[str, ...] = ()) -> Target:
    return Target(sub_id, tenant, tuple(types), frozenset(ops))


def ids(targets: list[Target]) -> set[str]:
    return {t.subscription_id for t in targets}


def test_exact_type_matches_only_that_type() -> None:
    index = SubscriptionIndex([target("s1", "order.created")])
    assert ids(index.match("t1", "order.created")) == {"s1"}
    assert index.match("t1", "order.updated") == []
    assert index.match("t1", "order") == []


def test_prefix_wildcard_matches_every_depth_below_the_prefix() -> None:
    index = SubscriptionIndex([target("s1", "order.*")])
    assert ids(index.match("t1", "order.created")) == {"s1"}
    assert ids(index.match("t1", "order.item.added")) == {"s1"}
    assert index.match("t1", "order") == []
    assert index.match("t1", "orders.created") == []


def test_star_matches_everything_of_its_tenant_only() -> None:
    index = SubscriptionIndex([target("s1", "*")])
    assert ids(index.match("t1", "anything.at.all")) == {"s1"}
    assert index.match("t2", "anything.at.all") == []


def test_tenants_never_see_each_others_subscriptions() -> None:
    index = SubscriptionIndex([target("s1", "order.created", tenant="t1")])
    assert index.match("t2", "order.created") == []


def test_operations_filter_and_empty_means_all() -> None:
    index = SubscriptionIndex(
        [target("sync-only", "content.*", ops=("sync",)), target("all-ops", "content.*")]
    )
    assert ids(index.match("t1", "content.updated", "sync")) == {"sync-only", "all-ops"}
    assert ids(index.match("t1", "content.updated", "delete")) == {"all-ops"}
    assert ids(index.match("t1", "content.updated", None)) == {"all-ops"}


def test_a_subscription_matching_through_several_patterns_is_returned_once() -> None:
    index = SubscriptionIndex([target("s1", "order.created", "order.*", "*")])
    assert [t.subscription_id for t in index.match("t1", "order.created")] == ["s1"]


def test_lookup_among_ten_thousand_subscriptions_finds_exactly_the_match() -> None:
    targets = [target(f"s{i}", f"type{i}.happened") for i in range(10_000)]
    index = SubscriptionIndex(targets)
    assert index.size == 10_000
    assert ids(index.match("t1", "type7321.happened")) == {"s7321"}
