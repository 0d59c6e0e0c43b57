"""The egress proxy: deliveries and handshakes through a real CONNECT proxy on 127.0.0.1
(`tests/connectproxy.py`) in front of real receivers, plain and TLS."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from standardwebhooks import Webhook

from common.egress import parse_proxy
from common.settings import Settings
from common.signing import new_secret
from dispatcher.http import Sender, SendResult
from dispatcher.policy.retry import Verdict, decide
from hookline.receiver import Received, Receiver, Reply
from hookline.services.verification import handshake
from tests.api.test_handshake_tls import certificate
from tests.connectproxy import ConnectProxy
from tests.dispatcher.conftest import make_settings
from tests.dispatcher.http.test_client import endpoint, message

NAME = "hooks.example.test"
PASSWORD = "pr0xy-pa55word"


def to_localhost(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


def send_three(sender: Sender, url: str, secret: str) -> list[SendResult]:
    """Three deliveries to `url` from one sender (a kept-alive connection), then closed."""
    results = [sender.send(endpoint(url, secret=secret), message()) for _ in range(3)]
    sender.close()
    return results


@pytest.fixture
def tls_receiver(tmp_path: Path) -> Iterator[tuple[int, Path, list[str | None], list[Any]]]:
    """An HTTPS receiver on 127.0.0.1 with a certificate for NAME; it records each POST's
    headers and body, and echoes a handshake's challenge."""
    cert, key = certificate(tmp_path, NAME)
    names: list[str | None] = []
    posts: list[Any] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
            answer = json.dumps({"challenge": json.loads(body).get("challenge")}).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], cert, names, posts
    server.shutdown()
    server.server_close()


def test_a_plain_http_delivery_goes_through_a_tunnel_and_verifies() -> None:
    secret = new_secret()
    with ConnectProxy() as proxy, Receiver() as receiver:
        sender = Sender(make_settings(egress_proxy=proxy.url), resolver=to_localhost)
        results = send_three(sender, f"http://{NAME}:{receiver.port}/in", secret)
    assert [r.status_code for r in results] == [200, 200, 200], results[0].error
    # The tunnel names the checked address, not the name: the proxy cannot re-resolve it.
    assert proxy.requests == [("CONNECT", f"127.0.0.1:{receiver.port}")]
    assert proxy.tunnels == [("127.0.0.1", receiver.port)]  # one tunnel, kept alive
    got = receiver.received[0]
    assert got.headers["host"] == f"{NAME}:{receiver.port}"
    assert Webhook(secret).verify(got.body, got.headers)["type"] == "order.created"


def test_an_https_delivery_runs_tls_to_the_target_inside_the_tunnel(tls_receiver: Any) -> None:
    port, ca, names, posts = tls_receiver
    secret = new_secret()
    with ConnectProxy(auth=("hook", PASSWORD)) as proxy:
        settings = make_settings(egress_proxy=proxy.url_with("hook", PASSWORD))
        sender = Sender(settings, resolver=to_localhost, verify=str(ca))
        results = send_three(sender, f"https://{NAME}:{port}/hooks", secret)
    assert [r.status_code for r in results] == [200, 200, 200], results[0].error
    assert proxy.tunnels == [("127.0.0.1", port)]
    assert names == [NAME]  # SNI for the name, one TLS handshake for three POSTs
    headers, body = posts[0]
    assert headers["host"] == f"{NAME}:{port}"
    assert Webhook(secret).verify(body, headers)["type"] == "order.created"


def test_a_blocked_target_is_refused_before_any_connect() -> None:
    with ConnectProxy() as proxy, Receiver() as receiver:
        settings = make_settings(egress_proxy=proxy.url, allow_private_targets=False)
        sender = Sender(settings, resolver=to_localhost)
        result = sender.send(endpoint(f"https://{NAME}:{receiver.port}/in"), message())
        sender.close()
    assert result.unsafe and result.status_code is None
    assert (proxy.connections, proxy.requests, receiver.count) == (0, [], 0)


