"""A deployment for the remote CLI's tests (issue 18.1): `hookline api`, `router` and
`dispatcher` as processes on PostgreSQL and RabbitMQ, a receiver on 127.0.0.1, and the CLI
reaching them through `HOOKLINE_API_URL` (`Stack.cli`) or the database and broker
(`Stack.direct`). The fixtures that start it are in `conftest.py`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from typer.testing import CliRunner, Result

from hookline.cli import app
from hookline.receiver import Received, Receiver

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

    @property
    def database_url(self) -> str:
        return self.direct_env["HOOKLINE_DATABASE_URL"]

    @property
    def broker_url(self) -> str:
        return self.direct_env["HOOKLINE_BROKER_URL"]


def wait_until(check: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def created(result: Result, label: str) -> str:
    assert result.exit_code == 0, result.output
    return next(
        line.split(": ")[1].split()[0] for line in result.stdout.splitlines()
        if line.startswith(label)
    )  # fmt: skip


def deliveries_of(stack: Stack, webhook_id: str) -> list[Received]:
    return [r for r in stack.receiver.received if r.headers.get("webhook-id") == webhook_id]


def dead_ids(stack: Stack, *filters: str) -> list[str]:
    listed = stack.cli("dlq", "list", *filters, "-o", "json")
    assert listed.exit_code == 0, listed.output
    return [row["id"] for row in json.loads(listed.stdout)["data"]]


def last_json(text: str) -> str:
    """The JSON object a command printed last (a progress bar may precede it)."""
    return text[text.rindex("\n{") + 1 :] if "\n{" in text else text[text.index("{") :]
