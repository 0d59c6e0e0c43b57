"""The `hookline` command, run the way users run it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import inspect, select
from typer.testing import CliRunner

from common.db.models import ApiKey
from common.db.session import make_engine
from common.transport import topology as tp
from common.transport.rabbitmq import RabbitTransport
from common.wire import Event, decode
from hookline.cli import app
from tests.processes import free_port
from tests.services import temporary_vhost

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    url = f"sqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("HOOKLINE_DATABASE_URL", url)
    return {"HOOKLINE_DATABASE_URL": url}


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with temporary_vhost() as url:
        monkeypatch.setenv("HOOKLINE_BROKER_URL", url)
        yield url


def test_migrate_creates_the_schema_and_is_idempotent(env: dict[str, str]) -> None:
    for _ in range(2):
        result = runner.invoke(app, ["migrate"])
        assert result.exit_code == 0, result.output
    engine = make_engine(env["HOOKLINE_DATABASE_URL"])
    assert {"tenants", "subscriptions", "deliveries", "attempts"} <= set(
        inspect(engine).get_table_names()
    )
    engine.dispose()


def test_tenant_create_prints_a_key_that_is_stored_only_as_a_hash(env: dict[str, str]) -> None:
    assert runner.invoke(app, ["migrate"]).exit_code == 0
    result = runner.invoke(app, ["tenant", "create", "site-a"])
    assert result.exit_code == 0, result.output
    key = re.search(r"hl_[A-Za-z0-9_\-]+", result.output)
    assert key is not None
    engine = make_engine(env["HOOKLINE_DATABASE_URL"])
    with engine.connect() as db:
        hashes = db.scalars(select(ApiKey.key_hash)).all()
    engine.dispose()
    assert hashes == [hashlib.sha256(key.group(0).encode()).hexdigest()]


def test_broker_setup_declares_every_queue(broker: str) -> None:
    result = runner.invoke(app, ["broker", "setup"])
    assert result.exit_code == 0, result.output
    with RabbitTransport(broker) as transport:
        for queue in (tp.EVENTS, tp.DELIVERIES, tp.DEAD, tp.POISON, "hookline.retry.5m"):
            assert transport.queue_depth(queue) == 0
            assert queue in result.output


def test_publish_returns_after_the_confirm_and_the_event_is_queued(broker: str) -> None:
    data = {"page": "home", "rev": 3}
    result = runner.invoke(
        app,
        ["publish", "content.updated", "--tenant", "ten_1", "--data", json.dumps(data),
         "--id", "evt-cli-1", "--operation", "sync"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "evt-cli-1" in result.output
    with RabbitTransport(broker) as transport:
        consumer = transport.consume(tp.EVENTS, prefetch=1)
        message = next(m for m in consumer if m is not None)
        consumer.ack(message)
        consumer.close()
    event = decode(Event, message.body)
    assert (event.id, event.tenant, event.type, event.operation, event.data) == (
        "evt-cli-1", "ten_1", "content.updated", "sync", data
    )  # fmt: skip
    assert message.routing_key == "content.updated"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "{nope"], "not JSON"),
        (["--data", "[1, 2]"], "JSON object"),
        (["--data", "[" * 100_000], "nested too deep"),
    ],
)
def test_publish_refuses_bad_data_with_a_clear_error(
    broker: str, args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["publish", "a.b", "--tenant", "t", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_publish_refuses_an_invalid_event_type(broker: str) -> None:
    result = runner.invoke(app, ["publish", "not a type!", "--tenant", "t"])
    assert result.exit_code == 2
    assert "invalid event" in result.output


def test_dev_demo_delivers_signed_webhooks_and_exits(tmp_path: Path) -> None:
    """What the README's first command runs, ending once the demo was delivered."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    done = subprocess.run(
        [sys.executable, "-m", "hookline", "dev", "--demo", "--exit-after-demo",
         "--port", str(port), "--demo-events", "3", "--db", "chosen.db"],
        cwd=tmp_path, env={**env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert output.count("signature valid") == 3
    assert "INVALID" not in output
    assert "all 3 demo webhooks delivered and verified" in output
    # It says where its data lives (the file `--db` chose) and how the CLI reaches it.
    assert f"database: {tmp_path.resolve() / 'chosen.db'}" in output
    assert (tmp_path / "chosen.db").exists()
    assert f"export HOOKLINE_API_URL=http://127.0.0.1:{port} HOOKLINE_API_TOKEN=hl_admin_" in output
    portal = rf"portal for site B .*: http://127\.0\.0\.1:{port}/portal/open\?token=hlp_\S{{43}}\n"
    assert re.search(portal, output), output


def _ipv6_loopback() -> bool:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_api_listens_on_the_host_it_is_given_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    """`--host ::1` (loopback, but not the default 127.0.0.1): served there, only there."""
    port = free_port()
    url = f"sqlite:///{tmp_path}/api.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    env |= {"HOOKLINE_DATABASE_URL": url, "HOOKLINE_BROKER_URL": "memory://",
            "HOOKLINE_ALLOW_MEMORY_BROKER": "true", "HOOKLINE_ADMIN_TOKEN": "t" * 32,
            "HOOKLINE_SECRET_KEY": "raq-BsD3ahC2DbAjY_bNdhWBJINkW9LtpYEawZLHiEY"}  # fmt: skip
    assert runner.invoke(app, ["migrate"], env=env).exit_code == 0
    api = subprocess.Popen(
        [sys.executable, "-m", "hookline", "api", "--host", "::1", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://[::1]:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = requests.get(f"{base}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                assert api.poll() is None and time.monotonic() < deadline, "the API never listened"
                time.sleep(0.1)
        assert health.status_code == 200
        admin = {"Authorization": "Bearer " + "t" * 32}
        tenants = requests.get(f"{base}/v1/tenants", headers=admin, timeout=5)
        assert tenants.status_code == 200 and tenants.json()["data"] == []
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        api.send_signal(signal.SIGTERM)
        output = api.communicate(timeout=40)[0].decode(errors="replace")
    assert api.returncode == 0, output
