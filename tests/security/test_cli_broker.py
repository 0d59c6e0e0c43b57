"""14.11: commands other than `hookline dev` refuse the in-memory broker (an event published
to a command's own `memory://` broker was acknowledged with an id, then lost), and
`hookline publish` without a reachable broker fails within seconds on one line (it took
33 s and ended in a pika traceback)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

QUICK_S = 15.0  # interpreter start-up on a busy machine, plus the 1.5 s wait for the broker
TIMEOUT_S = 60


def hookline(*args: str, broker_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    env |= {
        "HOOKLINE_BROKER_URL": broker_url,
        "HOOKLINE_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db",
        "HOOKLINE_SECRET_KEY": "Yb3kQz8WmR1xT6vN0cLp4HsJ9dFgA2eU7iOtKyM5wBn",
        "HOOKLINE_ADMIN_TOKEN": "t" * 32,
    }
    return subprocess.run(
        [sys.executable, "-m", "hookline", *args],
        env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )  # fmt: skip


def assert_one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("hookline: ")]
    assert len(errors) == 1, done.stderr
    for needle in needles:
        assert needle in errors[0]


def test_publish_refuses_the_in_memory_broker_and_prints_no_id(tmp_path: Path) -> None:
    done = hookline(
        "publish", "order.created", "--tenant", "t1", broker_url="memory://", tmp_path=tmp_path
    )

    assert_one_line_error(done, "memory://", "hookline dev")
    assert done.returncode == 2
    assert done.stdout.strip() == ""  # no event id: nothing was accepted


@pytest.mark.parametrize(
    "command",
    [
        ["router"],
        ["dispatcher"],
        ["api"],
        ["broker", "setup"],
        ["replay", "start", "--all", "--yes"],
    ],
    ids=lambda command: " ".join(command),
)
def test_commands_other_than_dev_refuse_the_in_memory_broker(
    command: list[str], tmp_path: Path
) -> None:
    done = hookline(*command, broker_url="memory://", tmp_path=tmp_path)

    assert_one_line_error(done, "memory://")
    assert done.returncode == 2


def test_publish_without_a_reachable_broker_fails_fast_on_one_line(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    started = time.monotonic()

    done = hookline(
        "publish", "order.created", "--tenant", "t1",
        broker_url=f"amqp://guest:guest@127.0.0.1:{closed_port}/%2F", tmp_path=tmp_path,
    )  # fmt: skip

    assert time.monotonic() - started < QUICK_S
    assert_one_line_error(done, "RabbitMQ unreachable")
    assert done.returncode == 1
    assert done.stdout.strip() == ""
