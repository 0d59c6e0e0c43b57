"""`hookline tenant key create|list|revoke`: the admin routes' rules, from the shell."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from common.db.models import AuditEntry
from hookline.cli import app
from tests.api.support import Api, assert_error


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, database_url: str) -> CliRunner:
    monkeypatch.setenv("HOOKLINE_DATABASE_URL", database_url)
    return CliRunner()


def test_a_key_made_on_the_shell_works_on_the_api_until_revoked_there(cli, make_api):
    api: Api = make_api(client_address=("127.0.0.1", 40000))
    tenant_id, _ = api.tenant()

    made = cli.invoke(
        app, ["tenant", "key", "create", tenant_id, "--scope", "subscriptions:read",
              "--cidr", "127.0.0.0/8", "--name", "deploy"],
    )  # fmt: skip
    key = re.search(r"hl_[A-Za-z0-9_-]{32}", made.output)
    key_id = re.search(r"key_[0-9a-f]+", made.output)

    assert made.exit_code == 0, made.output
    assert key is not None and key_id is not None
    auth = {"Authorization": f"Bearer {key.group()}"}
    assert api.client.get("/v1/subscriptions", headers=auth).status_code == 200
    assert_error(api.client.get("/v1/deliveries", headers=auth), 403)
    listed = cli.invoke(app, ["tenant", "key", "list", tenant_id])
    assert key_id.group() in listed.output and "127.0.0.0/8" in listed.output
    assert key.group() not in listed.output

    revoked = cli.invoke(app, ["tenant", "key", "revoke", tenant_id, key_id.group()])

    assert revoked.exit_code == 0, revoked.output
    assert "revoked" in cli.invoke(app, ["tenant", "key", "list", tenant_id]).output
    with api.sessionmaker() as session:
        actions = session.scalars(select(AuditEntry.action).where(AuditEntry.actor == "cli"))
        assert list(actions) == ["api_key.created", "api_key.revoked"]


@pytest.mark.parametrize(
    "args", [["--scope", "events:delete"], ["--cidr", "10.0.0.0/99"]], ids=["scope", "cidr"]
)
def test_bad_key_options_are_refused_with_the_reason(cli, api: Api, args):
    tenant_id, _ = api.tenant()

    result = cli.invoke(app, ["tenant", "key", "create", tenant_id, *args])

    assert result.exit_code == 2
    assert "hl_" not in result.output


def test_revoking_an_unknown_key_fails(cli, api: Api):
    tenant_id, _ = api.tenant()

    result = cli.invoke(app, ["tenant", "key", "revoke", tenant_id, "key_nope"])

    assert result.exit_code == 1
