"""A fast HTTP/1.1 receiver for tests, benchmarks and the dev demo ("site B").

It runs an asyncio server in a background thread on 127.0.0.1, keeps connections alive,
and lets a test script its behaviour per request through `respond` (status codes,
Retry-After, redirects, slow or dripping answers that do not hold up other connections).

    python -m hookline.receiver --port 9000 --log received.tsv

runs it in the foreground for benchmarks in a separate process.
"""

from __future__ import annotations

import argparse
import asyncio
import http
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 32 * 1024 * 1024
_REASONS = {status.value: status.phrase for status in http.HTTPStatus}


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased; repeated headers joined with ", "
    body: bytes
    received_at: float  # time.time()


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait before answering, without holding up other connections
    drip_s: float = 0.0  # then send the whole answer one byte at a time, this far apart
    reset: bool = False  # answer nothing: abort the connection with an RST instead


_OK = Reply()


def render(reply: Reply, keep_alive: bool) -> bytes:
    """The bytes of an HTTP/1.1 response for `reply`."""
    lines = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Unknown')}"]
    lines.append(f"content-length: {len(reply.body)}")
    lines.extend(f"{name}: {value}" for name, value in reply.headers.items())
    if not keep_alive:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + reply.body


class _BadRequest(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Connection(asyncio.Protocol):
    """One client connection: parses pipelined requests and answers them in order."""

    def __init__(self, receiver: Receiver) -> None:
        self._receiver = receiver
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        # Answers wait here while an earlier, delayed one is still pending (HTTP/1.1 order).
        self._backlog: deque[tuple[bytes, Reply, bool]] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._receiver._opened(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._writer is not None:
            self._writer.cancel()
        if self._transport is not None:
            self._receiver._closed(self._transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while not self._closing:
            try:
                parsed = self._parse()
            except _BadRequest as exc:
                self._answer(render(Reply(exc.status), keep_alive=False), _OK, keep_alive=False)
                return
            if parsed is None:
                return
            received, keep_alive = parsed
            reply = self._receiver._handle(received)
            if reply.reset:
                self._reset()
                return
            self._answer(render(reply, keep_alive), reply, keep_alive)

    def _reset(self) -> None:
        self._closing = True
        assert self._transport is not None
        sock = self._transport.get_extra_info("socket")
        if sock is not None:  # SO_LINGER 0: the close sends an RST, as a crashed server would
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._transport.abort()

    def _parse(self) -> tuple[Received, bool] | None:
        """The next complete request in the buffer, or None until more bytes arrive."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise _BadRequest(431)
            return None
        lines = self._buffer[:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400)
        method, path, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise _BadRequest(400)
            name = name.lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if "transfer-encoding" in headers:
            raise _BadRequest(411)  # chunked uploads are not supported: send Content-Length
        length_text = headers.get("content-length", "0")
        if not length_text.isdigit():
            raise _BadRequest(400)
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            raise _BadRequest(413)
        start = end + 4
        if len(self._buffer) < start + length:
            return None
        body = bytes(self._buffer[start : start + length])
        del self._buffer[: start + length]
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.1":
            keep_alive = "close" not in connection
        else:
            keep_alive = "keep-alive" in connection
        return Received(method, path, headers, body, time.time()), keep_alive

    def _answer(self, data: bytes, reply: Reply, keep_alive: bool) -> None:
        if not keep_alive:
            self._closing = True
        if self._writer is None and reply.delay_s <= 0 and reply.drip_s <= 0:
            self._write(data, keep_alive)
            return
        self._backlog.append((data, reply, keep_alive))
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_backlog())

    def _write(self, data: bytes, keep_alive: bool) -> None:
        assert self._transport is not None
        if self._transport.is_closing():
            return
        self._transport.write(data)
        if not keep_alive:
            self._transport.close()  # after the buffered answer is flushed

    async def _write_backlog(self) -> None:
        assert self._transport is not None
        try:
            while self._backlog:
                data, reply, keep_alive = self._backlog.popleft()
                if reply.delay_s > 0:
                    await asyncio.sleep(reply.delay_s)
                if reply.drip_s > 0:
                    for offset in range(len(data) - 1):
                        if self._transport.is_closing():
                            return
                        self._transport.write(data[offset : offset + 1])
                        await asyncio.sleep(reply.drip_s)
                    data = data[-1:]
                self._write(data, keep_alive)
        finally:
            self._writer = None


class Receiver:
    """A real HTTP/1.1 server on a background thread; see the module docstring."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        respond: Callable[[Received], Reply] | None = None,
        keep: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls  # a server context: an https receiver (tests of TLS to the target)
        self.respond = respond
        self.keep = keep
        self.on_receive: Callable[[Received], None] | None = None
        self.connections = 0  # accepted in total: tells whether keep-alive was used
        self._received: list[Received] = []
        self._count = 0
        self._changed = threading.Condition()
        self._open: set[asyncio.Transport] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def received(self) -> list[Received]:
        """A snapshot of every request so far (empty when `keep` is False)."""
        with self._changed:
            return list(self._received)

    @property
    def count(self) -> int:
        with self._changed:
            return self._count

    def wait_for(self, count: int, timeout_s: float) -> bool:
        """True once `count` requests have arrived; False if `timeout_s` passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: self._count >= count, timeout_s)

    def start(self) -> Receiver:
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name="receiver", daemon=True
        )
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("receiver did not start within 10 s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = None
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    def __enter__(self) -> Receiver:
        return self.start() if self._thread is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            server = loop.run_until_complete(
                loop.create_server(
                    lambda: _Connection(self), self.host, self.port, backlog=4096,
                    reuse_address=True, ssl=self.tls,
                )
            )  # fmt: skip
            self.port = int(server.sockets[0].getsockname()[1])
        except BaseException as exc:
            self._error = exc
            loop.close()
            ready.set()
            return
        self._loop = loop
        ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            for transport in list(self._open):
                transport.abort()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending))
            loop.run_until_complete(server.wait_closed())
            loop.close()

    def _opened(self, transport: asyncio.Transport) -> None:
        self._open.add(transport)
        self.connections += 1

    def _closed(self, transport: asyncio.Transport) -> None:
        self._open.discard(transport)

    def _handle(self, received: Received) -> Reply:
        with self._changed:
            self._count += 1
            if self.keep:
                self._received.append(received)
            self._changed.notify_all()
        try:
            if self.on_receive is not None:
                self.on_receive(received)
            return self.respond(received) if self.respond is not None else _OK
        except Exception as exc:
            # A test's script raised: answer 500 so the failure shows on both sides.
            return Reply(500, f"receiver callback failed: {exc!r}".encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hookline.receiver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--status", type=int, default=200, help="status of every answer")
    parser.add_argument("--delay-s", type=float, default=0.0, help="wait before answering")
    parser.add_argument("--log", type=Path, help="write webhook-id<TAB>received_at on exit")
    parser.add_argument("--every-s", type=float, default=5.0, help="print the count this often")
    args = parser.parse_args(argv)

    arrivals: list[tuple[str, float]] = []
    reply = Reply(args.status, delay_s=args.delay_s)
    receiver = Receiver(host=args.host, port=args.port, respond=lambda _: reply, keep=False)
    if args.log is not None:
        receiver.on_receive = lambda r: arrivals.append(
            (r.headers.get("webhook-id", ""), r.received_at)
        )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    receiver.start()
    print(f"receiver listening on {receiver.url}", flush=True)
    last_count, last_at = 0, time.monotonic()
    while not stop.wait(args.every_s):
        count, now = receiver.count, time.monotonic()
        rate = (count - last_count) / (now - last_at)
        print(f"received {count} ({rate:.0f}/s)", flush=True)
        last_count, last_at = count, now
    receiver.stop()
    if args.log is not None:
        args.log.write_text("".join(f"{wid}\t{at:.6f}\n" for wid, at in arrivals))
    print(f"received {receiver.count} in total", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
