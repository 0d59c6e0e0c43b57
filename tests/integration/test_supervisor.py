"""`hookline dispatcher --processes 2`: a real supervisor with two dispatcher children in a
real pipeline (router process, RabbitMQ, PostgreSQL, a receiver on 127.0.0.1), checked
with the ledger of `faultrig.check`: every accepted event received with a valid signature,
every delivery row final.

A child killed with SIGKILL is restarted and the deliveries go on; SIGTERM to the
supervisor drains both children mid-flow and it exits 0, and what they held is delivered
by the next dispatcher. The crash loop (a child that cannot start) is in
tests/cli/test_supervisor.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hookline.receiver import Receiver, Reply
from tests.integration.faultrig import Rig, check, engine_env, logs_dir, publish, wait_until
from tests.processes import Services
from tests.services import temporary_database, temporary_vhost

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

EVENTS = 800
SUPERVISED = ("dispatcher", "--processes", "2", "--concurrency", "8")


def children(pid: int) -> list[int]:
    with contextlib.suppress(OSError, ValueError):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent's wait is missing.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    return False


def kill_trees(services: Services) -> None:
    for proc in services.procs.values():
        for pid in children(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    services.kill()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with (
        temporary_vhost() as broker_url,
        temporary_database() as database_url,
        Receiver() as receiver,
    ):
        services = Services(engine_env(broker_url, database_url), logs_dir(tmp_path))
        rig = Rig(broker_url, database_url, receiver, services)
        # A little latency, so that a signal finds POSTs in flight.
        receiver.respond = rig.respond(lambda _path, _n, _copy: Reply(200, delay_s=0.02))
        rig.subscribe(["/a"])
        try:
            yield rig
        finally:
            kill_trees(services)


def start_supervised(rig: Rig) -> subprocess.Popen[bytes]:
    rig.services.start("router", "router")
    rig.services.start("dispatcher", *SUPERVISED)
    supervisor = rig.services.procs["dispatcher"]
    assert wait_until(lambda: len(children(supervisor.pid)) == 2, 30), rig.output()
    return supervisor


def test_a_child_killed_with_sigkill_is_restarted_and_deliveries_go_on(rig: Rig) -> None:
    supervisor = start_supervised(rig)
    publisher = publish(rig, EVENTS, batch=40, pause_s=0.1)
    assert wait_until(lambda: rig.receiver.count >= 100, 60), rig.output()
    before = children(supervisor.pid)

    os.kill(before[0], signal.SIGKILL)

    def replaced() -> bool:
        now = children(supervisor.pid)
        return len(now) == 2 and before[0] not in now and before[1] in now

    assert wait_until(replaced, 30), rig.output()
    received_at_restart = rig.receiver.count
    publisher.join(120)
    assert not publisher.is_alive() and len(rig.accepted) == EVENTS
    check(rig)
    assert rig.receiver.count > received_at_restart
    assert "dispatcher process 0 exited with status -9" in rig.services.log("dispatcher")
    assert rig.services.alive() == {"router": None, "dispatcher": None}, rig.output()
    assert rig.services.stop() == {"router": 0, "dispatcher": 0}, rig.output()


def test_sigterm_drains_both_children_mid_flow_and_loses_nothing(rig: Rig) -> None:
    supervisor = start_supervised(rig)
    publisher = publish(rig, EVENTS, batch=40, pause_s=0.1)
    assert wait_until(lambda: rig.receiver.count >= 200, 60), rig.output()
    pids = children(supervisor.pid)

    supervisor.send_signal(signal.SIGTERM)

    assert supervisor.wait(60) == 0, rig.output()
    assert not any(alive(pid) for pid in pids), "a child outlived its supervisor"
    assert rig.services.log("dispatcher", tail=10**7).count("dispatcher stopped") == 2
    # What was not yet taken stays queued for the next dispatcher; nothing may be lost.
    rig.services.procs.pop("dispatcher")
    rig.services.start("dispatcher-next", *SUPERVISED)
    publisher.join(120)
    assert not publisher.is_alive() and len(rig.accepted) == EVENTS
    check(rig)
    assert rig.services.stop() == {"router": 0, "dispatcher-next": 0}, rig.output()
