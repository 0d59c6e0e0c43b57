"""Ingest against the catalogue: the tenant's `schema_validation` mode on every ingest path
(the single and batch routes, and `FastIngest` in front of them), the metric and the
cache of compiled validators, within and across API processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from common.db.models import EventTypeEntry
from hookline.api import fast_ingest
from hookline.api.schemas import EventIn
from tests.api.catalogue.costly import anyof_chain
from tests.api.support import Api, assert_error

SCHEMA = {
    "type": "object",
    "required": ["order"],
    "properties": {"order": {"type": "integer"}},
}
GOOD = {"type": "order.created", "data": {"order": 1}}
BAD = {"type": "order.created", "data": {"order": "private-7f3a"}}
UNCHECKED = {"type": "user.created", "data": {"anything": True}}  # not catalogued
PATHS = ["single-fast", "single-route", "batch-fast", "batch-route"]


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many events `FastIngest` itself published, request by request."""
    calls: list[int] = []
    accept = fast_ingest._accept

    async def counted(parsed: Any, tenant: str, services: Any, trace: Any) -> bytes:
        calls.append(1 if isinstance(parsed, EventIn) else len(parsed.events))
        return await accept(parsed, tenant, services, trace)

    monkeypatch.setattr(fast_ingest, "_accept", counted)
    return calls


def catalogued(api: Api, mode: str, schema: dict[str, Any] = SCHEMA) -> dict[str, str]:
    tenant_id, auth = api.tenant()
    body = {"name": "order.created", "data_schema": schema}
    assert api.client.post("/v1/event-types", json=body, headers=auth).status_code == 201
    response = api.client.patch(
        f"/v1/tenants/{tenant_id}/settings", json={"schema_validation": mode}, headers=api.admin
    )
    assert response.status_code == 200, response.text
    return auth


def send(api: Api, auth: dict[str, str], path: str, *events: dict[str, Any]) -> Any:
    """Publish `events` one way; returns (status, per-event results)."""
    headers = dict(auth)
    if path.endswith("route"):  # an Idempotency-Key takes a request past the fast path
        headers["Idempotency-Key"] = f"k-{time.monotonic_ns()}"
    if path.startswith("batch"):
        response = api.client.post(
            "/v1/events/batch", json={"events": list(events)}, headers=headers
        )
        assert response.status_code == 202, response.text
        return [(r["status"], r["error"]) for r in response.json()["results"]]
    results = []
    for event in events:
        response = api.client.post("/v1/events", json=event, headers=headers | (
            {"Idempotency-Key": f"k-{time.monotonic_ns()}"} if path.endswith("route") else {}
        ))  # fmt: skip
        error = None if response.status_code == 202 else response.json()["error"]
        results.append(("accepted" if response.status_code == 202 else response.status_code, error))
    return results


def violations(api: Api, mode: str) -> float:
    value = api.metrics.registry.get_sample_value(
        "hookline_schema_violations_total", {"mode": mode}
    )
    return value or 0.0


@pytest.mark.parametrize("path", PATHS)
def test_mode_off_accepts_data_that_breaks_the_schema_and_counts_nothing(api, path, fast_calls):
    auth = catalogued(api, "off")

    results = send(api, auth, path, GOOD, BAD)

    assert [status for status, _ in results] == ["accepted", "accepted"]
    assert len(api.published()) == 2
    assert violations(api, "warn") == violations(api, "reject") == 0
    assert (sum(fast_calls) == 2) == path.endswith("fast")


@pytest.mark.parametrize("path", PATHS)
def test_mode_warn_accepts_the_event_and_counts_it(api, path, fast_calls, caplog):
    auth = catalogued(api, "warn")

    results = send(api, auth, path, GOOD, BAD, UNCHECKED)

    assert [status for status, _ in results] == ["accepted"] * 3
    assert len(api.published()) == 3
    assert violations(api, "warn") == 1 and violations(api, "reject") == 0
    assert (sum(fast_calls) == 3) == path.endswith("fast")
    logged = [r for r in caplog.records if "breaks the catalogued schema" in r.getMessage()]
    assert logged and "private-7f3a" not in str(logged[0].__dict__)  # ids only, never the data


