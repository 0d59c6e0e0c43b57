"""The one seam where an operator command picks its backend: the HTTP API of a remote
deployment (`--api-url` / `HOOKLINE_API_URL`), or the database and broker directly (no API
URL: in-cluster jobs). Both answer in the API's JSON shapes, so a command renders one way
whichever ran it (`hookline/cli/direct.py` shapes the direct answers like the API's)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import typer

from common.errors import ConfigurationError
from hookline.cli.remote import Remote, RemoteError, segment

Json = dict[str, Any]
FINISHED = ("completed", "cancelled", "failed")
POLL_S = 0.5


class Ops(Protocol):
    """What the operator commands ask of a deployment; every answer is the API's JSON."""

    def dead_letters(self, query: Json, limit: int, cursor: str | None) -> Json: ...
    def dead_summary(self, query: Json) -> Json: ...
    def poison(self, query: Json, limit: int, cursor: str | None) -> Json: ...
    def dead_letter(self, delivery_id: str) -> Json: ...
    def purge(self, body: Json) -> Json: ...
    def purge_poison(self, body: Json) -> Json: ...
    def resubmit_poison(self, poison_id: str, body: bytes | None) -> Json: ...
    def replay(self, body: Json) -> Json: ...
    def replay_job(self, job_id: str) -> Json: ...
    def cancel_replay(self, job_id: str) -> Json: ...
    def follow(self, job_id: str, show: Callable[[Json], None]) -> Json: ...
    def resume(self, job_id: str) -> Json: ...
    def publish(self, event: Json, tenant: str | None) -> Json: ...
    def create_tenant(self, name: str) -> Json: ...
    def tenants(self, limit: int, cursor: str | None) -> Json: ...
    def issue_key(self, tenant_id: str, body: Json) -> Json: ...
    def keys(self, tenant_id: str) -> Json: ...
    def revoke_key(self, tenant_id: str, key_id: str) -> Json: ...
    def limits(self, tenant_id: str) -> Json: ...
    def change_limits(self, tenant_id: str, body: Json) -> Json: ...
    def subscriptions(self, tenant_id: str | None) -> Json: ...
    def subscribe(self, tenant_id: str | None, body: Json) -> Json: ...
    def subscription_action(self, tenant_id: str | None, sub_id: str, action: str) -> Json: ...
    def change_subscription(self, tenant_id: str | None, sub_id: str, body: Json) -> Json: ...
    def unsubscribe(self, tenant_id: str | None, sub_id: str) -> None: ...
    def close(self) -> None: ...


