"""The operator commands that were direct-mode only, now through the API too (issue 18.1):
`replay start --resume`, `dlq purge --reason poison`, `dlq resubmit --body-file`. Each runs
against the deployment of `conftest.py` (API, router and dispatcher processes on
PostgreSQL and RabbitMQ, a receiver on 127.0.0.1) through `HOOKLINE_API_URL` and directly,
and answers the same in both modes."""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook

from common.db.models import AuditEntry, Delivery, ReplayJob
from common.db.session import make_engine, make_sessionmaker
from common.transport import Outgoing, open_transport
from common.transport import topology as tp
from common.wire import encode, utcnow, webhook_id_for
from dispatcher.deadletters import DeadFilter
from dispatcher.replay import create_job
from hookline.api.limits import MAX_BODY_BYTES
from tests import builders
from tests.cli.remote import Stack, dead_ids, deliveries_of, last_json, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]
CLI_ACTOR = f"cli:{getpass.getuser()}"[:64]


@pytest.fixture(scope="module")
def sessions(stack: Stack) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(stack.database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def audits(sessions: sessionmaker[Session], action: str, resource_id: str) -> list[AuditEntry]:
    with sessions() as session:
        query = select(AuditEntry).where(
            AuditEntry.action == action, AuditEntry.resource_id == resource_id
        )
        return list(session.scalars(query))


def died(stack: Stack, tenant: dict[str, str], event_type: str, event_id: str) -> str:
    """Publish an event the receiver refuses until it is dead: its delivery id."""
    stack.failing.add("/hooks")
    try:
        sent = stack.cli("publish", event_type, "--id", event_id, token=tenant["key"])
        assert sent.exit_code == 0, sent.output
        (dead,) = wait_until(lambda: dead_ids(stack, "--event-type", event_type), "dead letter")
    finally:
        stack.failing.discard("/hooks")
    return str(dead)


def stopped_job(sessions: sessionmaker[Session], delivery_id: str) -> str:
    """A replay job of one dead letter that nobody runs: what `hookline replay start`
    leaves after Ctrl-C (no runner), which no dispatcher takes over by itself."""
    with sessions() as session, session.begin():
        job, _ = create_job(session, DeadFilter(ids=(delivery_id,)), actor="operator")
        return job.id


def shown(job: dict[str, Any]) -> dict[str, Any]:
    """A job's JSON without what differs between two jobs (their ids)."""
    return {k: v for k, v in job.items() if k not in ("id", "filters")}


def test_replay_resume_through_the_api_and_directly_answers_the_same(
    stack: Stack, tenant: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    through_api = stopped_job(sessions, died(stack, tenant, "order.resume1", "resume-1"))
    directly = stopped_job(sessions, died(stack, tenant, "order.resume2", "resume-2"))

    remote = stack.cli("replay", "start", "--resume", through_api, "-o", "json")
    direct = stack.direct("replay", "start", "--resume", directly, "-o", "json")

    assert remote.exit_code == direct.exit_code == 0, (remote.output, direct.output)
    remote_job, direct_job = (
        json.loads(last_json(remote.stdout)),
        json.loads(last_json(direct.stdout)),
    )
    assert (remote_job["id"], direct_job["id"]) == (through_api, directly)
    assert shown(remote_job) == shown(direct_job)
    assert (remote_job["state"], remote_job["done"], remote_job["actor"]) == (
        "completed", 1, "operator"
    )  # fmt: skip
    # Each arrived once more (a replay keeps the webhook-id).
    first, second = (webhook_id_for(tenant["id"], f"resume-{n}") for n in (1, 2))
    wait_until(lambda: len(deliveries_of(stack, first)) == 4, "resume-1 replayed")
    wait_until(lambda: len(deliveries_of(stack, second)) == 4, "resume-2 replayed")
    # Who resumed it, in the audit log: the admin token remotely, the login name directly.
    (by_api,) = audits(sessions, "replay.resume", through_api)
    (by_cli,) = audits(sessions, "replay.resume", directly)
    assert (by_api.actor, by_cli.actor) == ("admin", CLI_ACTOR)


def test_a_resume_of_a_job_another_runner_holds_is_refused_alike_in_both_modes(
    stack: Stack, tenant: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    job_id = stopped_job(sessions, died(stack, tenant, "order.busy", "busy-1"))
    with sessions() as session, session.begin():
        job = session.get(ReplayJob, job_id)
        assert job is not None
        job.runner, job.heartbeat_at = f"{socket.gethostname()[:20]}-b:1:run", utcnow()

    remote = stack.cli("replay", "start", "--resume", job_id)
    direct = stack.direct("replay", "start", "--resume", job_id)

    assert remote.exit_code == direct.exit_code == 2
    assert (
        remote.output
        == direct.output
        == (f"hookline: job_busy: replay job {job_id} is being run by another process\n")
    )
    with sessions() as session:
        assert (
            session.scalars(
                select(Delivery.replay_count).where(Delivery.event_id == "busy-1")
            ).one()
            == 0
        )  # never claimed: the job did not run
    assert audits(sessions, "replay.resume", job_id) == []


def poisoned(stack: Stack, *bodies: bytes) -> list[dict[str, Any]]:
    """Publish undecodable events to `hookline.events`; once the router moved them to
    `hookline.poison`, their rows (listing poison drains the queue into the database)."""
    transport = open_transport(stack.broker_url)
    try:
        transport.publish([Outgoing(tp.EVENTS, "junk", body) for body in bodies])
    finally:
        transport.close()

    def listed() -> list[dict[str, Any]] | None:
        page = stack.cli("dlq", "list", "--reason", "poison", "-o", "json")
        assert page.exit_code == 0, page.output
        rows = [r for r in json.loads(page.stdout)["data"] if r["body"].encode() in bodies]
        return rows if len(rows) == len(bodies) else None

    return list(wait_until(listed, "the poison rows"))


def test_dlq_purge_poison_through_the_api_and_directly_answers_the_same(
    stack: Stack, sessions: sessionmaker[Session]
) -> None:
    rows = poisoned(stack, b'{"tenant": "ten_poison1", "no": "type"}',
                    b'{"tenant": "ten_poison2", "no": "type"}')  # fmt: skip
    assert {r["tenant_id"] for r in rows} == {"ten_poison1", "ten_poison2"}

    refused = stack.cli("dlq", "purge", "--reason", "poison", "--yes")
    refused_directly = stack.direct("dlq", "purge", "--reason", "poison", "--yes")
    assert refused.exit_code == refused_directly.exit_code == 2
    assert refused.output == (
        'hookline: purge_refused: no filter given: name what to purge, or set "all": true\n'
    )
    assert refused_directly.output == (
        "hookline: purge_refused: no filter given: name what to purge, or set --all\n"
    )
    dry = stack.cli("dlq", "purge", "--reason", "poison", "--tenant", "ten_poison1", "--dry-run")
    dry_directly = stack.direct(
        "dlq", "purge", "--reason", "poison", "--tenant", "ten_poison2", "--dry-run"
    )
    assert dry.exit_code == dry_directly.exit_code == 0
    assert dry.stdout == dry_directly.stdout == "1 poison messages match\n"

    remote = stack.cli("dlq", "purge", "--reason", "poison", "--tenant", "ten_poison1", "--yes")
    direct = stack.direct("dlq", "purge", "--reason", "poison", "--tenant", "ten_poison2", "--yes")

    assert remote.exit_code == direct.exit_code == 0, (remote.output, direct.output)
    assert remote.stdout == direct.stdout == "1 poison messages match\npurged 1 poison messages\n"
    left = json.loads(stack.cli("dlq", "list", "--reason", "poison", "-o", "json").stdout)
    assert not {r["id"] for r in left["data"]} & {r["id"] for r in rows}
    with sessions() as session:
        actors = session.scalars(
            select(AuditEntry.actor).where(
                AuditEntry.action == "dlq.purge",
                AuditEntry.tenant_id.in_(("ten_poison1", "ten_poison2")),
            )
        ).all()
    assert sorted(actors) == sorted(["admin", CLI_ACTOR])


def test_dlq_resubmit_with_a_body_file_through_the_api_and_directly_answers_the_same(
    stack: Stack, tenant: dict[str, str], sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    broken = [
        json.dumps({"tenant": tenant["id"], "id": f"fix-{mode}", "data": {}}).encode()
        for mode in ("remote", "direct")
    ]
    by_body = {r["body"].encode(): r["id"] for r in poisoned(stack, *broken)}
    through_api, directly = by_body[broken[0]], by_body[broken[1]]
    files = {}
    for mode in ("remote", "direct"):
        fixed = builders.event(tenant["id"], type="order.fixed", id=f"fix-{mode}")
        files[mode] = tmp_path / f"{mode}.json"
        files[mode].write_bytes(encode(fixed))

    # A tenant's key may re-submit its poison as it arrived, never with a corrected body.
    keyed = stack.cli("dlq", "resubmit", through_api, "--body-file", str(files["remote"]),
                      token=tenant["key"])  # fmt: skip
    assert keyed.exit_code == 2
    assert keyed.output.startswith("hookline: forbidden: a corrected message needs the admin")

    remote = stack.cli("dlq", "resubmit", through_api, "--body-file", str(files["remote"]))
    direct = stack.direct("dlq", "resubmit", directly, "--body-file", str(files["direct"]))

    assert remote.exit_code == direct.exit_code == 0, (remote.output, direct.output)
    assert remote.stdout.replace(through_api, "ID") == direct.stdout.replace(directly, "ID")
    assert remote.stdout == f"re-submitted {through_api} to {tp.EVENTS}\n"
    # The corrected events are routed and delivered, signed.
    remote_id, direct_id = (webhook_id_for(tenant["id"], f"fix-{m}") for m in ("remote", "direct"))
    arrived = [
        wait_until(lambda: deliveries_of(stack, remote_id), "fix-remote"),
        wait_until(lambda: deliveries_of(stack, direct_id), "fix-direct"),
    ]
    for (got,) in arrived:
        assert Webhook(tenant["secret"]).verify(got.body, got.headers)["type"] == "order.fixed"
    (by_api,) = audits(sessions, "poison.resubmit", through_api)
    (by_cli,) = audits(sessions, "poison.resubmit", directly)
    assert (by_api.actor, by_cli.actor) == ("admin", CLI_ACTOR)
    assert by_api.details == by_cli.details == {"source_queue": tp.EVENTS, "corrected": True}


def test_a_body_file_over_an_events_size_is_refused_alike_in_both_modes(
    stack: Stack, tmp_path: Path
) -> None:
    large = tmp_path / "large.json"
    large.write_bytes(b"x" * (MAX_BODY_BYTES + 1))

    remote = stack.cli("dlq", "resubmit", "psn_any", "--body-file", str(large))
    direct = stack.direct("dlq", "resubmit", "psn_any", "--body-file", str(large))

    assert remote.exit_code == direct.exit_code == 2
    assert (
        remote.output
        == direct.output
        == (
            f"hookline: payload_too_large: --body-file holds {MAX_BODY_BYTES + 1} bytes; a "
            f"message is at most {MAX_BODY_BYTES} bytes, an event's size\n"
        )
    )


def test_a_tenants_limits_are_set_and_shown_alike_in_both_modes(
    stack: Stack, sessions: sessionmaker[Session]
) -> None:
    """`hookline tenant limits`: the admin routes' `GET`/`PATCH /v1/tenants/{id}/limits`
    through the API, and the same service directly; both audited as the operator."""
    made = stack.cli("tenant", "create", "site-limits")
    tenant_id = made.stdout.split()[1]

    remote = stack.cli("tenant", "limits", tenant_id, "--set", "requests_per_s=250",
                       "--set", "max_concurrent_requests=3", "-o", "json")  # fmt: skip
    assert remote.exit_code == 0, remote.output
    shown = json.loads(remote.stdout)
    assert shown["overrides"]["requests_per_s"] == 250
    assert shown["effective"]["max_concurrent_requests"] == 3
    assert shown["defaults"]["max_concurrent_requests"] == 8
    assert json.loads(stack.direct("tenant", "limits", tenant_id, "-o", "json").stdout) == shown

    reset = stack.direct("tenant", "limits", tenant_id, "--set", "requests_per_s=default",
                         "-o", "json")  # fmt: skip
    assert reset.exit_code == 0, reset.output
    assert json.loads(reset.stdout)["overrides"]["requests_per_s"] is None
    assert json.loads(reset.stdout)["effective"]["requests_per_s"] == 100
    assert json.loads(stack.cli("tenant", "limits", tenant_id, "-o", "json").stdout) == (
        json.loads(reset.stdout)
    )
    table = stack.cli("tenant", "limits", tenant_id)
    assert table.exit_code == 0 and "max_concurrent_requests" in table.stdout

    refusals = [run("tenant", "limits", tenant_id, "--set", "burst=5")
                for run in (stack.cli, stack.direct)]  # fmt: skip
    assert [r.exit_code for r in refusals] == [2, 2]
    assert refusals[0].output == refusals[1].output
    assert refusals[0].output.startswith("hookline: validation_error: body.burst")
    unknown = [run("tenant", "limits", "ten_nobody") for run in (stack.cli, stack.direct)]
    assert [r.exit_code for r in unknown] == [1, 1]
    assert unknown[0].output == unknown[1].output
    assert "not_found" in unknown[0].output
    for value in ("lots", "nan", "inf"):
        malformed = stack.cli("tenant", "limits", tenant_id, "--set", f"requests_per_s={value}")
        assert malformed.exit_code == 2 and "not a number" in malformed.output

    changes = audits(sessions, "tenant.limits_changed", tenant_id)
    assert sorted(entry.actor for entry in changes) == ["admin", "cli"]  # as `tenant create`


def test_tenant_list_pages_alike_in_both_modes(stack: Stack) -> None:
    """`hookline tenant list`: `GET /v1/tenants` through the API, the same page directly."""
    made = [stack.cli("tenant", "create", f"site-list-{n}").stdout.split()[1] for n in range(3)]
    remote = json.loads(stack.cli("tenant", "list", "--limit", "500", "-o", "json").stdout)
    direct = json.loads(stack.direct("tenant", "list", "--limit", "500", "-o", "json").stdout)
    assert remote == direct
    listed = [t["id"] for t in remote["data"]]
    assert listed[-3:] == made and remote["next_cursor"] is None  # oldest first
    first = json.loads(stack.cli("tenant", "list", "--limit", "1", "-o", "json").stdout)
    cursor = first["next_cursor"]
    after = [
        json.loads(run("tenant", "list", "--limit", "1", "--cursor", cursor, "-o", "json").stdout)
        for run in (stack.cli, stack.direct)
    ]
    assert after[0] == after[1] and after[0]["data"][0]["id"] == listed[1]
    table = stack.cli("tenant", "list")
    assert table.exit_code == 0 and "site-list-0" in table.stdout
    bad = [run("tenant", "list", "--cursor", "nope") for run in (stack.cli, stack.direct)]
    assert [b.exit_code for b in bad] == [2, 2] and bad[0].output == bad[1].output
