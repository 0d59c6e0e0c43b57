"""A RabbitMQ cluster in `HOOKLINE_BROKER_URL` (issue 17.1): comma-separated nodes, fail-over
from one to the next, and quorum queues sized to the cluster. The 3-node cluster with
services running through node stops is tests/integration/test_cluster.py."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pika
import pytest

from common.errors import ConfigurationError
from common.transport import topology as tp
from common.transport.rabbitmq import RabbitTransport
from common.transport.rabbitmq.connect import Nodes
from tests.services import temporary_vhost

from . import TOPOLOGY


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_broker_url_may_list_the_nodes_of_a_cluster() -> None:
    nodes = Nodes(" amqp://a:5672/%2F, amqp://b:5672/%2F ,amqp://c:5672/%2F")

    assert nodes.urls == ("amqp://a:5672/%2F", "amqp://b:5672/%2F", "amqp://c:5672/%2F")
    with pytest.raises(ConfigurationError):
        Nodes("amqp://a:5672/%2F,http://b")


def test_the_quorum_group_size_follows_the_listed_nodes_capped_unless_set() -> None:
    assert Nodes("amqp://a").quorum_group_size() is None  # maybe a load balancer
    assert Nodes("amqp://a,amqp://b,amqp://c").quorum_group_size() == 3
    assert Nodes(",".join(f"amqp://n{i}" for i in range(7))).quorum_group_size() == 5
    assert Nodes("amqp://a").quorum_group_size(configured=3) == 3


def test_a_failed_attempt_moves_to_the_next_node_and_a_good_one_stays() -> None:
    nodes = Nodes("amqp://a,amqp://b,amqp://c")
    tried: list[str] = []

    def down_unless_c(url: str) -> str:
        tried.append(url)
        if url != "amqp://c":
            raise OSError("connection refused")
        return url

    for _ in range(2):
        with pytest.raises(OSError):
            nodes.attempt(down_unless_c)
    assert nodes.attempt(down_unless_c) == nodes.attempt(down_unless_c) == "amqp://c"
    assert tried == ["amqp://a", "amqp://b", "amqp://c", "amqp://c"]


def test_only_quorum_queues_get_the_group_size() -> None:
    plan = tp.with_quorum_group_size(tp.build((5.0,)), 3)

    assert all(q.arguments[tp.QUORUM_GROUP_SIZE] == 3 for q in plan.queues)
    assert tp.with_quorum_group_size(TOPOLOGY, None) is TOPOLOGY


@pytest.fixture
def vhost_url() -> Iterator[str]:
    with temporary_vhost() as url:
        yield url


@pytest.mark.rabbitmq
def test_the_transport_connects_past_a_dead_first_node(vhost_url: str) -> None:
    dead = vhost_url.replace(":5672/", f":{closed_port()}/")
    transport = RabbitTransport(f"{dead},{vhost_url}", connect_budget_s=10.0)
    try:
        transport.declare(TOPOLOGY)
        assert transport.queue_depth(TOPOLOGY.queues[0].name) == 0
    finally:
        transport.close()


@pytest.mark.rabbitmq
def test_a_queue_created_with_another_group_size_is_kept_as_it_is(vhost_url: str) -> None:
    plan = tp.build((5.0,))
    arguments = dict(plan.queue(tp.DELIVERIES).arguments)  # as declared before issue 17
    connection = pika.BlockingConnection(pika.URLParameters(vhost_url))
    connection.channel().queue_declare(tp.DELIVERIES, durable=True, arguments=arguments)
    connection.close()
    transport = RabbitTransport(vhost_url, connect_budget_s=5.0, quorum_group_size=3)
    try:
        transport.declare(plan)  # would be PRECONDITION_FAILED on deliveries
        assert transport.queue_depth(tp.DELIVERIES) == 0
    finally:
        transport.close()