class RemoteOps:
    """Every command through the HTTP API."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote

    def dead_letters(self, query: Json, limit: int, cursor: str | None) -> Json:
        return self.remote.get("/v1/dead-letters", {**query, "limit": limit, "cursor": cursor})

    def dead_summary(self, query: Json) -> Json:
        return self.remote.get("/v1/dead-letters/summary", query)

    def poison(self, query: Json, limit: int, cursor: str | None) -> Json:
        params = {**query, "limit": limit, "cursor": cursor}
        return self.remote.get("/v1/dead-letters/poison", params)

    def dead_letter(self, delivery_id: str) -> Json:
        return self.remote.get(f"/v1/dead-letters/{segment(delivery_id)}")

    def purge(self, body: Json) -> Json:
        return self.remote.post("/v1/dead-letters/purge", body)

    def purge_poison(self, body: Json) -> Json:
        return self.remote.post("/v1/dead-letters/poison/purge", body)

    def resubmit_poison(self, poison_id: str, body: bytes | None) -> Json:
        path = f"/v1/dead-letters/poison/{segment(poison_id)}/resubmit"
        return self.remote.post(path) if body is None else self.remote.post_bytes(path, body)

    def replay(self, body: Json) -> Json:
        return self.remote.post("/v1/replays", body)

    def replay_job(self, job_id: str) -> Json:
        return self.remote.get(f"/v1/replays/{segment(job_id)}")

    def cancel_replay(self, job_id: str) -> Json:
        return self.remote.post(f"/v1/replays/{segment(job_id)}/cancel")

    def follow(self, job_id: str, show: Callable[[Json], None]) -> Json:
        """The API process runs the job; this watches it until it ends."""
        return poll(self, job_id, show)

    def resume(self, job_id: str) -> Json:
        """The API process takes the job over and runs it (`follow` watches it)."""
        return self.remote.post(f"/v1/replays/{segment(job_id)}/resume")

    def publish(self, event: Json, tenant: str | None) -> Json:
        # The key names the tenant: events belong to a tenant's key, so the admin token
        # cannot publish, and `--tenant` is not sent.
        return self.remote.post("/v1/events", event)

    def create_tenant(self, name: str) -> Json:
        return self.remote.post("/v1/tenants", {"name": name})

    def tenants(self, limit: int, cursor: str | None) -> Json:
        page = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        return self.remote.get("/v1/tenants", page)

    def issue_key(self, tenant_id: str, body: Json) -> Json:
        return self.remote.post(f"/v1/tenants/{segment(tenant_id)}/api-keys", body)

    def keys(self, tenant_id: str) -> Json:
        return self.remote.get(f"/v1/tenants/{segment(tenant_id)}/api-keys", {"limit": 500})

    def revoke_key(self, tenant_id: str, key_id: str) -> Json:
        return self.remote.delete(f"/v1/tenants/{segment(tenant_id)}/api-keys/{segment(key_id)}")

    def limits(self, tenant_id: str) -> Json:
        return self.remote.get(f"/v1/tenants/{segment(tenant_id)}/limits")

    def change_limits(self, tenant_id: str, body: Json) -> Json:
        return self.remote.patch(f"/v1/tenants/{segment(tenant_id)}/limits", body)

    # Subscriptions are a tenant's: its key names the tenant (`/v1/subscriptions`); the
    # admin token may only register one on a tenant's behalf (`--tenant`, pre-verified).
    def subscriptions(self, tenant_id: str | None) -> Json:
        return self.remote.get("/v1/subscriptions", {"limit": 500})

    def subscribe(self, tenant_id: str | None, body: Json) -> Json:
        if tenant_id is None:
            return self.remote.post("/v1/subscriptions", body)
        return self.remote.post(f"/v1/tenants/{segment(tenant_id)}/subscriptions", body)

    def subscription_action(self, tenant_id: str | None, sub_id: str, action: str) -> Json:
        return self.remote.post(f"/v1/subscriptions/{segment(sub_id)}/{segment(action)}")

    def change_subscription(self, tenant_id: str | None, sub_id: str, body: Json) -> Json:
        return self.remote.patch(f"/v1/subscriptions/{segment(sub_id)}", body)

    def unsubscribe(self, tenant_id: str | None, sub_id: str) -> None:
        self.remote.delete(f"/v1/subscriptions/{segment(sub_id)}")

    def close(self) -> None:
        self.remote.close()


def poll(ops: Ops, job_id: str, show: Callable[[Json], None]) -> Json:
    """Show a job's state every `POLL_S` until it ends; its last state."""
    while True:
        job = ops.replay_job(job_id)
        show(job)
        if job["state"] in FINISHED:
            return job
        time.sleep(POLL_S)


@dataclass
class Target:
    """Where this invocation's commands go: set by the root command's options (or their
    environment variables) before any subcommand runs."""

    api_url: str | None = None
    token: str | None = None


TARGET = Target()


def aim(api_url: str | None, token: str | None) -> None:
    TARGET.api_url, TARGET.token = api_url or None, token or None


@contextmanager
def session() -> Iterator[Ops]:
    """The backend for one command; a refusal from either backend ends the command as
    one line on stderr (`hookline: <code>: <message>`), exit status 2 for a refused input
    (4xx other than 404), else 1."""
    try:
        chosen = ops()
    except ConfigurationError as exc:
        typer.echo(f"hookline: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        yield chosen
    except RemoteError as exc:
        typer.echo(f"hookline: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    finally:
        chosen.close()


def ops() -> Ops:
    """The backend of this invocation: remote with an API URL, direct without one."""
    if TARGET.api_url is not None:
        return RemoteOps(Remote(TARGET.api_url, TARGET.token))
    from hookline.cli.direct import DirectOps

    return DirectOps.open()
