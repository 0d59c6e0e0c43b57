"""`hookline subscription ...` in the direct mode (SQLite; no API URL): the same answers as
through the API, which `tests/cli/test_remote.py` runs against a real stack."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from typer.testing import CliRunner

from common.db import migrate
from hookline.cli import app

runner = CliRunner()


@pytest.fixture
def direct(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/subs.db"
    for name, value in {
        "HOOKLINE_DATABASE_URL": url, "HOOKLINE_BROKER_URL": "memory://",
        "HOOKLINE_ALLOW_MEMORY_BROKER": "true", "HOOKLINE_ALLOW_PRIVATE_TARGETS": "true",
        "HOOKLINE_ALLOW_HTTP": "true", "HOOKLINE_SECRET_KEY": secrets.token_hex(32),
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HOOKLINE_API_URL", raising=False)
    migrate.upgrade(url)
    made = runner.invoke(app, ["tenant", "create", "acme"])
    assert made.exit_code == 0, made.output
    return made.stdout.split()[1]


def test_an_operator_manages_a_tenants_subscriptions_directly(direct: str) -> None:
    args = ["http://127.0.0.1:9/hooks", "--event-type", "order.*", "--tenant", direct]
    made = runner.invoke(app, ["subscription", "create", *args, "-o", "json"])
    assert made.exit_code == 0, made.output
    created = json.loads(made.stdout)
    assert created["secret"].startswith("whsec_") and created["created_at"].endswith("Z")
    assert created["verification"] == {"status": "not_run", "reason": None}
    sub = created["id"]
    listed = runner.invoke(app, ["subscription", "list", "--tenant", direct, "-o", "json"])
    assert [row["id"] for row in json.loads(listed.stdout)["data"]] == [sub]
    paused = runner.invoke(app, ["subscription", "pause", sub, "--tenant", direct])
    assert f"{sub}: paused" in paused.stdout
    resumed = runner.invoke(app, ["subscription", "resume", sub, "--tenant", direct])
    assert f"{sub}: active" in resumed.stdout
    assert runner.invoke(app, ["subscription", "delete", sub, "--tenant", direct]).exit_code == 0
    gone = runner.invoke(app, ["subscription", "delete", sub, "--tenant", direct])
    assert gone.exit_code == 1
    assert gone.output.strip() == "hookline: not_found: subscription not found"


def test_without_a_tenant_the_direct_mode_says_what_is_missing(direct: str) -> None:
    refused = runner.invoke(app, ["subscription", "list"])
    assert refused.exit_code == 2
    assert refused.output.strip() == (
        "hookline: validation_error: --tenant is required without HOOKLINE_API_URL"
    )


def test_an_operator_turns_trace_propagation_on_and_off(direct: str) -> None:
    args = ["http://127.0.0.1:9/hooks", "--event-type", "order.*", "--tenant", direct]
    made = runner.invoke(app, ["subscription", "create", *args, "--propagate-trace", "-o", "json"])
    assert made.exit_code == 0, made.output
    created = json.loads(made.stdout)
    assert created["propagate_trace"] is True
    sub = created["id"]

    off = runner.invoke(app, ["subscription", "update", sub, "--tenant", direct,
                              "--no-propagate-trace"])  # fmt: skip
    assert off.exit_code == 0, off.output
    assert off.stdout.strip() == f"{sub}: active, trace propagation off"
    listed = runner.invoke(app, ["subscription", "list", "--tenant", direct, "-o", "json"])
    assert [row["propagate_trace"] for row in json.loads(listed.stdout)["data"]] == [False]

    nothing = runner.invoke(app, ["subscription", "update", sub, "--tenant", direct])
    assert nothing.exit_code == 2
    assert "name something to change" in nothing.output
    missing = runner.invoke(app, ["subscription", "update", "sub_nope", "--tenant", direct,
                                  "--propagate-trace"])  # fmt: skip
    assert missing.output.strip() == "hookline: not_found: subscription not found"
