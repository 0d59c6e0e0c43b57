"""Issue 14.12: keep-alive must hold for sockets whose file descriptor is 1024 or more.

`select.select` refuses such descriptors, so a busy dispatcher (many pools, many sockets)
silently dropped every idle connection and opened a new TCP (and TLS) connection per POST.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dispatcher.http import Pool, request_bytes

SELECT_LIMIT = 1024  # FD_SETSIZE: select() cannot watch a descriptor at or above it


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.peers: list[tuple[str, int]] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless a side asks to close
    server: _Server

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        with self.server.lock:
            self.server.peers.append(self.client_address)
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def server() -> Iterator[_Server]:
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def low_descriptors_taken() -> Iterator[None]:
    """Every descriptor below 1024 in use, so the next socket opened gets one above it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = SELECT_LIMIT + 256
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    taken: list[int] = []
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        while True:
            fd = os.dup(devnull)
            if fd >= SELECT_LIMIT:
                os.close(fd)
                break
            taken.append(fd)
        yield
    finally:
        for fd in taken:
            os.close(fd)
        os.close(devnull)
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _post(pool: Pool, host: str) -> int:
    request = request_bytes("/hook", host, {"content-type": "application/json"}, b"{}")
    response = pool.request(
        request, connect_timeout_s=2.0, deadline_at=time.monotonic() + 5.0, limit=1024
    )
    return response.status


def test_a_connection_above_descriptor_1024_is_kept_alive_and_reused(
    server: _Server, low_descriptors_taken: None
) -> None:
    port = server.server_address[1]
    host = f"127.0.0.1:{port}"
    pool = Pool("http", "127.0.0.1", port, "127.0.0.1", context=None, maxsize=1)
    try:
        assert _post(pool, host) == 200
        [idle] = pool._idle  # kept for the next request
        assert idle.sock.fileno() >= SELECT_LIMIT, "the test did not reach a high descriptor"
        assert _post(pool, host) == 200
    finally:
        pool.close()
    ports = [peer_port for _address, peer_port in server.peers]
    assert len(ports) == 2
    assert ports[0] == ports[1], "a new connection was opened for the second request"
