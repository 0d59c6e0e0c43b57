"""The API and the CLI speak one vocabulary (issue 18.6): ages and RFC 3339 times in the
filters, `Z` in answers, errors in words (no regexes, no CLI flags), the handshake's
reason in the 201, and a tenant's own audit log."""

from __future__ import annotations

from datetime import timedelta

import pytest

from common.db.models import AuditEntry
from common.instants import format_instant, parse_instant
from common.wire import utcnow
from tests import builders
from tests.api.support import Api, assert_error
from tests.dead_letters import dead_letter


@pytest.mark.parametrize("since", ["1h", "30m", "7d", "90s", "2026-05-01T12:00:00Z"])
def test_the_filters_take_an_age_or_a_date_time_with_offset(api: Api, since: str) -> None:
    for path in ("/v1/dead-letters", "/v1/audit-log", "/v1/deliveries"):
        headers = api.admin if path != "/v1/deliveries" else api.tenant(since)[1]
        response = api.client.get(path, params={"since": since, "until": "0s"}, headers=headers)
        assert response.status_code == 200, (path, response.text)


def test_an_age_means_now_minus_it(api: Api) -> None:
    tenant, _ = api.tenant()
    with api.sessionmaker() as session, session.begin():
        sub, _ = builders.subscription(session, tenant, "http://127.0.0.1:9/a")
        old = dead_letter(session, tenant, sub.id, died_at=utcnow() - timedelta(hours=3)).id
        new = dead_letter(session, tenant, sub.id, died_at=utcnow() - timedelta(minutes=5)).id
    found = api.client.get("/v1/dead-letters", params={"since": "1h"}, headers=api.admin)
    assert [row["id"] for row in found.json()["data"]] == [new]
    found = api.client.get("/v1/dead-letters", params={"until": "1h"}, headers=api.admin)
    assert [row["id"] for row in found.json()["data"]] == [old]


@pytest.mark.parametrize("since", ["1", "3600", "1y", "2026-05-01T12:00:00", "soon"])
def test_a_bare_number_a_naive_time_or_a_word_is_refused_in_words(api: Api, since: str) -> None:
    response = api.client.get("/v1/dead-letters", params={"since": since}, headers=api.admin)
    message = assert_error(response, 422, "validation_error")
    assert message.startswith("query.since: ")
    assert "offset" in message


def test_a_pattern_error_names_the_field_and_the_form_not_the_regex(api: Api) -> None:
    _, key = api.tenant()
    response = api.client.post(
        "/v1/events", json={"type": "order created!", "data": {}, "id": "a b"}, headers=key
    )
    message = assert_error(response, 422, "validation_error")
    assert "body.type: must be dotted words of letters" in message
    assert "body.id: must be letters, digits" in message
    assert "^" not in message and "[" not in message and "pattern" not in message


def test_a_batch_item_error_is_worded_the_same_way(api: Api) -> None:
    _, key = api.tenant()
    response = api.client.post(
        "/v1/events/batch", json={"events": [{"type": "a b", "data": {}}]}, headers=key
    )
    error = response.json()["results"][0]["error"]["message"]
    assert error.startswith("type: must be dotted words") and "^" not in error


def test_a_refused_replay_names_the_body_field_not_a_cli_flag(api: Api) -> None:
    response = api.client.post("/v1/replays", json={}, headers=api.admin)
    message = assert_error(response, 409, "replay_refused")
    assert '"all": true' in message and "--" not in message


def test_times_in_answers_end_in_z(api: Api) -> None:
    tenant, _ = api.tenant()
    shown = api.client.get(f"/v1/tenants/{tenant}", headers=api.admin).json()
    assert shown["created_at"].endswith("Z")
    assert format_instant(parse_instant(shown["created_at"])) == shown["created_at"]


def test_a_failed_handshake_says_why_in_the_201(api: Api) -> None:
    _, key = api.tenant()
    response = api.client.post(
        "/v1/subscriptions",
        json={"url": "http://127.0.0.1:9/hooks", "event_types": ["order.*"]},
        headers=key,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "pending_verification"
    assert body["verification"]["status"] == "failed"
    assert "did not answer" in body["verification"]["reason"]


def test_an_operator_registered_subscription_reports_no_handshake(api: Api) -> None:
    tenant, _ = api.tenant()
    response = api.client.post(
        f"/v1/tenants/{tenant}/subscriptions",
        json={"url": "http://127.0.0.1:9/hooks", "event_types": ["order.*"]},
        headers=api.admin,
    )
    assert response.json()["verification"] == {"status": "not_run", "reason": None}


def test_a_tenant_reads_its_own_audit_log_with_audit_read(api: Api) -> None:
    mine, _ = api.tenant("mine")
    theirs, _ = api.tenant("theirs")
    reader = api.key(mine, "audit:read")
    with api.sessionmaker() as session, session.begin():
        session.add(
            AuditEntry(at=utcnow(), actor="admin", tenant_id=theirs, action="tenant.secret",
                       resource_type="tenant", resource_id=theirs, details={})
        )  # fmt: skip
    found = api.client.get("/v1/audit", params={"since": "1h"}, headers=reader)
    assert found.status_code == 200, found.text
    rows = found.json()["data"]
    assert rows and {row["tenant_id"] for row in rows} == {mine}
    assert all(row["at"].endswith("Z") for row in rows)
    # The operator's route stays the operator's.
    assert_error(api.client.get("/v1/audit-log", headers=reader), 401)


def test_a_key_without_audit_read_is_refused_its_audit_log(api: Api) -> None:
    mine, _ = api.tenant()
    writer = api.key(mine, "events:write")
    message = assert_error(api.client.get("/v1/audit", headers=writer), 403, "forbidden")
    assert "audit:read" in message