def test_wrong_proxy_credentials_fail_the_attempt_clearly_and_it_is_retried() -> None:
    with ConnectProxy(auth=("hook", PASSWORD)) as proxy, Receiver() as receiver:
        settings = make_settings(egress_proxy=proxy.url_with("hook", "wrong-" + PASSWORD))
        sender = Sender(settings, resolver=to_localhost)
        result = sender.send(endpoint(f"http://{NAME}:{receiver.port}/in"), message())
        sender.close()
    assert result.status_code is None and result.error is not None
    assert "egress proxy refused the tunnel: HTTP 407" in result.error
    assert PASSWORD not in result.error and "hook" not in result.error
    assert (proxy.tunnels, receiver.count) == ([], 0)
    assert decide(result.status_code, 1, (5.0,)).outcome is Verdict.RETRY


def test_an_unreachable_proxy_is_a_connection_failure_naming_the_proxy_only() -> None:
    with ConnectProxy() as closed:
        url = closed.url_with("hook", PASSWORD)  # nothing listens there once it has closed
    sender = Sender(make_settings(egress_proxy=url), resolver=to_localhost)
    result = sender.send(endpoint(f"http://{NAME}:1/in"), message())
    sender.close()
    assert result.error is not None and "cannot reach the egress proxy" in result.error
    assert PASSWORD not in result.error
    assert decide(result.status_code, 1, (5.0,)).outcome is Verdict.RETRY


def test_the_handshake_goes_through_the_proxy_plain_and_tls(tls_receiver: Any) -> None:
    port, ca, names, posts = tls_receiver
    with ConnectProxy(auth=("hook", PASSWORD)) as proxy, Receiver() as receiver:
        receiver.respond = _echo
        settings = Settings(
            allow_private_targets=True, egress_proxy=proxy.url_with("hook", PASSWORD)
        )
        tls = handshake(
            f"https://{NAME}:{port}/hooks", [new_secret()], {}, settings,
            resolver=to_localhost, verify_tls=str(ca),
        )  # fmt: skip
        plain = handshake(
            f"http://{NAME}:{receiver.port}/in", [new_secret()], {}, settings,
            resolver=to_localhost,
        )  # fmt: skip
    assert tls.verified, tls.detail
    assert plain.verified, plain.detail
    assert proxy.tunnels == [("127.0.0.1", port), ("127.0.0.1", receiver.port)]
    assert names == [NAME] and len(posts) == 1


def test_the_handshake_reports_a_refusing_proxy_without_its_credentials() -> None:
    with ConnectProxy(auth=("hook", PASSWORD)) as proxy, Receiver() as receiver:
        settings = Settings(allow_private_targets=True, egress_proxy=proxy.url_with("hook", "x"))
        outcome = handshake(
            f"http://{NAME}:{receiver.port}/in", [new_secret()], {}, settings,
            resolver=to_localhost,
        )  # fmt: skip
    assert not outcome.verified
    assert outcome.detail == (
        "the egress proxy refused the tunnel: HTTP 407 Proxy Authentication Required"
    )
    assert proxy.tunnels == [] and receiver.count == 0


def _echo(request: Received) -> Reply:
    challenge = json.loads(request.body)["challenge"]
    return Reply(200, json.dumps({"challenge": challenge}).encode())


def test_the_proxy_setting_parses_and_never_shows_its_password() -> None:
    proxy = parse_proxy("http://us%40er:p%3Ass@proxy.internal:3128")
    assert (proxy.host, proxy.port) == ("proxy.internal", 3128)
    assert proxy.authorization == "Basic dXNAZXI6cDpzcw=="  # us@er:p:ss
    assert "p:ss" not in repr(proxy) and str(proxy) == "http://proxy.internal:3128"
    settings = Settings(egress_proxy=f"http://u:{PASSWORD}@proxy.internal:3128")
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump())
    assert Settings(egress_proxy="").proxy is None


@pytest.mark.parametrize(
    "url",
    [
        f"ftp://u:{PASSWORD}@proxy.internal:3128",
        f"http://u:{PASSWORD}@proxy.internal",
        f"http://u:{PASSWORD}@proxy.internal:3128/path",
        f"socks5://u:{PASSWORD}@proxy.internal:1080",
    ],
)
def test_a_malformed_proxy_setting_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(egress_proxy=url)
    assert PASSWORD not in str(caught.value)
