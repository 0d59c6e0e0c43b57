"""The operator commands against a remote deployment (issue 18.1): `hookline api`, `router`
and `dispatcher` as processes on PostgreSQL and RabbitMQ, a receiver on 127.0.0.1, and the
CLI reaching them only through `HOOKLINE_API_URL` with the admin token or a tenant's key.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from hookline.cli import app
from tests.cli.remote import (
    ADMIN_TOKEN,
    Stack,
    created,
    dead_ids,
    deliveries_of,
    last_json,
    runner,
    wait_until,
)
from tests.processes import free_port

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


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
    job = json.loads(last_json(replayed.stdout))
    assert (job["state"], job["done"]) == ("completed", 1)
    # Received again, with the webhook-id it was first sent with.
    wait_until(lambda: len(deliveries_of(stack, webhook_id)) == 4, "the replayed delivery")
    status = stack.cli("replay", "status", job["id"], "-o", "json")
    assert json.loads(status.stdout)["state"] == "completed"


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


def test_a_command_over_its_tenants_request_rate_waits_and_is_sent_again(
    stack: Stack, tenant: dict[str, str]
) -> None:
    """A 429 means nothing was done: the CLI waits for its Retry-After and sends the request
    again, so a script of commands slows to the tenant's limit instead of failing."""
    limited = requests.patch(
        f"{stack.api_url}/v1/tenants/{tenant['id']}/limits",
        json={"requests_per_s": 1},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    assert limited.status_code == 200, limited.text
    time.sleep(5.2)  # each API process caches a tenant's limits for 5 s
    started = time.monotonic()
    listed = [stack.cli("dlq", "list", "-o", "json", token=tenant["key"]) for _ in range(3)]
    assert [r.exit_code for r in listed] == [0, 0, 0], [r.output for r in listed]
    assert time.monotonic() - started >= 1.0  # three requests at one a second: waited
    # Without the CLI's wait: two requests at once, in one window or across two, meet a 429.
    auth = {"Authorization": f"Bearer {tenant['key']}"}
    plain = [requests.get(f"{stack.api_url}/v1/dead-letters", headers=auth, timeout=10)
             for _ in range(2)]  # fmt: skip
    assert 429 in [r.status_code for r in plain]
