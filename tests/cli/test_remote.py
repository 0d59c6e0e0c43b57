"""The operator commands against a remote deployment (issue 18.1): `hookline api`, `router`
and `dispatcher` as processes on PostgreSQL and RabbitMQ, a receiver on 127.0.0.1, and the
CLI reaching them only through `HOOKLINE_API_URL` with the admin token or a tenant's key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from typer.testing import CliRunner, Result

from hookline.cli import app
from hookline.receiver import Received, Receiver, Reply
from tests.integration.faultrig import engine_env
from tests.processes import Services, free_port
from tests.services import temporary_database, temporary_vhost

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]
ADMIN_TOKEN = "remote-cli-admin-token-7f3a9c2e"
WAIT_S = 60.0
runner = CliRunner()


@dataclass
class Stack:
    api_url: str
    direct_env: dict[str, str]
    receiver: Receiver
    failing: set[str]  # receiver paths answered 500

    def cli(self, *args: str, token: str = ADMIN_TOKEN) -> Result:
        env = {"HOOKLINE_API_URL": self.api_url, "HOOKLINE_API_TOKEN": token}
        return runner.invoke(app, list(args), env=env)

    def direct(self, *args: str) -> Result:
        return runner.invoke(app, list(args), env={**self.direct_env, "HOOKLINE_API_URL": ""})


def wait_until(check: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("remote-logs")
    with temporary_vhost() as broker_url, temporary_database() as database_url, Receiver() as rx:
        env = engine_env(
            broker_url, database_url,
            HOOKLINE_ADMIN_TOKEN=ADMIN_TOKEN, HOOKLINE_RETRY_SCHEDULE="200ms,200ms",
            HOOKLINE_LOG_FORMAT="console",
        )  # fmt: skip
        env.pop("HOOKLINE_API_URL", None)
        failing: set[str] = set()
        rx.respond = lambda got: Reply(500) if got.path in failing else Reply(200)
        services = Services(env, Path(logs))
        port = free_port()
        assert runner.invoke(app, ["migrate"], env=env).exit_code == 0
        services.start("api", "api", "--host", "127.0.0.1", "--port", str(port))
        services.start("router", "router")
        services.start("dispatcher", "dispatcher")
        api_url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return requests.get(f"{api_url}/readyz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        try:
            wait_until(ready, "the API")
            yield Stack(api_url, env, rx, failing)
        finally:
            services.stop()


def created(result: Result, label: str) -> str:
    assert result.exit_code == 0, result.output
    return next(
        line.split(": ")[1].split()[0] for line in result.stdout.splitlines()
        if line.startswith(label)
    )  # fmt: skip


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> dict[str, str]:
    """A tenant made through the CLI, its all-scopes key, and a subscription to the receiver."""
    made = stack.cli("tenant", "create", "site-a")
    tenant_id = made.stdout.split()[1]
    key = created(made, "api key")
    subscription = requests.post(
        f"{stack.api_url}/v1/tenants/{tenant_id}/subscriptions",
        json={"url": f"{stack.receiver.url}/hooks", "event_types": ["order.*"]},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    ).json()
    time.sleep(1.0)  # the router's subscription index refreshes every 0.5 s
    return {"id": tenant_id, "key": key, "subscription": subscription["id"]}


def deliveries_of(stack: Stack, webhook_id: str) -> list[Received]:
    return [r for r in stack.receiver.received if r.headers.get("webhook-id") == webhook_id]


def dead_ids(stack: Stack, *filters: str) -> list[str]:
    listed = stack.cli("dlq", "list", *filters, "-o", "json")
    assert listed.exit_code == 0, listed.output
    return [row["id"] for row in json.loads(listed.stdout)["data"]]


def test_publish_through_the_api_is_delivered(stack: Stack, tenant: dict[str, str]) -> None:
    published = stack.cli(
        "publish",
        "order.created",
        "--data",
        '{"n": "remote-1"}',
        "--id",
        "remote-1",
        token=tenant["key"],
    )
    assert published.exit_code == 0, published.output
    assert "remote-1" in published.stdout
    wait_until(lambda: [r for r in stack.receiver.received if b'"remote-1"' in r.body], "delivery")


def test_dlq_list_show_and_replay_through_the_api(stack: Stack, tenant: dict[str, str]) -> None:
    stack.failing.add("/hooks")
    sent = stack.cli("publish", "order.failed", "--id", "remote-dead", token=tenant["key"])
    assert sent.exit_code == 0, sent.output
    (dead,) = wait_until(lambda: dead_ids(stack, "--event-type", "order.failed"), "dead letter")

    # The same listing, byte for byte, through the API and straight from the database.
    remote = stack.cli("dlq", "list", "--event-type", "order.failed", "--since", "1h", "-o", "json")
    direct = stack.direct(
        "dlq", "list", "--event-type", "order.failed", "--since", "1h", "-o", "json"
    )
    assert remote.exit_code == direct.exit_code == 0, (remote.output, direct.output)
    assert remote.stdout == direct.stdout
    assert json.loads(remote.stdout)["data"][0]["died_at"].endswith("Z")

    shown = json.loads(stack.cli("dlq", "show", dead, "-o", "json").stdout)
    webhook_id = shown["headers"]["webhook-id"]
    assert len(shown["attempts"]) == 3 and len(deliveries_of(stack, webhook_id)) == 3

    stack.failing.discard("/hooks")
    replayed = stack.cli("replay", "start", "--event-type", "order.failed", "--yes", "-o", "json")
    assert replayed.exit_code == 0, replayed.output
    job = json.loads(_last_json(replayed.stdout))
    assert (job["state"], job["done"]) == ("completed", 1)
    # Received again, with the webhook-id it was first sent with.
    wait_until(lambda: len(deliveries_of(stack, webhook_id)) == 4, "the replayed delivery")
    status = stack.cli("replay", "status", job["id"], "-o", "json")
    assert json.loads(status.stdout)["state"] == "completed"


def _last_json(text: str) -> str:
    """The JSON object a command printed last (a progress bar may precede it)."""
    return text[text.rindex("\n{") + 1 :] if "\n{" in text else text[text.index("{") :]


def test_dlq_purge_through_the_api(stack: Stack, tenant: dict[str, str]) -> None:
    stack.failing.add("/hooks")
    try:
        stack.cli("publish", "order.purged", "--id", "remote-purge", token=tenant["key"])
        wait_until(lambda: dead_ids(stack, "--event-type", "order.purged"), "dead letter")
    finally:
        stack.failing.discard("/hooks")
    refused = stack.cli("dlq", "purge", "--yes")
    assert refused.exit_code == 2
    assert refused.output.strip() == (
        'hookline: purge_refused: no filter given: name what to purge, or set "all": true'
    )
    dry = stack.cli("dlq", "purge", "--event-type", "order.purged", "--dry-run")
    assert "1 dead letters match" in dry.stdout
    done = stack.cli("dlq", "purge", "--event-type", "order.purged", "--yes")
    assert done.exit_code == 0 and "purged 1 dead letters" in done.stdout, done.output
    assert dead_ids(stack, "--event-type", "order.purged") == []


def test_tenant_keys_through_the_api_and_what_a_narrow_key_may_not_do(
    stack: Stack, tenant: dict[str, str]
) -> None:
    made = stack.cli("tenant", "key", "create", tenant["id"], "--scope", "deliveries:read")
    reader = created(made, "api key")
    key_id = made.stdout.split()[1]
    listed = stack.cli("tenant", "key", "list", tenant["id"])
    assert key_id in listed.stdout and "deliveries:read" in listed.stdout

    # A read-only key lists its own tenant's dead letters but may not replay them.
    assert stack.cli("dlq", "list", "-o", "json", token=reader).exit_code == 0
    refused = stack.cli("replay", "start", "--all", "--yes", token=reader)
    assert refused.exit_code == 2
    (line,) = refused.output.strip().splitlines()
    assert line.startswith("hookline: forbidden: ") and "deliveries:replay" in line
    assert reader not in refused.output
    # Tenant management is the admin token's.
    denied = stack.cli("tenant", "create", "other", token=tenant["key"])
    assert denied.exit_code == 1 or denied.exit_code == 2
    assert denied.output.startswith("hookline: unauthorized: ")

    assert stack.cli("tenant", "key", "revoke", tenant["id"], key_id).exit_code == 0
    revoked = stack.cli("dlq", "list", token=reader)
    assert revoked.output.startswith("hookline: unauthorized: "), revoked.output


def test_the_cli_says_what_is_wrong_with_the_target(stack: Stack) -> None:
    missing = runner.invoke(app, ["dlq", "list"], env={"HOOKLINE_API_URL": stack.api_url,
                                                       "HOOKLINE_API_TOKEN": ""})  # fmt: skip
    assert missing.exit_code == 2 and "HOOKLINE_API_TOKEN" in missing.output
    closed = f"http://127.0.0.1:{free_port()}"
    away = runner.invoke(app, ["--api-url", closed, "--token", ADMIN_TOKEN, "dlq", "list"])
    assert away.exit_code == 1
    assert away.output.strip() == f"hookline: unreachable: {closed}: ConnectionError"
    assert ADMIN_TOKEN not in away.output


def test_subscriptions_through_the_api(stack: Stack, tenant: dict[str, str]) -> None:
    key = tenant["key"]
    # The operator registers one on the tenant's behalf: active, no handshake.
    made = stack.cli(
        "subscription", "create", f"{stack.receiver.url}/other", "--event-type", "invoice.*",
        "--tenant", tenant["id"], "-o", "json",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    created = json.loads(made.stdout)
    assert created["status"] == "active" and created["verification"]["status"] == "not_run"
    sub = created["id"]
    # The tenant's own key: its handshake fails on a receiver that does not echo, and says why.
    pending = stack.cli("subscription", "create", f"{stack.receiver.url}/pending",
                        "--event-type", "a.b", token=key)  # fmt: skip
    assert pending.exit_code == 0, pending.output
    assert "verification failed: the endpoint did not echo" in pending.stdout

    listed = json.loads(stack.cli("subscription", "list", "-o", "json", token=key).stdout)
    assert sub in {row["id"] for row in listed["data"]}
    assert f"{sub}: paused" in stack.cli("subscription", "pause", sub, token=key).stdout
    assert f"{sub}: active" in stack.cli("subscription", "resume", sub, token=key).stdout
    traced = stack.cli("subscription", "update", sub, "--propagate-trace", token=key)
    assert traced.stdout.strip() == f"{sub}: active, trace propagation on"
    assert stack.cli("subscription", "delete", sub, token=key).exit_code == 0
    gone = stack.cli("subscription", "pause", sub, token=key)
    assert gone.exit_code == 1
    assert gone.output.strip() == "hookline: not_found: subscription not found"


@pytest.mark.parametrize("since", ["2026-05-01T12:00:00", "3600", "soon"])
def test_a_bad_time_is_refused_in_the_same_words_remotely_and_directly(
    stack: Stack, since: str
) -> None:
    remote = stack.cli("dlq", "list", "--since", since)
    direct = stack.direct("dlq", "list", "--since", since)
    assert remote.exit_code == direct.exit_code == 2
    assert remote.output == direct.output
    assert remote.output.startswith("hookline: validation_error: query.since: ")