@pytest.mark.parametrize("path", PATHS)
def test_mode_reject_refuses_the_event_with_the_schema_error(api, path, fast_calls):
    auth = catalogued(api, "reject")

    results = send(api, auth, path, GOOD, BAD, UNCHECKED)

    (good, _), (bad, error), (unchecked, _) = results
    assert good == unchecked == "accepted"
    assert bad == (422 if path.startswith("single") else "rejected")
    assert error["code"] == "schema_violation"
    assert error["message"].startswith("data.order: ") and "integer" in error["message"]
    assert len(api.published()) == 2
    assert violations(api, "reject") == 1 and violations(api, "warn") == 0


@pytest.mark.parametrize("path", PATHS)
def test_a_schema_too_costly_for_the_event_loop_gives_the_same_answers(api, path, fast_calls):
    wide = {f"note_{i}": {"type": "string"} for i in range(120)}  # 122 subschemas: a thread
    properties = {"order": {"type": "integer"}, **wide}
    auth = catalogued(api, "reject", {**SCHEMA, "properties": properties})

    results = send(api, auth, path, GOOD, BAD, UNCHECKED)

    assert [status for status, _ in results] == [
        "accepted",
        422 if path.startswith("single") else "rejected",
        "accepted",
    ]
    assert results[1][1]["message"].startswith("data.order: ")
    assert len(api.published()) == 2 and violations(api, "reject") == 1


def test_a_schema_error_message_is_bounded(api):
    auth = catalogued(api, "reject", {"type": "object", "properties": {"a": {"type": "string"}}})

    response = api.client.post(
        "/v1/events", json={"type": "order.created", "data": {"a": ["x" * 5000]}}, headers=auth
    )

    assert len(assert_error(response, 422, "schema_violation")) <= 320


def test_a_schema_stored_before_the_expansion_bound_goes_unchecked_rather_than_stall(api, caplog):
    auth = catalogued(api, "reject")
    with api.sessionmaker.begin() as session:  # as a row saved before the bound would be
        entry = session.scalars(select(EventTypeEntry)).one()
        entry.data_schema, entry.version = anyof_chain(14), entry.version + 1

    response = api.client.post("/v1/events", json=BAD, headers=auth)

    assert response.status_code == 202, response.text
    assert len(api.published()) == 1 and violations(api, "reject") == 0
    logged = [r for r in caplog.records if "past today's bounds" in r.getMessage()]
    assert logged and "more than 10000 subschemas" in logged[0].__dict__["reason"]


def test_a_change_through_this_process_applies_to_the_next_request(api):
    tenant_id, auth = api.tenant()
    api.client.post(
        "/v1/event-types", json={"name": "order.created", "data_schema": SCHEMA}, headers=auth
    )
    assert api.client.post("/v1/events", json=BAD, headers=auth).status_code == 202  # off
    api.client.patch(
        f"/v1/tenants/{tenant_id}/settings", json={"schema_validation": "reject"},
        headers=api.admin,
    )  # fmt: skip
    assert_error(api.client.post("/v1/events", json=BAD, headers=auth), 422, "schema_violation")

    loose = {"type": "object", "properties": {"order": {"type": ["integer", "string"]}}}
    api.client.patch("/v1/event-types/order.created", json={"data_schema": loose}, headers=auth)
    assert api.client.post("/v1/events", json=BAD, headers=auth).status_code == 202
    api.client.delete("/v1/event-types/order.created", headers=auth)
    odd = {"type": "order.created", "data": {"order": []}}
    assert api.client.post("/v1/events", json=odd, headers=auth).status_code == 202


def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_another_api_process_follows_a_change_within_its_refresh(make_api):
    here = make_api(catalogue_refresh_s=0.3)
    there = make_api(catalogue_refresh_s=0.3)
    tenant_id, auth = here.tenant()
    here.client.post(
        "/v1/event-types", json={"name": "order.created", "data_schema": SCHEMA}, headers=auth
    )
    assert there.client.post("/v1/events", json=BAD, headers=auth).status_code == 202
    changed_at = time.monotonic()

    here.client.patch(
        f"/v1/tenants/{tenant_id}/settings", json={"schema_validation": "reject"},
        headers=here.admin,
    )  # fmt: skip

    assert eventually(
        lambda: there.client.post("/v1/events", json=BAD, headers=auth).status_code == 422
    )
    assert time.monotonic() - changed_at < 2.0
    loose = {"type": "object", "properties": {"order": {"type": "string"}}}
    here.client.patch("/v1/event-types/order.created", json={"data_schema": loose}, headers=auth)
    assert eventually(
        lambda: there.client.post("/v1/events", json=BAD, headers=auth).status_code == 202
    )
    assert eventually(
        lambda: there.client.post("/v1/events", json=GOOD, headers=auth).status_code == 422
    )
