"""The deployment the remote CLI's tests share per module (`remote.py`): started once, on a
temporary PostgreSQL database and RabbitMQ vhost, with a tenant and its subscription."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from hookline.cli import app
from hookline.receiver import Receiver, Reply
from tests.cli.remote import ADMIN_TOKEN, Stack, created, runner, wait_until
from tests.integration.faultrig import engine_env
from tests.processes import Services, free_port
from tests.services import temporary_database, temporary_vhost


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


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> dict[str, str]:
    """A tenant made through the CLI, its all-scopes key, and a subscription to the
    receiver (`secret`: its signing secret)."""
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
    return {
        "id": tenant_id, "key": key, "subscription": subscription["id"],
        "secret": subscription["secret"],
    }  # fmt: skip
