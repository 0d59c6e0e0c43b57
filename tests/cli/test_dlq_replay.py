"""`hookline dlq`, `hookline replay` and `hookline gc` as operators type them (SQLite, and the
in-memory broker for the replays the CLI runs in its own process)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from common.db import migrate
from common.db.models import AuditEntry, Delivery, PoisonMessage, PortalLink, ReplayJob
from common.db.session import make_engine, make_sessionmaker
from common.db.statuses import DeliveryStatus
from common.wire import utcnow, webhook_id_for
from dispatcher.http import MASK
from hookline.cli import app
from tests import builders
from tests.dead_letters import dead_letter

runner = CliRunner()


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    url = f"sqlite:///{tmp_path}/ops.db"
    monkeypatch.setenv("HOOKLINE_DATABASE_URL", url)
    monkeypatch.setenv("HOOKLINE_BROKER_URL", "memory://")
    monkeypatch.setenv("HOOKLINE_ALLOW_MEMORY_BROKER", "true")  # a test, not an operator
    migrate.upgrade(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    with sessions() as session, session.begin():
        tenant = builders.tenant(session).id
        a, _ = builders.subscription(session, tenant, "http://127.0.0.1:9/a")
        b, _ = builders.subscription(session, tenant, "http://127.0.0.1:9/b")
        dead_a = [dead_letter(session, tenant, a.id).id for _ in range(3)]
        dead_b = [dead_letter(session, tenant, b.id, reason="endpoint_disabled").id]
        session.add(
            PoisonMessage(
                id="psn_1",
                source_queue="hookline.events",
                routing_key="",
                reason="undecodable",
                error="Event: bad",
                body="{not json",
                encoding="utf-8",
                headers={},
                received_at=utcnow(),
            )
        )
    yield {
        "sessions": sessions,
        "tenant": tenant,
        "a": a.id,
        "b": b.id,
        "dead_a": dead_a,
        "dead_b": dead_b,
    }
    engine.dispose()


def invoke(*args: str, input: str | None = None) -> Any:
    result = runner.invoke(app, list(args), input=input)
    return result


def statuses(world: dict[str, Any]) -> dict[str, str]:
    with world["sessions"]() as session:
        return dict(session.execute(select(Delivery.id, Delivery.status)).tuples().all())


def test_dlq_list_prints_json_for_scripts_and_filters(world: dict[str, Any]) -> None:
    result = invoke("dlq", "list", "--subscription", world["a"], "-o", "json")
    assert result.exit_code == 0, result.output
    assert {row["id"] for row in json.loads(result.stdout)["data"]} == set(world["dead_a"])


def test_dlq_list_pages_with_the_cursor(world: dict[str, Any]) -> None:
    first = json.loads(invoke("dlq", "list", "--limit", "3", "-o", "json").stdout)
    second = json.loads(
        invoke("dlq", "list", "--limit", "3", "--cursor", first["next_cursor"], "-o", "json").stdout
    )
    seen = [r["id"] for r in first["data"] + second["data"]]
    assert sorted(seen) == sorted(world["dead_a"] + world["dead_b"])
    assert second["next_cursor"] is None


def test_dlq_list_summary_groups_by_reason(world: dict[str, Any]) -> None:
    result = invoke("dlq", "list", "--summary", "-o", "json")
    assert json.loads(result.stdout)["by_reason"] == {"max_attempts": 3, "endpoint_disabled": 1}
    table = invoke("dlq", "list", "--summary")
    assert table.exit_code == 0 and "max_attempts" in table.output


def test_dlq_list_reason_poison_shows_raw_bodies(world: dict[str, Any]) -> None:
    result = invoke("dlq", "list", "--reason", "poison", "-o", "json")
    (row,) = json.loads(result.stdout)["data"]
    assert (row["id"], row["body"], row["error"]) == ("psn_1", "{not json", "Event: bad")


def test_dlq_show_prints_the_attempts_and_headers(world: dict[str, Any]) -> None:
    dead = world["dead_a"][0]
    with world["sessions"]() as session, session.begin():
        builders.attempt(session, dead, 1, static={"X-Receiver-Key": "rk-secret-1"})
        builders.attempt(session, dead, 2, sent=False)
    result = invoke("dlq", "show", dead, "-o", "json")
    shown = json.loads(result.stdout)
    # The API's shape (`DeadLetterDetail`), whichever backend answered.
    assert shown["reason"] and shown["headers"]["webhook-id"] == shown["webhook_id"]
    assert shown["webhook_id"] == webhook_id_for(shown["tenant_id"], shown["event_id"])
    assert shown["died_at"].endswith("Z")
    assert all(a["created_at"].endswith("Z") for a in shown["attempts"])
    first, second = shown["attempts"]
    sent = {h["name"]: h["value"] for h in first["request_headers"]}
    assert (sent["X-Receiver-Key"], sent["webhook-signature"]) == (MASK, f"v1,{MASK}")
    assert second["request_headers"] is None
    table = invoke("dlq", "show", dead)
    assert table.exit_code == 0, table.output
    assert "headers sent by attempt 1" in table.output and "X-Receiver-Key" in table.output
    assert "headers sent by attempt 2: none recorded" in table.output
    assert "rk-secret-1" not in table.output + result.output
    missing = invoke("dlq", "show", "dlv_nope")
    assert missing.exit_code == 1
    assert "hookline: not_found: dead letter not found" in missing.output


def test_replay_dry_run_changes_nothing(world: dict[str, Any]) -> None:
    before = statuses(world)
    result = invoke("replay", "start", "--subscription", world["a"], "--dry-run", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total"] == 3
    assert statuses(world) == before
    with world["sessions"]() as session:
        assert session.scalars(select(ReplayJob)).all() == []


def test_replay_without_a_filter_refuses_unless_all(world: dict[str, Any]) -> None:
    result = invoke("replay", "start", "--yes")
    assert result.exit_code == 2 and "--all" in result.output


def test_replay_asks_before_it_sends(world: dict[str, Any]) -> None:
    result = invoke("replay", "start", "--subscription", world["a"], input="n\n")
    assert result.exit_code == 1
    assert set(statuses(world).values()) == {DeliveryStatus.DEAD}


def test_replay_start_runs_the_job_and_status_reports_it(world: dict[str, Any]) -> None:
    result = invoke("replay", "start", "--subscription", world["a"], "--yes", "--rate", "unlimited")
    assert result.exit_code == 0, result.output
    now = statuses(world)
    assert {now[i] for i in world["dead_a"]} == {DeliveryStatus.PENDING}
    assert {now[i] for i in world["dead_b"]} == {DeliveryStatus.DEAD}
    with world["sessions"]() as session:
        job = session.scalars(select(ReplayJob)).one()
        actors = set(session.scalars(select(AuditEntry.actor)))
    assert (job.state, job.done) == ("completed", 3)
    assert all(actor.startswith("cli:") for actor in actors)
    status = json.loads(invoke("replay", "status", job.id, "-o", "json").stdout)
    assert (status["state"], status["todo"], status["done"]) == ("completed", 0, 3)


def test_replay_takes_ids_from_a_file(world: dict[str, Any], tmp_path: Path) -> None:
    chosen = tmp_path / "ids.txt"
    chosen.write_text(world["dead_a"][0] + "\n" + world["dead_b"][0] + "\n")
    result = invoke("replay", "start", "--ids-from", str(chosen), "--yes", "--rate", "100/s")
    assert result.exit_code == 0, result.output
    now = statuses(world)
    assert {i for i, s in now.items() if s == DeliveryStatus.PENDING} == {
        world["dead_a"][0],
        world["dead_b"][0],
    }


def test_dlq_purge_needs_a_filter_and_confirmation(world: dict[str, Any]) -> None:
    assert invoke("dlq", "purge", "--yes").exit_code == 2
    assert invoke("dlq", "purge", "--reason", "endpoint_disabled", input="n\n").exit_code == 1
    result = invoke("dlq", "purge", "--reason", "endpoint_disabled", "--yes")
    assert result.exit_code == 0 and "purged 1" in result.output
    assert statuses(world)[world["dead_b"][0]] == "cancelled"
    result = invoke("dlq", "purge", "--reason", "poison", "--all", "--yes")
    assert "purged 1 poison" in result.output


def test_gc_reports_what_it_removed(world: dict[str, Any]) -> None:
    with world["sessions"]() as session, session.begin():
        for n, age in enumerate((timedelta(days=2), timedelta(hours=1), -timedelta(hours=1))):
            session.add(PortalLink(id=f"pl_{n}", tenant_id=world["tenant"], token_hash=f"h{n}",
                                   scope="read", subscription_ids=[], created_by="admin",
                                   expires_at=utcnow() - age))  # fmt: skip
    result = invoke("gc", "--older-than", "30d")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["deliveries"] == 0  # everything here is young or dead
    assert json.loads(result.stdout)["portal_links"] == 1  # expired more than a day ago
    with world["sessions"]() as session:
        assert sorted(session.scalars(select(PortalLink.id))) == ["pl_1", "pl_2"]


def test_gc_keeps_the_audit_log_unless_told_how_long(world: dict[str, Any]) -> None:
    with world["sessions"]() as session, session.begin():
        for n, age in enumerate((timedelta(days=400), timedelta(days=10))):
            session.add(AuditEntry(at=utcnow() - age, actor="admin", tenant_id=world["tenant"],
                                   action=f"old.{n}", resource_type="tenant", resource_id=None,
                                   details={}))  # fmt: skip

    def actions() -> list[str]:
        with world["sessions"]() as session:
            query = select(AuditEntry.action).where(AuditEntry.action.like("old.%"))
            return sorted(session.scalars(query))

    kept = invoke("gc", "--older-than", "30d")
    assert json.loads(kept.stdout)["audit_entries"] == 0 and actions() == ["old.0", "old.1"]
    assert invoke("gc", "--audit-older-than", "a year").exit_code == 2
    trimmed = invoke("gc", "--older-than", "30d", "--audit-older-than", "365d")
    assert trimmed.exit_code == 0, trimmed.output
    assert json.loads(trimmed.stdout)["audit_entries"] == 1 and actions() == ["old.1"]


# A receiver's answer that would drive the operator's terminal: a hyperlink (OSC 8), red
# text, a carriage return that overwrites the line, and Rich markup; and how it must show.
HOSTILE = (
    "ok\x1b]8;;http://127.0.0.1:9/x\x1b\\click\x1b[31m\r[link=http://127.0.0.1:9/y]here[/link]"
)
SHOWN = (
    r"ok\x1b]8;;http://127.0.0.1:9/x\x1b\click\x1b[31m\x0d[link=http://127.0.0.1:9/y]here[/link]"
)


def columns(output: str) -> set[str]:
    """Each table column's text, its folded lines joined again (Rich folds long cells)."""
    found: dict[tuple[int, int], list[str]] = {}
    table = 0
    for line in output.splitlines():
        if line.startswith("┏"):
            table += 1
        if line.startswith("│"):
            for n, cell in enumerate(line.split("│")[1:-1]):
                found.setdefault((table, n), []).append(cell.strip())
    return {"".join(parts) for parts in found.values()}


def test_what_receivers_and_producers_wrote_reaches_the_terminal_inert(
    world: dict[str, Any],
) -> None:
    """A response body and a poisoned message are shown, never run: control characters as
    their escapes, and Rich markup as the text it is; `-o json` keeps the value itself."""
    dead = world["dead_a"][0]
    with world["sessions"]() as session, session.begin():
        builders.attempt(session, dead, 1).response_body = HOSTILE
        session.get(PoisonMessage, "psn_1").body = HOSTILE
    shown = invoke("dlq", "show", dead).output
    listed = invoke("dlq", "list", "--reason", "poison").output
    for output in (shown, listed):
        assert "\x1b" not in output and "\r" not in output
        assert SHOWN in columns(output)
    as_json = json.loads(invoke("dlq", "list", "--reason", "poison", "-o", "json").stdout)
    assert as_json["data"][0]["body"] == HOSTILE
