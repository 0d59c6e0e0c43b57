"""One HTTP/1.1 exchange on one socket: send a request, read its answer, within a deadline.

Deadline: every socket operation (each send and each receive) waits at most until the
request's deadline, so a server that sends one byte a second cannot stretch a request past
it: the deadline bounds the request, not each read.

Framing: `content-length`, chunked transfer encoding, or a body that ends when the server
closes; 1xx answers are skipped; 204 and 304 have no body. The status line and headers are
parsed here (not through `http.client`, which reads every head with the `email` package).
An answer tells whether its connection can carry another: read to the end, HTTP/1.1, and
no `Connection: close`. A reused connection that closes before a single byte of the answer
raises `Dropped`, so that the pool sends the request once more on a new one.
"""

from __future__ import annotations

import contextlib
import select
import selectors
import time
from dataclasses import dataclass, field
from typing import Protocol

MAX_HEAD_BYTES = 64 * 1024
RECV_BYTES = 64 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})


class DeadlineExceeded(Exception):
    """The request's deadline passed before its answer was complete."""


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.x as this client reads it."""


class Dropped(Exception):
    """A reused connection closed before any byte of the answer: safe to send again."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # names in lower case; a repeated name keeps its last value
    body: bytes = b""
    truncated: bool = False  # more than the cap was sent; `body` holds the cap
    complete: bool = False  # the body was read to its end (or to the cap)
    error: str | None = None  # why an answer that had begun was not read to its end
    timed_out: bool = False  # the deadline passed while the body was still arriving
    reusable: bool = field(default=False, repr=False)


class Stream(Protocol):
    """What an exchange uses of its connection: a socket, a TLS socket, or TLS inside the
    TLS connection to an https:// egress proxy (`tls_in_tls.py`)."""

    def send(self, data: bytes | memoryview, /) -> int: ...
    def recv(self, size: int, /) -> bytes: ...
    def settimeout(self, timeout_s: float | None, /) -> None: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


def _readable_now(sock: Stream) -> bool:
    """Whether `sock` has bytes, an EOF or an error waiting. Not with `select.select`: it
    refuses descriptors of 1024 and above, which a busy dispatcher's sockets reach, and then
    every idle connection was dropped and each POST opened a new one (issue 14.12)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    with selectors.DefaultSelector() as selector:  # where there is no poll (Windows)
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(0))


class Conn:
    """One socket with the bytes received past the last answer."""

    def __init__(self, sock: Stream) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.reused = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def quiet(self) -> bool:
        """Still open and silent: an idle keep-alive connection the server has not closed."""
        if self.buffer:
            return False
        try:
            return not _readable_now(self.sock)
        except (OSError, ValueError):
            return False

    def _wait(self, deadline_at: float) -> None:
        remaining = deadline_at - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded
        self.sock.settimeout(remaining)

    def send(self, data: bytes, deadline_at: float) -> None:
        view = memoryview(data)
        while view:
            self._wait(deadline_at)
            try:
                sent = self.sock.send(view)
            except TimeoutError:
                raise DeadlineExceeded from None
            view = view[sent:]

    def fill(self, deadline_at: float) -> bool:
        """Receive more into the buffer; False when the server closed the connection."""
        self._wait(deadline_at)
        try:
            chunk = self.sock.recv(RECV_BYTES)
        except TimeoutError:
            raise DeadlineExceeded from None
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def take(self, size: int) -> bytes:
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def line(self, deadline_at: float, limit: int) -> bytes:
        """One CRLF-ended line, without its end."""
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                return self.take(end + 2)[:-2]
            if len(self.buffer) > limit:
                raise ProtocolError("line too long")
            if not self.fill(deadline_at):
                raise ProtocolError("connection closed inside a line")


def _parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"bad status line: {lines[0][:80]!r}")
    status = int(parts[1])
    if not 100 <= status <= 999:
        raise ProtocolError(f"bad status code: {status}")
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        name, sep, value = raw.partition(b":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"bad header line: {raw[:80]!r}")
        headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
    return status, parts[0].decode("latin-1"), headers


def _read_head(conn: Conn, deadline_at: float) -> tuple[int, str, dict[str, str]]:
    while True:
        end = conn.buffer.find(b"\r\n\r\n")
        if end >= 0:
            return _parse_head(conn.take(end + 4)[:-4])
        if len(conn.buffer) > MAX_HEAD_BYTES:
            raise ProtocolError("response head too large")
        received_before = bool(conn.buffer)
        if not conn.fill(deadline_at):
            if conn.reused and not received_before:
                raise Dropped
            raise ProtocolError("connection closed before the end of the response head")


class _Body:
    """Collects a body up to `limit` bytes (one more tells exactly `limit` from longer)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0

    @property
    def full(self) -> bool:
        return self.size > self.limit

    def add(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)

    def value(self) -> tuple[bytes, bool]:
        data = b"".join(self.chunks)
        return (data[: self.limit], True) if self.full else (data, False)


