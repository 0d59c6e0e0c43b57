"""The fault proxy itself, against a local echo server."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.faultproxy import FaultProxy

WAIT_S = 5.0


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stopping = threading.Event()

    def echo(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(4096):
                conn.sendall(data)

    def serve() -> None:
        while not stopping.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stopping.set()
    thread.join(WAIT_S)
    server.close()


@pytest.fixture
def proxy(echo_port: int) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", echo_port) as proxy:
        yield proxy


def connect(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=WAIT_S)
    sock.settimeout(WAIT_S)
    return sock


def round_trip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(4096)
        if not chunk:
            break
        received += chunk
    return received


def test_proxy_forwards_both_ways(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        assert round_trip(sock, b"hello") == b"hello"
        assert round_trip(sock, b"x" * 200_000) == b"x" * 200_000


def test_reset_all_sends_an_rst_to_current_connections(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        assert round_trip(sock, b"ping") == b"ping"
        assert proxy.reset_all() == 1
        with pytest.raises(ConnectionResetError):
            sock.sendall(b"more")
            sock.recv(16)
    with connect(proxy) as sock:
        assert round_trip(sock, b"again") == b"again"


def test_blackhole_holds_data_until_healed(proxy: FaultProxy) -> None:
    with connect(proxy) as live:
        assert round_trip(live, b"before") == b"before"
        proxy.blackhole()
        live.sendall(b"held")
        live.settimeout(0.3)
        with pytest.raises(TimeoutError):
            live.recv(16)
        with connect(proxy) as fresh:  # accepted, but nothing comes back
            fresh.settimeout(0.3)
            fresh.sendall(b"new")
            with pytest.raises(TimeoutError):
                fresh.recv(16)
            proxy.heal()
            fresh.settimeout(WAIT_S)
            assert fresh.recv(16) == b"new"
        live.settimeout(WAIT_S)
        assert live.recv(16) == b"held"


def closed_at_once(proxy: FaultProxy) -> bool:
    """Whether a new connection is cut (reset, or EOF) before any byte comes back."""
    try:
        with connect(proxy) as sock:
            sock.sendall(b"x")
            return sock.recv(16) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_refuse_closes_new_connections_and_heal_reopens(proxy: FaultProxy) -> None:
    proxy.refuse()
    assert closed_at_once(proxy)
    proxy.heal()
    with connect(proxy) as sock:
        assert round_trip(sock, b"open") == b"open"


def test_latency_delays_every_chunk(proxy: FaultProxy) -> None:
    proxy.latency(0.5)
    with connect(proxy) as sock:
        sock.sendall(b"slow")
        sock.settimeout(0.1)  # a lower bound only: the proxy cannot forward before 0.5 s
        with pytest.raises(TimeoutError):
            sock.recv(16)
        sock.settimeout(WAIT_S)
        assert sock.recv(16) == b"slow"


def test_cut_after_lets_the_marked_request_through_and_swallows_its_answer(
    proxy: FaultProxy,
) -> None:
    proxy.cut_after(b"MARK")
    with connect(proxy) as sock:
        assert round_trip(sock, b"plain") == b"plain"
        sock.sendall(b"with MARK inside")
        with pytest.raises(ConnectionResetError):
            if sock.recv(64) == b"":  # an EOF instead of the RST fails the test too
                raise AssertionError("the connection ended without a reset")
    assert proxy.cuts == 1  # the server's echo came back to the proxy, which dropped it
    with connect(proxy) as sock:  # once only
        assert round_trip(sock, b"MARK again") == b"MARK again"


def test_cut_after_a_sequence_cuts_the_request_that_carries_the_last_marker(
    proxy: FaultProxy,
) -> None:
    proxy.cut_after(b"WRITE", b"COMMIT")
    with connect(proxy) as sock:
        assert round_trip(sock, b"COMMIT before") == b"COMMIT before"  # not yet: out of order
        assert round_trip(sock, b"WRITE") == b"WRITE"  # the first marker passes
        sock.sendall(b"COMMIT")
        with pytest.raises(ConnectionResetError):
            if sock.recv(64) == b"":
                raise AssertionError("the connection ended without a reset")
    assert proxy.cuts == 1
