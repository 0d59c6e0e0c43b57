"""`/v1/event-types` and `/v1/tenants/{id}/event-types`: the catalogue's CRUD, its bounds
and its permissions, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from common.db.models import AuditEntry
from tests.api.catalogue.costly import ANY_JSON, BINARY, anyof_chain
from tests.api.support import Api, assert_error

ORDER_SCHEMA = {
    "type": "object",
    "required": ["order", "total"],
    "properties": {
        "order": {"type": "integer", "minimum": 0},
        "total": {"type": "number"},
        "items": {"type": "array", "items": {"type": "object", "required": ["sku"]}},
    },
}
ORDER = {
    "name": "order.created",
    "description": "An order was placed.",
    "group": "orders",
    "data_schema": ORDER_SCHEMA,
    "examples": [{"order": 1, "total": 9.5}],
}


def test_a_tenant_catalogues_an_event_type_and_reads_changes_and_deletes_it(api: Api) -> None:
    _, auth = api.tenant()

    created = api.client.post("/v1/event-types", json=ORDER, headers=auth)
    again = api.client.post("/v1/event-types", json=ORDER, headers=auth)
    read = api.client.get("/v1/event-types/order.created", headers=auth)
    changed = api.client.patch(
        "/v1/event-types/order.created", json={"deprecated": True, "group": None}, headers=auth
    )
    deleted = api.client.delete("/v1/event-types/order.created", headers=auth)
    gone = api.client.get("/v1/event-types/order.created", headers=auth)

    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "order.created" and body["version"] == 1
    assert body["data_schema"] == ORDER_SCHEMA and body["examples"] == ORDER["examples"]
    assert_error(again, 409, "conflict")
    assert read.json() == body
    assert changed.json()["deprecated"] is True and changed.json()["group"] is None
    assert changed.json()["version"] == 2 and changed.json()["description"] == ORDER["description"]
    assert deleted.status_code == 204
    assert_error(gone, 404, "not_found")
    with api.sessionmaker() as session:
        actions = session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert [a for a in actions if a.startswith("event_type.")] == [
        "event_type.created", "event_type.updated", "event_type.deleted",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "strin"}, "data_schema.type"),
        ({"properties": {"a": {"minimum": "zero"}}}, "data_schema.properties.a.minimum"),
        ({"$ref": "https://example.com/schema.json"}, "only references inside the schema"),
        ({"type": "string", "pattern": "(?=a)b"}, "data_schema"),
        ({"x": "y" * 70_000}, "larger than 65536 bytes"),
    ],
    ids=["unknown type", "wrong keyword value", "remote ref", "look-around", "too large"],
)
def test_a_schema_that_is_not_an_acceptable_json_schema_is_refused_saying_where(
    api: Api, schema: dict[str, object], words: str
) -> None:
    _, auth = api.tenant()

    response = api.client.post(
        "/v1/event-types", json={"name": "order.created", "data_schema": schema}, headers=auth
    )

    assert words in assert_error(response, 422, "invalid_schema")
    assert api.client.get("/v1/event-types", headers=auth).json()["data"] == []


def test_a_schema_nested_too_deeply_is_refused(api: Api) -> None:
    _, auth = api.tenant()
    schema: dict[str, object] = {"type": "object"}
    for _ in range(20):  # 41 levels: past the schema's 32, within any body's 64
        schema = {"type": "object", "properties": {"a": schema}}

    response = api.client.post(
        "/v1/event-types", json={"name": "deep.one", "data_schema": schema}, headers=auth
    )

    assert "nested deeper than 32" in assert_error(response, 422, "invalid_schema")


TWO_WAYS_BACK = {  # each level of `a` tries both branches again: 2^64 paths
    "$defs": {"d": {"anyOf": [
        {"type": "object", "minProperties": 1, "properties": {"a": {"$ref": "#/$defs/d"}}},
        {"type": "object", "properties": {"a": {"$ref": "#/$defs/d"}}},
    ]}},
    "$ref": "#/$defs/d",
}  # fmt: skip


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        (anyof_chain(17), "more than 10000 subschemas once every $ref is expanded"),
        (TWO_WAYS_BACK, "more than 10000 subschemas once every $ref is expanded"),
        ({"$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"},
         "a $ref cycle never goes into the data"),
    ],
    ids=["anyOf chain", "recursion with two ways back", "cycle in place"],
)  # fmt: skip
def test_a_small_schema_whose_references_multiply_is_refused_on_create_and_on_change(
    api: Api, schema: dict[str, object], words: str
) -> None:
    _, auth = api.tenant()
    api.client.post("/v1/event-types", json={"name": "order.paid"}, headers=auth)

    created = api.client.post(
        "/v1/event-types", json={"name": "order.created", "data_schema": schema}, headers=auth
    )
    changed = api.client.patch(
        "/v1/event-types/order.paid", json={"data_schema": schema}, headers=auth
    )

    assert words in assert_error(created, 422, "invalid_schema")
    assert words in assert_error(changed, 422, "invalid_schema")
    names = [
        entry["name"] for entry in api.client.get("/v1/event-types", headers=auth).json()["data"]
    ]
    assert names == ["order.paid"]
    assert api.client.get("/v1/event-types/order.paid", headers=auth).json()["version"] == 1


def large_schema() -> dict[str, object]:
    """What a big real payload's schema looks like: 300 fields of an order in 10 nested
    sections, shared money and address definitions used all over, and a recursive category
    tree (one way back: unrolled to 64 levels of data, about 130 subschemas). About 700 in
    all, 14 KB."""
    money = {"type": "object", "required": ["amount", "currency"], "properties": {
        "amount": {"type": "integer", "minimum": 0},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
    }}  # fmt: skip
    address = {"type": "object", "properties": {
        name: {"type": "string", "maxLength": 200}
        for name in ("line1", "line2", "city", "region", "postcode", "country")
    }}  # fmt: skip
    category = {"type": "object", "properties": {
        "name": {"type": "string"},
        "children": {"type": "array", "items": {"$ref": "#/$defs/category"}},
    }}  # fmt: skip
    kinds: list[dict[str, object]] = [
        {"type": "string", "maxLength": 100}, {"type": "integer"}, {"type": "boolean"},
        {"$ref": "#/$defs/money"}, {"type": ["string", "null"], "format": "date-time"},
        {"enum": ["new", "paid", "shipped"]},
    ]  # fmt: skip
    sections = {
        f"section_{s}": {"type": "object", "properties": {
            f"field_{f}": kinds[(s + f) % len(kinds)] for f in range(30)
        } | {"address": {"$ref": "#/$defs/address"}}}
        for s in range(10)
    }  # fmt: skip
    return {
        "type": "object",
        "required": ["section_0"],
        "$defs": {"money": money, "address": address, "category": category},
        "properties": sections | {
            "lines": {"type": "array", "items": {"type": "object", "properties": {
                "sku": {"type": "string"}, "price": {"$ref": "#/$defs/money"},
                "tax": {"anyOf": [{"$ref": "#/$defs/money"}, {"type": "null"}]},
            }}},
            "category": {"$ref": "#/$defs/category"},
        },
    }  # fmt: skip


@pytest.mark.parametrize("schema", [BINARY, ANY_JSON], ids=["binary tree", "any JSON value"])
def test_a_recursion_into_different_children_is_accepted(
    api: Api, schema: dict[str, object]
) -> None:
    """Its references meet once per level along any one path into the data, so validating
    stays linear in the data: refusing it would refuse ordinary trees and free-form JSON."""
    _, auth = api.tenant()
    created = api.client.post(
        "/v1/event-types", json={"name": "tree.changed", "data_schema": schema}, headers=auth
    )
    assert created.status_code == 201, created.text


def test_a_large_schema_that_shares_definitions_and_recurses_once_is_accepted(api: Api) -> None:
    _, auth = api.tenant()
    schema = large_schema()
    example = {
        "section_0": {"field_3": {"amount": 1, "currency": "EUR"}, "address": {"city": "Oslo"}},
        "category": {"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]},
    }

    response = api.client.post(
        "/v1/event-types",
        json={"name": "order.created", "data_schema": schema, "examples": [example]},
        headers=auth,
    )

    assert response.status_code == 201, response.text
    assert response.json()["data_schema"] == schema


def test_examples_are_checked_against_the_schema_on_create_and_on_change(api: Api) -> None:
    _, auth = api.tenant()
    bad = {**ORDER, "examples": [{"order": 1, "total": 2}, {"order": "one", "total": 2}]}

    refused = api.client.post("/v1/event-types", json=bad, headers=auth)
    api.client.post("/v1/event-types", json=ORDER, headers=auth)
    stricter = {**ORDER_SCHEMA, "required": ["order", "total", "currency"]}
    breaks_examples = api.client.patch(
        "/v1/event-types/order.created", json={"data_schema": stricter}, headers=auth
    )
    too_many = api.client.patch(
        "/v1/event-types/order.created", json={"examples": [{"order": 1}] * 11}, headers=auth
    )

    assert "examples.1: data.order" in assert_error(refused, 422, "invalid_example")
    assert "examples.0: data" in assert_error(breaks_examples, 422, "invalid_example")
    assert_error(too_many, 422)
    assert api.client.get("/v1/event-types/order.created", headers=auth).json()["version"] == 1


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Order created"},
        {"name": "x" * 201},
        {"name": "a.b", "description": "d" * 2001},
        {"name": "a.b", "group": "g" * 101},
        {"name": "a.b", "color": "red"},
    ],
    ids=["name grammar", "long name", "long description", "long group", "unknown field"],
)
def test_names_descriptions_and_groups_are_bounded(api: Api, body: dict[str, object]) -> None:
    _, auth = api.tenant()

    assert_error(api.client.post("/v1/event-types", json=body, headers=auth), 422)


def test_the_catalogue_lists_a_page_at_a_time_with_group_deprecated_and_prefix_filters(
    api: Api,
) -> None:
    _, auth = api.tenant()
    for name, group, deprecated in [
        ("order.created", "orders", False), ("order.paid", "orders", True),
        ("order_x.made", "other", False), ("Order.shouted", "other", False),
        ("user.created", "users", False),
    ]:  # fmt: skip
        body = {"name": name, "group": group, "deprecated": deprecated}
        assert api.client.post("/v1/event-types", json=body, headers=auth).status_code == 201

    def names(**params: object) -> list[str]:
        response = api.client.get("/v1/event-types", params=params, headers=auth)
        assert response.status_code == 200, response.text
        return [entry["name"] for entry in response.json()["data"]]

    seen, cursor = [], None
    while True:
        page = api.client.get(
            "/v1/event-types", params={"limit": 2, **({"cursor": cursor} if cursor else {})},
            headers=auth,
        ).json()  # fmt: skip
        seen += [entry["name"] for entry in page["data"]]
        if (cursor := page["next_cursor"]) is None:
            break

    assert len(seen) == 5 and len(set(seen)) == 5
    assert names(group="orders") == ["order.created", "order.paid"]
    assert names(deprecated=True) == ["order.paid"]
    assert names(deprecated=False, group="orders") == ["order.created"]
    # A prefix is literal: `_` is no wildcard, and case counts (SQLite's LIKE ignores it).
    assert names(name_prefix="order.") == ["order.created", "order.paid"]
    assert names(name_prefix="order_") == ["order_x.made"]
    assert names(name_prefix="Order") == ["Order.shouted"]


def test_a_tenant_never_sees_or_changes_another_tenants_event_types(api: Api) -> None:
    _, mine = api.tenant("a")
    _, theirs = api.tenant("b")
    api.client.post("/v1/event-types", json=ORDER, headers=mine)

    assert api.client.get("/v1/event-types", headers=theirs).json()["data"] == []
    assert_error(api.client.get("/v1/event-types/order.created", headers=theirs), 404)
    assert_error(api.client.patch("/v1/event-types/order.created", json={}, headers=theirs), 404)
    assert_error(api.client.delete("/v1/event-types/order.created", headers=theirs), 404)
    # The same name in another tenant's catalogue is no conflict.
    assert api.client.post("/v1/event-types", json=ORDER, headers=theirs).status_code == 201


def test_reading_needs_event_types_read_and_changing_event_types_write(api: Api) -> None:
    tenant_id, auth = api.tenant()
    api.client.post("/v1/event-types", json=ORDER, headers=auth)
    reader = api.key(tenant_id, "event_types:read")
    other = api.key(tenant_id, "subscriptions:read", "deliveries:read")

    assert api.client.get("/v1/event-types", headers=reader).status_code == 200
    assert api.client.get("/v1/event-types/order.created", headers=reader).status_code == 200
    for response in [
        api.client.post("/v1/event-types", json={"name": "a.b"}, headers=reader),
        api.client.patch("/v1/event-types/order.created", json={}, headers=reader),
        api.client.delete("/v1/event-types/order.created", headers=reader),
        api.client.get("/v1/event-types", headers=other),
    ]:
        assert "event_types:" in assert_error(response, 403, "forbidden")
    assert_error(api.client.get("/v1/event-types"), 401)


def test_the_operator_manages_any_tenants_catalogue_with_the_admin_token(api: Api) -> None:
    tenant_id, auth = api.tenant()
    base = f"/v1/tenants/{tenant_id}/event-types"

    created = api.client.post(base, json=ORDER, headers=api.admin)
    listed = api.client.get(base, headers=api.admin)
    changed = api.client.patch(
        f"{base}/order.created", json={"description": "Placed."}, headers=api.admin
    )

    assert created.status_code == 201 and created.json()["tenant_id"] == tenant_id
    assert [entry["name"] for entry in listed.json()["data"]] == ["order.created"]
    assert changed.json()["description"] == "Placed."
    assert api.client.get("/v1/event-types/order.created", headers=auth).json()["version"] == 2
    assert api.client.delete(f"{base}/order.created", headers=api.admin).status_code == 204
    assert_error(api.client.get(base, headers=auth), 401)  # a tenant key is not the admin
    assert_error(api.client.get("/v1/tenants/ten_nobody/event-types", headers=api.admin), 404)
    assert_error(api.client.post("/v1/tenants/ten_nobody/event-types", json=ORDER,
                                 headers=api.admin), 404)  # fmt: skip
