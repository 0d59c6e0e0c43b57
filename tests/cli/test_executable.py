"""The installed `hookline` executable, run as an operator runs it (a process of its own,
configured by its environment only), against an API served by uvicorn on 127.0.0.1 on
PostgreSQL: the remote mode end to end, with nothing of the test's process shared.

The other remote tests drive the CLI in-process through Typer's runner; this one pins what
the runner cannot show: the console script's entry point, the environment it reads, its
stdout, stderr and exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from common.db.session import make_engine, make_sessionmaker
from common.settings import Settings
from dispatcher.http import MASK
from tests import builders
from tests.api.support import ADMIN_TOKEN
from tests.dead_letters import dead_letter
from tests.served import served_api

pytestmark = pytest.mark.postgres
HOOKLINE = Path(sys.executable).with_name("hookline")  # the console script pip installed
RECEIVER_KEY = "receiver-issued-key-5d1e"


@pytest.fixture
def served(database_url: str) -> Iterator[tuple[str, Settings]]:
    settings = Settings(database_url=database_url, broker_url="memory://", admin_token=ADMIN_TOKEN)
    with served_api(settings) as (host, port):
        yield f"http://{host}:{port}", settings


def hookline(api_url: str, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`hookline ARGS` in a process whose only Hookline settings are the API's address and
    a token: no database, no broker (the remote mode)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    env.update(HOOKLINE_API_URL=api_url, HOOKLINE_API_TOKEN=token, COLUMNS="200")
    return subprocess.run(
        [str(HOOKLINE), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_the_executable_shows_a_dead_letter_through_the_api(
    served: tuple[str, Settings],
) -> None:
    api_url, settings = served
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    tenant = requests.post(
        f"{api_url}/v1/tenants", json={"name": "acme"}, headers=admin, timeout=10
    )
    assert tenant.status_code == 201, tenant.text
    tenant_id, key = tenant.json()["id"], tenant.json()["api_key"]
    engine = make_engine(settings.database_url)  # rows as a dispatcher left them
    try:
        with make_sessionmaker(engine).begin() as session:
            sub, _ = builders.subscription(
                session, tenant_id, "http://127.0.0.1:9/hooks", headers={"X-Key": RECEIVER_KEY}
            )
            dead = dead_letter(session, tenant_id, sub.id)
            builders.attempt(session, dead.id, 1, static={"X-Key": RECEIVER_KEY})
            builders.attempt(session, dead.id, 2, sent=False)
    finally:
        engine.dispose()

    as_json = hookline(api_url, key, "dlq", "show", dead.id, "-o", "json")
    as_table = hookline(api_url, key, "dlq", "show", dead.id)
    missing = hookline(api_url, key, "dlq", "show", "dlv_nope")
    refused = hookline(api_url, "hl_not-a-key", "dlq", "show", dead.id)

    assert as_json.returncode == 0, as_json.stderr
    shown = json.loads(as_json.stdout)
    from_api = requests.get(
        f"{api_url}/v1/dead-letters/{dead.id}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert shown == from_api.json()  # the API's body, as the executable printed it
    first, second = shown["attempts"]
    sent = {h["name"]: h["value"] for h in first["request_headers"]}
    assert (sent["X-Key"], sent["webhook-id"]) == (MASK, dead.webhook_id)
    assert second["request_headers"] is None
    assert as_table.returncode == 0, as_table.stderr
    assert "headers sent by attempt 1" in as_table.stdout and "X-Key" in as_table.stdout
    assert RECEIVER_KEY not in as_json.stdout + as_table.stdout
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr.strip() == "hookline: not_found: dead letter not found"
    assert refused.returncode != 0 and refused.stdout == ""
    assert refused.stderr.startswith("hookline: unauthorized:"), refused.stderr
