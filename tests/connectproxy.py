"""A small HTTP CONNECT proxy for tests: a real threaded TCP server on 127.0.0.1 that
opens tunnels, counts them, and optionally demands `Proxy-Authorization: Basic`; given a
server TLS context it is an https:// proxy (TLS first, then CONNECT inside it).

    with ConnectProxy(auth=("hook", "s3cret")) as proxy:
        ... HOOKLINE_EGRESS_PROXY=proxy.url_with("hook", "s3cret") ...
        assert proxy.tunnels == [("127.0.0.1", port)]

It tunnels only to 127.0.0.1 (the tests never reach anywhere else) and answers 403 to any
other address.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import socketserver
import ssl
import threading
from types import TracebackType


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        proxy = self.server.proxy
        client: socket.socket = self.request
        client.settimeout(10)
        with proxy.lock:
            proxy.connections += 1
        if proxy.tls is not None:
            try:
                client = proxy.tls.wrap_socket(client, server_side=True)
            except (ssl.SSLError, OSError):
                with proxy.lock:
                    proxy.refused_tls += 1  # the client did not trust this proxy's certificate
                return
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(1)
            if not chunk:
                return
            head += chunk
        lines = head.decode("latin-1").split("\r\n")
        method, authority, _ = lines[0].split(" ", 2)
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
        }
        host, _, port = authority.rpartition(":")
        host = host.strip("[]")
        with proxy.lock:
            proxy.requests.append((method, authority))
        if method != "CONNECT":
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            return
        if proxy.expected is not None and headers.get("proxy-authorization") != proxy.expected:
            client.sendall(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'proxy-authenticate: Basic realm="test"\r\ncontent-length: 0\r\n\r\n'
            )
            return
        if host != "127.0.0.1":
            client.sendall(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
            return
        try:
            upstream = socket.create_connection((host, int(port)), timeout=5)
        except OSError:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            return
        with proxy.lock:
            proxy.tunnels.append((host, int(port)))
        client.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        client.settimeout(None)
        upstream.settimeout(None)
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join(timeout=5)
        upstream.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        # A TLS connection has no half-close: end it whole (its reader sees the end too).
        sink.shutdown(socket.SHUT_RDWR if isinstance(sink, ssl.SSLSocket) else socket.SHUT_WR)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: ConnectProxy


class ConnectProxy:
    def __init__(
        self, *, auth: tuple[str, str] | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        self.expected = (
            None if auth is None else "Basic " + base64.b64encode(":".join(auth).encode()).decode()
        )
        self.tls = tls
        self.lock = threading.Lock()
        self.connections = 0  # TCP connections accepted
        self.refused_tls = 0  # TLS handshakes the client broke off (it refused the certificate)
        self.requests: list[tuple[str, str]] = []  # (method, authority) as asked
        self.tunnels: list[tuple[str, int]] = []  # tunnels opened
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def url_with(self, user: str, password: str) -> str:
        return f"{self.scheme}://{user}:{password}@127.0.0.1:{self.port}"

    def __enter__(self) -> ConnectProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
