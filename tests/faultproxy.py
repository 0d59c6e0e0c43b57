"""A TCP fault proxy for tests: sits between a Hookline process and RabbitMQ or PostgreSQL
and breaks the network on demand (toxiproxy is not available here).

One accepting thread, and one thread per proxied connection that pumps both directions.
Switches act on live connections as well as new ones:

- `latency(s)`: every chunk waits `s` seconds before it is forwarded;
- `blackhole()`: connections are accepted and held, nothing is forwarded either way (a
  partition: the peers see silence, not an error);
- `reset_all()`: every current connection is closed with an RST (SO_LINGER 0);
- `cut_after(marker, *then)`: the first request that carries `marker` (and, after it, one
  carrying each of `then` in turn: the COMMIT of a transaction that wrote it) reaches the
  server, and its connection is reset when the answer comes, which the client never sees
  (a connection lost after the server did the work);
- `refuse()`: new connections are closed as soon as they are accepted;
- `heal()`: back to a plain pipe.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time
from types import TracebackType

CHUNK_BYTES = 65536
POLL_S = 0.05
CONNECT_TIMEOUT_S = 5.0


def _abort(sock: socket.socket) -> None:
    """Close with an RST rather than a FIN, as a crashed peer or a middlebox would."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    """Listens on 127.0.0.1:<free port> and forwards to `target_host:target_port`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._latency_s = 0.0
        self._blackholed = False
        self._refusing = False
        self._closed = threading.Event()
        self.accepted = 0  # connections accepted in total: shows that clients reconnected
        self._cut_markers: list[bytes] = []  # still to be seen, in order; the last is cut
        self.cuts = 0  # answers swallowed by `cut_after`
        self._thread = threading.Thread(target=self._accept_loop, name="faultproxy", daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._links)

    @property
    def latency_s(self) -> float:
        return self._latency_s

    @property
    def blackholed(self) -> bool:
        return self._blackholed

    def latency(self, seconds: float) -> None:
        self._latency_s = seconds

    def blackhole(self) -> None:
        self._blackholed = True

    def refuse(self) -> None:
        self._refusing = True

    def cut_after(self, marker: bytes, *then: bytes) -> None:
        with self._lock:
            self._cut_markers = [marker, *then]

    def claim_cut(self, data: bytes) -> bool:
        """Whether `data`, on its way to the server, carries the last marker still to be
        seen (once only; the markers before it must have come first)."""
        with self._lock:
            if not self._cut_markers or self._cut_markers[0] not in data:
                return False
            self._cut_markers.pop(0)
            return not self._cut_markers

    def heal(self) -> None:
        self._latency_s = 0.0
        self._blackholed = False
        self._refusing = False

    def reset_all(self) -> int:
        """RST every current connection; returns how many there were."""
        with self._lock:
            links, self._links = list(self._links), set()
        for link in links:
            link.abort()
        return len(links)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.reset_all()
        self._thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _accept_loop(self) -> None:
        self._listener.settimeout(POLL_S * 4)
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._refusing:
                _abort(client)
                continue
            link = _Link(self, client)
            with self._lock:
                self._links.add(link)
                self.accepted += 1
            link.start()


class _Link:
    """One proxied connection, pumped in both directions by one thread."""

    def __init__(self, proxy: FaultProxy, client: socket.socket) -> None:
        self._proxy = proxy
        self._client = client
        self._upstream: socket.socket | None = None
        self._aborted = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faultproxy-link", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def abort(self) -> None:
        self._aborted.set()
        _abort(self._client)
        if self._upstream is not None:
            _abort(self._upstream)

    def _run(self) -> None:
        try:
            # A blackholed proxy holds a new client without even reaching the target.
            while self._proxy.blackholed and not self._aborted.is_set():
                time.sleep(POLL_S)
            if self._aborted.is_set():
                return
            self._upstream = socket.create_connection(self._proxy.target, CONNECT_TIMEOUT_S)
            if self._aborted.is_set():  # aborted while connecting: the RST must reach both
                _abort(self._upstream)
                return
            self._pump(self._client, self._upstream)
        except OSError:
            pass
        finally:
            self._proxy.forget(self)
            if not self._aborted.is_set():
                for sock in (self._client, self._upstream):
                    if sock is not None:
                        with contextlib.suppress(OSError):
                            sock.close()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        cutting = False  # the request with the cut's marker went up: reset at its answer
        with selectors.DefaultSelector() as selector:
            selector.register(client, selectors.EVENT_READ)
            selector.register(upstream, selectors.EVENT_READ)
            while not self._aborted.is_set():
                if self._proxy.blackholed:
                    # Leave the bytes in the kernel buffers: they flow again after heal().
                    time.sleep(POLL_S)
                    continue
                for key, _ in selector.select(POLL_S):
                    source = key.fileobj
                    assert isinstance(source, socket.socket)
                    data = source.recv(CHUNK_BYTES)
                    if not data:
                        return
                    if source is upstream and cutting:
                        self._proxy.cuts += 1
                        self.abort()  # the answer is swallowed: the client sees a reset
                        return
                    if source is client and self._proxy.claim_cut(data):
                        cutting = True
                    delay_s = self._proxy.latency_s
                    if delay_s > 0:
                        time.sleep(delay_s)
                    peers[source].sendall(data)
