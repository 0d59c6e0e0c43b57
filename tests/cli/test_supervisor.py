"""`--processes N` (hookline/supervisor.py): the children's command lines, the restart
backoff, the core count, and a real supervisor giving up on a child that cannot start.

The pipeline scenarios (kill -9 of a child, SIGTERM mid-flow) are in
tests/integration/test_supervisor.py.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from common.db import migrate
from hookline.supervisor import (
    CRASH_LIMIT,
    RESTART_MAX_WAIT_S,
    Supervisor,
    available_cores,
    child_argvs,
    restart_delay_s,
)
from tests.processes import free_port

GIVE_UP_WITHIN_S = 90.0  # about 20 s of backoff, plus interpreter start-ups on a busy host


def test_each_child_runs_one_process_on_its_own_metrics_port() -> None:
    argvs = child_argvs("dispatcher", 2, metrics_port=9100, args=["--concurrency", "8"])

    assert argvs == [
        ["dispatcher", "--processes", "1", "--child-index", "0", "--concurrency", "8",
         "--metrics-port", "9100"],
        ["dispatcher", "--processes", "1", "--child-index", "1", "--concurrency", "8",
         "--metrics-port", "9101"],
    ]  # fmt: skip
    assert "--metrics-port" not in child_argvs("router", 1, metrics_port=None)[0]


def test_restart_backoff_doubles_up_to_a_ceiling() -> None:
    delays = [restart_delay_s(n) for n in range(1, 8)]

    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(delays) == RESTART_MAX_WAIT_S


def test_the_default_process_count_is_the_usable_cores() -> None:
    assert 1 <= available_cores() <= len(os.sched_getaffinity(0))


# A child that drains for 0.3 s on its first SIGTERM and exits 0, but exits 3 on a second.
DRAINING_CHILD = """
import pathlib, signal, sys, time
signals = []
def on_term(*_):
    signals.append(1)
    if len(signals) > 1:
        sys.exit(3)
signal.signal(signal.SIGTERM, on_term)
pathlib.Path(sys.argv[1]).touch()
while not signals:
    time.sleep(0.05)
time.sleep(0.3)
sys.exit(0)
"""


def test_one_sigterm_reaches_each_child_once_and_a_clean_drain_exits_0(tmp_path: Path) -> None:
    ready = [tmp_path / "0", tmp_path / "1"]
    supervisor = Supervisor(
        "test", [[str(path)] for path in ready],
        spawn=lambda argv: subprocess.Popen([sys.executable, "-c", DRAINING_CHILD, *argv]),
    )  # fmt: skip

    def signal_once_ready() -> None:
        deadline = time.monotonic() + 60
        while not all(path.exists() for path in ready) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    threading.Thread(target=signal_once_ready, daemon=True).start()
    try:
        assert supervisor.run() == 0  # 1 if a child was signalled twice (exit 3)
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])


@contextlib.contextmanager
def port_pair_with_the_second_taken() -> Iterator[int]:
    """A free port whose successor is held by a listening socket here."""
    for _ in range(50):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            port = taken.getsockname()[1] - 1
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
            taken.listen()
            yield port
            return
    raise RuntimeError("no free port next to a free port")


def test_a_child_that_keeps_crashing_at_start_makes_the_supervisor_exit_non_zero(
    tmp_path: Path,
) -> None:
    """Child 1's metrics port is taken, so it dies at every start; child 0 runs (waiting
    for a broker that is not there). The supervisor gives up, drains child 0, says why."""
    database_url = f"sqlite:///{tmp_path}/db.sqlite"
    migrate.upgrade(database_url)  # the dispatcher checks its key canary there first
    with port_pair_with_the_second_taken() as port:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
        env |= {
            "HOOKLINE_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F",
            "HOOKLINE_DATABASE_URL": database_url,
            "HOOKLINE_SECRET_KEY": secrets.token_hex(32),
        }
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "hookline", "dispatcher", "--processes", "2",
             "--metrics-port", str(port)],
            env=env, capture_output=True, text=True, timeout=GIVE_UP_WITHIN_S, check=False,
        )  # fmt: skip
        took_s = time.monotonic() - started

    assert done.returncode == 1, done.stderr[-3000:]
    verdict = [line for line in done.stderr.splitlines() if line.startswith("hookline: ")]
    assert len(verdict) == 1, done.stderr[-3000:]
    assert "dispatcher process 1 exited with status 1" in verdict[0]
    assert f"{CRASH_LIMIT + 1}th exit in a row" in verdict[0]
    assert "Address already in use" in done.stderr  # the cause, in the child's own output
    print(f"\ngave up after {took_s:.1f} s")