def _read_exactly(conn: Conn, body: _Body, length: int, deadline_at: float) -> bool:
    """Read `length` bytes into `body`; False if it filled up first (the rest unread)."""
    left = length
    while left > 0:
        if not conn.buffer and not conn.fill(deadline_at):
            raise ProtocolError("connection closed inside the body")
        data = conn.take(min(left, len(conn.buffer)))
        left -= len(data)
        body.add(data)
        if body.full:
            return False
    return True


def _read_chunked(conn: Conn, body: _Body, deadline_at: float) -> bool:
    """Read a chunked body; True when read to its end, False when it filled `body` first."""
    while True:
        size_line = conn.line(deadline_at, 1024).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            size = -1
        if size < 0 or not size_line.isalnum():  # int() also takes "-5", "+5" and "1_0"
            raise ProtocolError(f"bad chunk size: {size_line[:40]!r}")
        if size == 0:
            while conn.line(deadline_at, MAX_HEAD_BYTES):  # trailers, up to the empty line
                pass
            return True
        if not _read_exactly(conn, body, size, deadline_at):
            return False
        if conn.line(deadline_at, 2) != b"":
            raise ProtocolError("chunk not followed by CRLF")


def _read_to_close(conn: Conn, body: _Body, deadline_at: float) -> None:
    while not body.full:
        if conn.buffer:
            body.add(conn.take(len(conn.buffer)))
        elif not conn.fill(deadline_at):
            return


def _read_body(
    conn: Conn, status: int, headers: dict[str, str], body: _Body, deadline_at: float
) -> bool:
    """Read the answer's body into `body`; True when the connection can carry another."""
    if status in _NO_BODY_STATUSES or 100 <= status < 200:
        return True
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _read_chunked(conn, body, deadline_at)
    if "content-length" in headers:
        length = headers["content-length"]
        if not (length.isascii() and length.isdigit()):  # "²" is a digit to isdigit
            raise ProtocolError(f"bad content-length: {length[:40]!r}")
        return _read_exactly(conn, body, int(length), deadline_at)
    _read_to_close(conn, body, deadline_at)
    return False  # the server's close ended the body


def exchange(conn: Conn, request: bytes, deadline_at: float, limit: int) -> Response:
    """Send `request` and read its answer: the final status, headers and a capped body.

    Raises `DeadlineExceeded`, `ProtocolError` or `OSError` until a status line is in;
    after that, a failure is the response's `error` (or `timed_out`), with what arrived."""
    conn.send(request, deadline_at)
    while True:
        status, version, headers = _read_head(conn, deadline_at)
        if not (100 <= status < 200 and status != 101):
            break  # 100 Continue and friends come before the real answer
    response = Response(status, headers)
    body = _Body(limit)
    ended = False
    try:
        ended = _read_body(conn, status, headers, body, deadline_at)
        response.complete = True
    except DeadlineExceeded:
        response.timed_out = True
    except (ProtocolError, OSError) as exc:
        response.error = f"connection failed: {type(exc).__name__}: {exc}"[:500]
    response.body, response.truncated = body.value()
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    response.reusable = ended and keep and not conn.buffer
    return response
