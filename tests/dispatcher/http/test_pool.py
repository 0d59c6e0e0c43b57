"""The HTTP client under the sender, against a raw TCP server on 127.0.0.1 that answers
with exactly the bytes a test scripts: framing, keep-alive, dropped connections, deadline."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from dispatcher.http import DeadlineExceeded, Pool, ProtocolError, Response, request_bytes


def read_request(sock: socket.socket) -> bytes:
    """One request, head and content-length body; b"" if the client closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        rest += sock.recv(65536)
    return head + b"\r\n\r\n" + rest


class RawServer:
    """Runs `script(server, socket, connection number)` for every connection accepted."""

    def __init__(self, script: Script) -> None:
        self.requests: list[bytes] = []
        self._script = script
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def read(self, sock: socket.socket) -> bytes:
        request = read_request(sock)
        if request:
            self.requests.append(request)
        return request

    def _serve(self) -> None:
        number = 0
        while not self._stopped.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            number += 1
            threading.Thread(target=self._handle, args=(sock, number), daemon=True).start()

    def _handle(self, sock: socket.socket, number: int) -> None:
        with sock:
            self._script(self, sock, number)


Script = Callable[[RawServer, socket.socket, int], None]


@contextmanager
def raw_server(script: Script) -> Iterator[RawServer]:
    server = RawServer(script)
    server._thread.start()
    try:
        yield server
    finally:
        server._stopped.set()
        server._listener.close()
        server._thread.join(2)


def pool(port: int) -> Pool:
    return Pool("http", "127.0.0.1", port, "127.0.0.1", context=None, maxsize=4)


def post(p: Pool, *, timeout_s: float = 5.0, limit: int = 1024) -> Response:
    request = request_bytes("/hooks", f"127.0.0.1:{p.port}", {"x-a": "1"}, b'{"n":1}')
    return p.request(
        request, connect_timeout_s=1.0, deadline_at=time.monotonic() + timeout_s, limit=limit
    )


def answering(*answers: bytes, then_close: bool = False) -> Script:
    """Each request on a connection gets the next answer; then the connection closes."""

    def script(server: RawServer, sock: socket.socket, _number: int) -> None:
        for answer in answers:
            if not server.read(sock):
                return
            sock.sendall(answer)
        if not then_close:
            while sock.recv(65536):
                pass

    return script


def test_the_request_is_one_write_with_host_and_length() -> None:
    with raw_server(answering(b"HTTP/1.1 204 No Content\r\n\r\n")) as server:
        response = post(pool(server.port))
    assert response.status == 204 and response.complete
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /hooks HTTP/1.1"
    assert f"host: 127.0.0.1:{server.port}".encode() in lines
    assert b"content-length: 7" in lines and b"x-a: 1" in lines
    assert body == b'{"n":1}'


def test_a_chunked_body_is_decoded_and_the_connection_kept() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n"
    )
    with raw_server(answering(answer, answer)) as server:
        p = pool(server.port)
        first, second = post(p), post(p)
    for response in (first, second):
        assert (response.status, response.body, response.complete) == (200, b"hello world", True)
    assert len(server.requests) == 2  # both on the one connection the script serves


def test_a_body_ended_by_the_close_is_complete_and_the_connection_not_reused() -> None:
    answer = b"HTTP/1.1 200 OK\r\n\r\nuntil the end"
    with raw_server(answering(answer, then_close=True)) as server:
        p = pool(server.port)
        response = post(p)
        assert (response.status, response.body, response.complete) == (200, b"until the end", True)
        assert (post(p).body) == b"until the end"


def test_informational_answers_are_skipped() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok"
    with raw_server(answering(answer)) as server:
        response = post(pool(server.port))
    assert (response.status, response.body) == (201, b"ok")


def test_headers_are_read_case_insensitively_and_retry_after_kept() -> None:
    answer = b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n"
    with raw_server(answering(answer)) as server:
        response = post(pool(server.port))
    assert response.status == 429 and response.headers["retry-after"] == "7"


def test_a_long_chunked_body_is_truncated_at_the_cap() -> None:
    answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"400\r\n" + b"y" * 1024
    with raw_server(answering(answer)) as server:
        response = post(pool(server.port), limit=100)
    assert (response.body, response.truncated, response.complete) == (b"y" * 100, True, True)


