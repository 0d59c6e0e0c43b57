"""The operations the remote CLI reached last (issue 18.1): purging poison messages, re-
submitting one with a corrected body, and resuming a replay job in the API process. Who
may do each (the admin token; a tenant's key, for its own tenant only, and never for a
message without a tenant), what each refuses in words, and the audit log."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from common.db.models import AuditEntry, Delivery, PoisonMessage, ReplayJob
from common.db.statuses import DeliveryStatus, ReplayJobStatus
from common.transport import Message, poison_copy
from common.transport import topology as tp
from common.wire import utcnow
from dispatcher.deadletters import DeadFilter
from dispatcher.replay import create_job
from hookline.api.limits import MAX_BODY_BYTES
from tests import builders
from tests.api.support import Api, assert_error
from tests.dead_letters import dead_letter, published_copies
from tests.queues import messages_waiting

OCTETS = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def world(ops_api: Api) -> dict[str, Any]:
    """Two tenants, a poison message of each and one without a tenant, a dead letter pair
    of each tenant, and a replay job of each that nobody runs (stopped)."""
    a, a_auth = ops_api.tenant("acme")
    b, b_auth = ops_api.tenant("stranger")
    with ops_api.sessionmaker() as session, session.begin():
        for poison_id, tenant, queue in (
            ("psn_a", a, tp.EVENTS), ("psn_b", b, tp.EVENTS), ("psn_none", None, tp.DELIVERIES),
        ):  # fmt: skip
            session.add(
                PoisonMessage(id=poison_id, tenant_id=tenant, source_queue=queue,
                              reason="undecodable", error="Event: bad", body="{not json",
                              encoding="utf-8", received_at=utcnow())
            )  # fmt: skip
        jobs, dead = {}, {}
        for tenant in (a, b):
            sub, _ = builders.subscription(session, tenant, f"http://127.0.0.1:9/{tenant}")
            dead[tenant] = {dead_letter(session, tenant, sub.id).id for _ in range(2)}
            job, _ = create_job(session, DeadFilter(tenant=tenant), actor="test", everything=True)
            jobs[tenant] = job.id
    return {"a": a, "b": b, "a_auth": a_auth, "b_auth": b_auth, "jobs": jobs, "dead": dead}


def poison_ids(api: Api) -> set[str]:
    with api.sessionmaker() as session:
        return set(session.scalars(select(PoisonMessage.id)))


def audits(api: Api, action: str) -> list[AuditEntry]:
    with api.sessionmaker() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def waiting(api: Api, queue: str) -> list[Message]:
    return messages_waiting(api.transport, queue)


def finish_runs(api: Api) -> None:
    for thread in getattr(api.app.state, "replay_threads", {}).values():
        thread.join(10)
        assert not thread.is_alive()


def job(api: Api, job_id: str) -> ReplayJob:
    with api.sessionmaker() as session:
        row = session.get(ReplayJob, job_id)
    assert row is not None
    return row


# Poison: purge


def test_a_tenant_key_purges_its_own_poison_only_and_never_one_without_a_tenant(
    ops_api: Api, world: dict[str, Any]
) -> None:
    purge = "/v1/dead-letters/poison/purge"
    other = ops_api.client.post(purge, json={"tenant": world["b"]}, headers=world["a_auth"])
    assert "own tenant" in assert_error(other, 403, "forbidden")

    # Its own key reaches its tenant alone: the tenant names nothing, as for the admin.
    unnamed = ops_api.client.post(purge, json={"dry_run": True}, headers=world["a_auth"])
    assert_error(unnamed, 409, "purge_refused")
    dry = ops_api.client.post(purge, json={"dry_run": True, "all": True}, headers=world["a_auth"])
    assert dry.json() == {"matched": 1, "purged": 0, "dry_run": True}
    assert poison_ids(ops_api) == {"psn_a", "psn_b", "psn_none"}
    done = ops_api.client.post(purge, json={"all": True}, headers=world["a_auth"])
    assert done.status_code == 200, done.text
    assert done.json() == {"matched": 1, "purged": 1, "dry_run": False}
    assert poison_ids(ops_api) == {"psn_b", "psn_none"}
    (entry,) = audits(ops_api, "dlq.purge")
    assert (entry.tenant_id, entry.resource_type) == (world["a"], "poison_messages")
    assert entry.actor.startswith("key_") and entry.details["purged"] == 1


def test_the_admin_token_purges_poison_by_filter_and_everything_only_when_told(
    ops_api: Api, world: dict[str, Any]
) -> None:
    purge = "/v1/dead-letters/poison/purge"
    refused = ops_api.client.post(purge, json={}, headers=ops_api.admin)
    assert assert_error(refused, 409, "purge_refused") == (
        'no filter given: name what to purge, or set "all": true'
    )
    by_queue = ops_api.client.post(
        purge, json={"source_queue": tp.DELIVERIES}, headers=ops_api.admin
    )
    assert by_queue.json()["purged"] == 1 and poison_ids(ops_api) == {"psn_a", "psn_b"}
    bad = ops_api.client.post(purge, json={"since": "soon", "all": True}, headers=ops_api.admin)
    assert assert_error(bad, 422, "validation_error").startswith("body.since: ")
    everything = ops_api.client.post(purge, json={"all": True}, headers=ops_api.admin)
    assert everything.json()["purged"] == 2 and poison_ids(ops_api) == set()
    assert [e.actor for e in audits(ops_api, "dlq.purge")] == ["admin", "admin"]


def test_a_poison_purge_first_drains_what_waits_in_the_poison_queue(ops_api: Api) -> None:
    raw = Message(tp.DELIVERIES, b'{"tenant": "ten_q", "oops": 1}', "delivery", {}, False, None)
    ops_api.transport.publish([poison_copy(raw, "undecodable", "DeliveryMessage: bad")])

    done = ops_api.client.post(
        "/v1/dead-letters/poison/purge", json={"tenant": "ten_q"}, headers=ops_api.admin
    )
    assert done.json() == {"matched": 1, "purged": 1, "dry_run": False}
    assert ops_api.transport.queue_depth(tp.POISON) == 0 and poison_ids(ops_api) == set()


# Poison: re-submit, with a corrected body


def test_the_admin_token_resubmits_a_corrected_body_byte_for_byte_and_it_is_audited(
    ops_api: Api, world: dict[str, Any]
) -> None:
    fixed = b'{"fixed": true, "raw": "\xff"}'  # not even UTF-8: sent as it is
    sent = ops_api.client.post(
        "/v1/dead-letters/poison/psn_a/resubmit", content=fixed, headers={**ops_api.admin, **OCTETS}
    )
    assert sent.status_code == 200, sent.text
    assert sent.json()["body"] == "{not json" and sent.json()["resubmitted_at"] is not None
    (message,) = waiting(ops_api, tp.EVENTS)
    assert message.body == fixed and message.headers["x-hookline-resubmitted"] == "psn_a"
    (entry,) = audits(ops_api, "poison.resubmit")
    assert (entry.actor, entry.resource_id, entry.tenant_id) == ("admin", "psn_a", world["a"])
    assert entry.details == {"source_queue": tp.EVENTS, "corrected": True}


def test_an_api_key_resubmits_its_own_poison_as_it_arrived_but_never_a_corrected_body(
    ops_api: Api, world: dict[str, Any]
) -> None:
    key = world["a_auth"]
    corrected = ops_api.client.post(
        "/v1/dead-letters/poison/psn_a/resubmit", content=b"{}", headers={**key, **OCTETS}
    )
    assert "admin token" in assert_error(corrected, 403, "forbidden")
    assert waiting(ops_api, tp.EVENTS) == [] and audits(ops_api, "poison.resubmit") == []
    for stranger in ("psn_b", "psn_none"):  # another tenant's, and one without a tenant
        hidden = ops_api.client.post(f"/v1/dead-letters/poison/{stranger}/resubmit", headers=key)
        assert assert_error(hidden, 404, "not_found") == "poison message not found"

    as_it_was = ops_api.client.post("/v1/dead-letters/poison/psn_a/resubmit", headers=key)
    assert as_it_was.status_code == 200, as_it_was.text
    (message,) = waiting(ops_api, tp.EVENTS)
    assert message.body == b"{not json"
    (entry,) = audits(ops_api, "poison.resubmit")
    assert entry.actor.startswith("key_") and entry.details["corrected"] is False


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"x" * (MAX_BODY_BYTES + 1), OCTETS, 413, "payload_too_large"),
        (b'{"type": "order.created"}', {"Content-Type": "application/json"}, 415, None),
    ],
    ids=["over-an-events-size", "not-octets"],
)
def test_a_corrected_body_is_refused_when_too_large_or_not_sent_as_octets(
    ops_api: Api, world: dict[str, Any], body: bytes, headers: dict[str, str], status: int,
    code: str | None,
) -> None:  # fmt: skip
    refused = ops_api.client.post(
        "/v1/dead-letters/poison/psn_a/resubmit", content=body, headers={**ops_api.admin, **headers}
    )
    assert_error(refused, status, code or "unsupported_media_type")
    assert waiting(ops_api, tp.EVENTS) == []
    with ops_api.sessionmaker() as session:
        row = session.get(PoisonMessage, "psn_a")
    assert row is not None and row.resubmitted_at is None


def test_a_corrected_body_of_exactly_an_events_size_is_sent(
    ops_api: Api, world: dict[str, Any]
) -> None:
    body = b"y" * MAX_BODY_BYTES
    sent = ops_api.client.post(
        "/v1/dead-letters/poison/psn_none/resubmit",
        content=body,
        headers={**ops_api.admin, **OCTETS},
    )
    assert sent.status_code == 200, sent.text
    (message,) = waiting(ops_api, tp.DELIVERIES)
    assert message.body == body


# Replay jobs: resume


def test_resume_runs_a_stopped_job_in_the_api_process_and_audits_who_resumed_it(
    ops_api: Api, world: dict[str, Any]
) -> None:
    job_id = world["jobs"][world["a"]]

    resumed = ops_api.client.post(f"/v1/replays/{job_id}/resume", headers=ops_api.admin)
    assert resumed.status_code == 202, resumed.text
    assert (resumed.json()["id"], resumed.json()["state"]) == (job_id, "running")
    finish_runs(ops_api)

    done = job(ops_api, job_id)
    assert (done.state, done.done, done.runner) == (ReplayJobStatus.COMPLETED, 2, None)
    assert {c.delivery_id for c in published_copies(ops_api.transport)} == world["dead"][world["a"]]
    (entry,) = audits(ops_api, "replay.resume")
    assert (entry.actor, entry.resource_id, entry.details["was"]) == ("admin", job_id, "running")


def test_a_tenant_key_resumes_its_own_job_and_never_another_tenants(
    ops_api: Api, world: dict[str, Any]
) -> None:
    theirs = ops_api.client.post(
        f"/v1/replays/{world['jobs'][world['b']]}/resume", headers=world["a_auth"]
    )
    assert assert_error(theirs, 404, "not_found") == "replay job not found"
    mine = world["jobs"][world["a"]]
    resumed = ops_api.client.post(f"/v1/replays/{mine}/resume", headers=world["a_auth"])
    assert resumed.status_code == 202, resumed.text
    finish_runs(ops_api)

    assert job(ops_api, world["jobs"][world["b"]]).state == ReplayJobStatus.RUNNING  # untouched
    assert {c.delivery_id for c in published_copies(ops_api.transport)} == world["dead"][world["a"]]
    (entry,) = audits(ops_api, "replay.resume")
    assert entry.actor.startswith("key_") and entry.tenant_id == world["a"]


def test_a_job_another_runner_holds_is_refused_as_busy_and_never_runs_twice(
    ops_api: Api, world: dict[str, Any]
) -> None:
    job_id = world["jobs"][world["a"]]
    with ops_api.sessionmaker() as session, session.begin():
        row = session.get(ReplayJob, job_id)
        assert row is not None
        row.runner, row.heartbeat_at = "another-host:4242:run1", utcnow()  # a live lease

    busy = ops_api.client.post(f"/v1/replays/{job_id}/resume", headers=ops_api.admin)
    assert assert_error(busy, 409, "job_busy") == (
        f"replay job {job_id} is being run by another process"
    )
    finish_runs(ops_api)
    assert published_copies(ops_api.transport) == []
    assert job(ops_api, job_id).runner == "another-host:4242:run1"
    assert audits(ops_api, "replay.resume") == []


def test_a_finished_job_is_not_resumed(ops_api: Api, world: dict[str, Any]) -> None:
    job_id = world["jobs"][world["a"]]
    cancelled = ops_api.client.post(f"/v1/replays/{job_id}/cancel", headers=ops_api.admin)
    assert cancelled.json()["state"] == "cancelled"

    again = ops_api.client.post(f"/v1/replays/{job_id}/resume", headers=ops_api.admin)
    assert assert_error(again, 409, "job_busy") == f"replay job {job_id} is cancelled"
    assert published_copies(ops_api.transport) == []
    assert job(ops_api, job_id).state == ReplayJobStatus.CANCELLED
    assert audits(ops_api, "replay.resume") == []


def test_each_resume_by_a_tenant_key_counts_as_a_replay_start(
    ops_api: Api, world: dict[str, Any]
) -> None:
    limits = ops_api.client.patch(
        f"/v1/tenants/{world['a']}/limits", json={"replay_starts_per_min": 1},
        headers=ops_api.admin,
    )  # fmt: skip
    assert limits.status_code == 200, limits.text
    mine = world["jobs"][world["a"]]
    first = ops_api.client.post(f"/v1/replays/{mine}/resume", headers=world["a_auth"])
    second = ops_api.client.post(f"/v1/replays/{mine}/resume", headers=world["a_auth"])
    finish_runs(ops_api)
    assert first.status_code == 202, first.text
    assert_error(second, 429, "rate_limited")
    assert "retry-after" in second.headers
    # The admin token is not limited: it is told the job is over (or busy), not 429.
    admin = ops_api.client.post(f"/v1/replays/{mine}/resume", headers=ops_api.admin)
    assert_error(admin, 409, "job_busy")


@pytest.mark.parametrize(
    ("method", "path", "extra"),
    [
        ("post", "/v1/dead-letters/poison/purge", {"json": {"all": True}}),
        ("post", "/v1/dead-letters/poison/psn_a/resubmit", {}),
        ("post", "/v1/replays/{job}/resume", {}),
    ],
)
def test_a_read_only_key_may_do_none_of_them(
    ops_api: Api, world: dict[str, Any], method: str, path: str, extra: dict[str, Any]
) -> None:
    reader = ops_api.key(world["a"], "deliveries:read")
    url = path.format(job=world["jobs"][world["a"]])
    refused = getattr(ops_api.client, method)(url, headers=reader, **extra)
    assert "deliveries:replay" in assert_error(refused, 403, "forbidden")
    assert poison_ids(ops_api) == {"psn_a", "psn_b", "psn_none"}
    assert job(ops_api, world["jobs"][world["a"]]).runner is None
    with ops_api.sessionmaker() as session:
        assert set(session.scalars(select(Delivery.status))) == {DeliveryStatus.DEAD}
