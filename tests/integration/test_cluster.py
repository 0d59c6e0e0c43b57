"""A RabbitMQ cluster (issue 17.1): a private 3-node cluster on 127.0.0.1, the router and a
dispatcher as real processes given all three nodes in `HOOKLINE_BROKER_URL`, a real
receiver, and a few thousand deliveries during which the node the services are connected
to is stopped (and started again), then the node holding the deliveries queue's leader.

Checked with the ledger of `faultrig.check`: every accepted event received at least once
with a valid signature (standardwebhooks), every delivery row final; neither process was
restarted and both drain and exit 0; the longest gap between receipts around each stop is
printed (the pause the stop caused; target 10 s) and bounded generously.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from common.transport import topology as tp
from hookline.receiver import Receiver, Reply
from tests.instances import RABBITMQ_BIN, PrivateCluster, PrivateRabbit, private_cluster
from tests.integration.faultrig import Rig, check, engine_env, logs_dir, publish, wait_until
from tests.processes import Services
from tests.services import IN_CI, temporary_database

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.timeout(900)]

EVENTS = 3000
PAUSE_TARGET_S = 10.0
PAUSE_BOUND_S = 30.0  # generous: a shared, loaded CI machine
WINDOW_S = 60.0  # receipts looked at after each stop


def require_rabbitmq_server() -> None:
    if (RABBITMQ_BIN / "rabbitmq-server").exists():
        return
    message = f"no rabbitmq-server in {RABBITMQ_BIN}: cannot start a private cluster"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: integration tests must run)")
    pytest.skip(message)


def longest_gap_s(times: list[float], start: float, end: float) -> float:
    """The longest wait between consecutive receipts from `start` to `end` (time.time())."""
    inside = [start, *(t for t in times if start <= t <= end)]
    return max((b - a for a, b in itertools.pairwise(inside)), default=end - start)


def stop_and_restart(rig: Rig, node: PrivateRabbit) -> tuple[float, float]:
    """Stop `node` mid-flow, wait for deliveries to go on without it, start it again
    (it rejoins the cluster). Returns (stopped at, stop took s)."""
    stopped_at = time.time()
    node.stop()
    took_s = time.time() - stopped_at
    resumed_from = rig.receiver.count
    assert wait_until(lambda: rig.receiver.count > resumed_from + 50, WINDOW_S), rig.output()
    node.start()
    return stopped_at, took_s


def test_deliveries_go_on_through_a_node_stop_and_a_leader_stop(tmp_path: Path) -> None:
    require_rabbitmq_server()
    with (
        private_cluster(tmp_path / "cluster") as cluster,
        temporary_database() as database_url,
        Receiver() as receiver,
    ):
        services = Services(engine_env(cluster.url, database_url), logs_dir(tmp_path))
        rig = Rig(cluster.url, database_url, receiver, services)
        receiver.respond = rig.respond(lambda _path, _n, _copy: Reply(200))
        rig.subscribe(["/a"])
        try:
            run_through_two_stops(rig, cluster)
        finally:
            services.kill()


def run_through_two_stops(rig: Rig, cluster: PrivateCluster) -> None:
    rig.services.start("router", "router")
    rig.services.start("dispatcher", "dispatcher", "--concurrency", "16")
    # About a minute of publishing, so that both stops land mid-flow.
    publisher = publish(rig, EVENTS, batch=25, pause_s=0.5)
    assert wait_until(lambda: rig.receiver.count >= 200, 120), rig.output()

    # Every connection goes to the first listed node until it stops answering.
    connected_to = cluster.nodes[0]
    first = stop_and_restart(rig, connected_to)
    leader = cluster.leader("/", tp.DELIVERIES)
    second = stop_and_restart(rig, leader)

    publisher.join(300)
    assert not publisher.is_alive() and len(rig.accepted) == EVENTS
    check(rig, quiet_timeout_s=180)
    times = sorted(r.received_at for r in rig.receiver.received)
    pauses = [longest_gap_s(times, at, at + WINDOW_S) for at, _ in (first, second)]
    print(
        f"\ncluster pause: {pauses[0]:.1f} s after stopping the connected node "
        f"(stop took {first[1]:.1f} s), {pauses[1]:.1f} s after stopping the leader's node "
        f"{'(the same node) ' if leader is connected_to else ''}(took {second[1]:.1f} s); "
        f"target {PAUSE_TARGET_S:g} s; {len(rig.accepted)} events, {rig.receiver.count} "
        "requests"
    )
    assert max(pauses) <= PAUSE_BOUND_S, pauses
    assert rig.services.alive() == {"router": None, "dispatcher": None}, rig.output()
    assert rig.services.stop() == {"router": 0, "dispatcher": 0}, rig.output()