def test_an_idle_connection_the_server_dropped_is_replaced_without_a_failure() -> None:
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"

    def close_after_one(server: RawServer, sock: socket.socket, _number: int) -> None:
        if server.read(sock):
            sock.sendall(ok)
        time.sleep(0.05)  # then the server drops the idle keep-alive connection

    with raw_server(close_after_one) as server:
        p = pool(server.port)
        assert post(p).status == 200
        time.sleep(0.2)
        assert post(p).status == 200
    assert len(server.requests) == 2


def test_a_reused_connection_that_drops_mid_request_is_sent_once_more_on_a_new_one() -> None:
    # The close races the request: the server reads it and closes without a byte. Only a
    # reused connection is retried, once; the answer comes from the second connection.
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"

    def script(server: RawServer, sock: socket.socket, number: int) -> None:
        if number == 1:
            server.read(sock)
            sock.sendall(ok)
            server.read(sock)  # the second request arrives, and the connection just closes
            return
        answering(ok)(server, sock, number)

    with raw_server(script) as server:
        p = pool(server.port)
        assert post(p).status == 200
        assert post(p).status == 200
    assert len(server.requests) == 3


def test_a_fresh_connection_closed_without_an_answer_is_an_error() -> None:
    def script(server: RawServer, sock: socket.socket, _number: int) -> None:
        server.read(sock)

    with raw_server(script) as server, pytest.raises(ProtocolError):
        post(pool(server.port))
    assert len(server.requests) == 1  # not sent again: nothing says the server did not act on it


def test_a_status_line_dripped_byte_by_byte_ends_at_the_deadline() -> None:
    def drip(server: RawServer, sock: socket.socket, _number: int) -> None:
        server.read(sock)
        for byte in b"HTTP/1.1 200 OK\r\n\r\n":
            time.sleep(0.2)
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return

    with raw_server(drip) as server:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            post(pool(server.port), timeout_s=0.7)
        assert time.monotonic() - started < 1.5


def test_a_body_dripped_past_the_deadline_keeps_the_status_and_times_out() -> None:
    def drip(server: RawServer, sock: socket.socket, _number: int) -> None:
        server.read(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
        for _ in range(100):
            time.sleep(0.2)
            try:
                sock.sendall(b"x")
            except OSError:
                return

    with raw_server(drip) as server:
        response = post(pool(server.port), timeout_s=0.7)
    assert (response.status, response.timed_out, response.complete) == (200, True, False)


def test_garbage_instead_of_http_is_a_protocol_error() -> None:
    with raw_server(answering(b"SSH-2.0-OpenSSH\r\n\r\n")) as server, pytest.raises(ProtocolError):
        post(pool(server.port))


@pytest.mark.parametrize(
    "framing",
    [
        b"content-length: \xb2\r\n\r\n",  # a digit to str.isdigit, not to int()
        b"transfer-encoding: chunked\r\n\r\n-5\r\nabc\r\n0\r\n\r\n",
        b"transfer-encoding: chunked\r\n\r\n1_0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n",
    ],
)
def test_a_body_framed_out_of_the_grammar_is_a_protocol_error_after_the_status(
    framing: bytes,
) -> None:
    with raw_server(answering(b"HTTP/1.1 200 OK\r\n" + framing)) as server:
        response = post(pool(server.port))
    assert response.status == 200 and not response.complete
    assert response.error is not None and "ProtocolError" in response.error


@pytest.mark.parametrize(
    ("name", "value"),
    [("x-evil", "a\r\nx-injected: 1"), ("x-evil", "a\nb"), ("bad name", "v"), ("x:y", "v")],
)
def test_a_header_that_would_break_the_head_is_refused(name: str, value: str) -> None:
    with pytest.raises(ValueError):
        request_bytes("/", "h", {name: value}, b"")


def test_a_path_with_spaces_or_non_ascii_is_percent_encoded() -> None:
    head = request_bytes("/a b/é", "h", {}, b"").split(b"\r\n")[0]
    assert head == b"POST /a%20b/%C3%A9 HTTP/1.1"
