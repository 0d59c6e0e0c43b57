"""How `connect` classifies what pika raises while a connection opens."""

from __future__ import annotations

import socket

import pytest
from pika.adapters.utils.io_services_utils import _AsyncStreamConnector

from common.errors import ConnectionLostError
from common.transport.rabbitmq.connect import connect


def test_a_peer_gone_before_pikas_socket_check_is_an_outage_not_a_crash() -> None:
    """A broker (or proxy) that closes a socket right after the TCP connect makes pika's
    stream connector fail `getpeername()`, which it re-raises as `ValueError`. That reached
    the API as a 500 instead of a 503 (CI, stop 23). Here pika's own connector is handed a
    socket with no peer, which is the state it finds then."""
    attempts = 0

    def attempt(attempt_s: float) -> None:
        nonlocal attempts
        attempts += 1
        with socket.socket() as unconnected:
            _AsyncStreamConnector(None, object, unconnected, None, None, print)

    with pytest.raises(ValueError, match="getpeername"):
        attempt(0.0)
    with pytest.raises(ConnectionLostError, match="unreachable"):
        connect(attempt, budget_s=0.3)
    assert attempts > 2  # retried as an outage is, until the budget ran out
