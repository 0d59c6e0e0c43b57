"""The sender: headers, signatures, address pinning (http and https), deadline, gate."""

from __future__ import annotations

import datetime as dt
import http.server
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks import Webhook

from common.signing import new_secret
from common.ssrf import Target
from common.tracing import TraceContext
from common.wire import DeliveryMessage, Event
from dispatcher.http import (
    USER_AGENT,
    Pools,
    Sender,
    SendResult,
    build_headers,
    host_name,
    request_target,
    webhook_body,
)
from dispatcher.subscriptions import Endpoint
from hookline.receiver import Receiver, Reply
from tests.dispatcher.conftest import make_settings

NAME = "hooks.example.test"


def endpoint(url: str, **fields: Any) -> Endpoint:
    values: dict[str, Any] = {"secret": new_secret(), "status": "active"}
    values.update(fields)
    return Endpoint(id="sub_1", tenant_id="ten_1", url=url, **values)


def message() -> DeliveryMessage:
    event = Event(tenant="ten_1", type="order.created", operation="sync", data={"n": 1})
    return DeliveryMessage(
        delivery_id="dlv_1", event_id=event.id, tenant="ten_1", subscription_id="sub_1",
        attempt=1, event=event,
    )  # fmt: skip


def test_headers_are_signed_and_static_headers_cannot_replace_hookline_ones() -> None:
    secret = new_secret()
    body = b'{"type":"order.created"}'
    static = {
        "Authorization": "Bearer abc",
        "WEBHOOK-SIGNATURE": "v1,forged",
        "webhook-id": "forged",
        "Webhook-Timestamp": "1",
        "Content-Type": "text/plain",
        "User-Agent": "evil",
        "Host": "elsewhere",
        "Content-Length": "1",
        "Transfer-Encoding": "chunked",
    }
    headers = build_headers(static, "evt_1", int(time.time()), body, [secret])
    assert {k.lower() for k in headers} == {
        "authorization", "webhook-id", "webhook-timestamp", "webhook-signature",
        "content-type", "user-agent",
    }  # fmt: skip
    assert headers["webhook-id"] == "evt_1"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == USER_AGENT
    assert Webhook(secret).verify(body, headers) == {"type": "order.created"}


def test_the_trace_context_is_hookline_s_own_and_outside_the_signature() -> None:
    secret, body = new_secret(), b'{"type":"order.created"}'
    static = {"Traceparent": "00-forged", "TRACESTATE": "forged=1", "X-Token": "t"}
    context = TraceContext("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "v=1")

    now = int(time.time())
    traced = build_headers(static, "evt_1", now, body, [secret], context)
    untraced = build_headers(static, "evt_1", now, body, [secret])

    assert traced["traceparent"] == context.traceparent and traced["tracestate"] == "v=1"
    assert "Traceparent" not in traced and "TRACESTATE" not in traced
    assert {k.lower() for k in untraced} & {"traceparent", "tracestate"} == set()
    assert traced["webhook-signature"] == untraced["webhook-signature"]
    Webhook(secret).verify(body, traced)


def test_during_rotation_both_secrets_sign() -> None:
    current, previous = new_secret(), new_secret()
    now = dt.datetime.now(dt.UTC)
    rotating = endpoint("http://x", secret=current, previous_secret=previous,
                        previous_secret_expires_at=now + dt.timedelta(hours=1))  # fmt: skip
    expired = endpoint("http://x", secret=current, previous_secret=previous,
                       previous_secret_expires_at=now - dt.timedelta(seconds=1))  # fmt: skip
    assert rotating.secrets_at(now) == (current, previous)
    assert expired.secrets_at(now) == (current,)
    body = b"{}"
    headers = build_headers({}, "evt_1", int(time.time()), body, rotating.secrets_at(now))
    assert len(headers["webhook-signature"].split()) == 2
    Webhook(current).verify(body, headers)
    Webhook(previous).verify(body, headers)


def test_the_body_is_compact_json_of_the_webhook_body() -> None:
    event = message().event
    assert webhook_body(event) == (
        b'{"type":"order.created","timestamp":"'
        + event.timestamp.isoformat().replace("+00:00", "Z").encode()
        + b'","data":{"n":1},"operation":"sync"}'
    )


@pytest.mark.parametrize(
    ("target", "path", "host"),
    [
        (Target("http://a.test/h?x=1#f", "http", "a.test", 80, "10.0.0.1"), "/h?x=1", "a.test"),
        (Target("https://a.test:8443", "https", "a.test", 8443, "2001:db8::1"), "/",
         "a.test:8443"),
        (Target("http://[::1]:81/p", "http", "::1", 81, "::1"), "/p", "[::1]:81"),
    ],
)  # fmt: skip
def test_the_request_names_the_host_and_drops_the_fragment(
    target: Target, path: str, host: str
) -> None:
    assert request_target(target) == (path, host)
    assert host_name(host) == target.host


def test_the_request_goes_to_the_checked_address_not_a_new_lookup() -> None:
    lookups: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    sender = Sender(make_settings(), resolver=resolver)
    with Receiver() as receiver:
        url = f"http://{NAME}:{receiver.port}/in"
        result = sender.send(endpoint(url), message())
        sender.close()
    assert result.complete and result.status_code == 200
    assert lookups == [NAME]
    assert receiver.received[0].headers["host"] == f"{NAME}:{receiver.port}"


def test_connections_are_kept_alive_between_attempts() -> None:
    sender = Sender(make_settings())
    with Receiver() as receiver:
        for _ in range(5):
            assert sender.send(endpoint(receiver.url), message()).status_code == 200
        sender.close()
        assert receiver.connections == 1


def test_a_new_connection_waits_for_the_answer_as_long_as_the_request_timeout() -> None:
    # The connect timeout bounds the connect only: a slow answer on a fresh connection is
    # still awaited until the request's own deadline.
    sender = Sender(make_settings(connect_timeout_s=0.3, request_timeout_s=10))
    with Receiver(respond=lambda _request: Reply(200, delay_s=1.0)) as receiver:
        result = sender.send(endpoint(receiver.url), message())
        sender.close()
    assert (result.status_code, result.error) == (200, None)
    assert result.duration_s >= 1.0


def test_sending_threads_share_keep_alive_connections_up_to_one_each() -> None:
    sender = Sender(make_settings(dispatcher_concurrency=4))
    with Receiver() as receiver, ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda _: sender.send(endpoint(receiver.url), message()).status_code,
                              range(80)))  # fmt: skip
        sender.close()
        assert codes == [200] * 80
        assert 1 <= receiver.connections <= 4


def test_a_connection_the_receiver_closes_is_replaced_for_the_next_attempt() -> None:
    sender = Sender(make_settings())
    with Receiver() as receiver:
        receiver.respond = lambda r: Reply(200, headers={"connection": "close"})
        first = sender.send(endpoint(receiver.url), message())
        second = sender.send(endpoint(receiver.url), message())
        sender.close()
        assert (first.status_code, second.status_code) == (200, 200)
        assert receiver.connections == 2


def test_proxy_settings_in_the_environment_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{unused.getsockname()[1]}"  # nothing listens there
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy)
        monkeypatch.setenv("NO_PROXY", "")
        sender = Sender(make_settings())
        with Receiver() as receiver:
            result = sender.send(endpoint(receiver.url), message())
            sender.close()
    assert result.status_code == 200, result.error


def test_a_new_address_for_the_same_name_gets_its_own_pool() -> None:
    pools = Pools(verify=True, maxsize=2, max_pools=2)
    first = pools.get("https", "127.0.0.1", 443, NAME)
    assert pools.get("https", "127.0.0.1", 443, NAME) is first
    assert pools.get("https", "::1", 443, NAME) is not first
    assert pools.get("https", "127.0.0.1", 443, "other.test") is not first
    assert pools.get("https", "127.0.0.1", 443, NAME) is not first  # evicted as least recent
    pools.close()


def test_a_large_body_arrives_whole_and_verifies() -> None:
    secret = new_secret()
    event = Event(tenant="ten_1", type="order.created", data={"blob": "x" * 2_000_000})
    delivery = DeliveryMessage(delivery_id="dlv_big", event_id=event.id, tenant="ten_1",
                               subscription_id="sub_1", attempt=1, event=event)  # fmt: skip
    sender = Sender(make_settings())
    with Receiver() as receiver:
        result = sender.send(endpoint(receiver.url, secret=secret), delivery)
        sender.close()
        got = receiver.received[0]
    assert result.status_code == 200, result.error
    assert got.body == webhook_body(event)
    assert Webhook(secret).verify(got.body, got.headers)["data"]["blob"] == "x" * 2_000_000


def test_unsafe_targets_are_refused_before_connecting() -> None:
    sender = Sender(make_settings(allow_private_targets=False))
    with Receiver() as receiver:
        result = sender.send(endpoint(receiver.url), message())
        assert receiver.count == 0
    assert result.unsafe and result.status_code is None


def test_a_closed_gate_defers_without_sending() -> None:
    class Closed:
        def enter(self, endpoint: Endpoint) -> bool:
            return False

        def leave(self, endpoint: Endpoint, result: SendResult) -> None:
            raise AssertionError("leave without enter")

    sender = Sender(make_settings(), gate=Closed())
    with Receiver() as receiver:
        result = sender.send(endpoint(receiver.url), message())
        assert receiver.count == 0
    assert result.deferred


def test_a_refused_connection_is_a_failed_attempt() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        result = Sender(make_settings()).send(endpoint(f"http://127.0.0.1:{port}"), message())
    assert result.status_code is None
    assert result.error is not None and result.error.startswith("connection failed")


def test_an_exact_max_size_body_is_complete_and_one_more_byte_is_truncated() -> None:
    sender = Sender(make_settings(max_response_bytes=10))
    with Receiver() as receiver:
        receiver.respond = lambda r: Reply(200, b"x" * (10 if r.path == "/ten" else 11))
        exact = sender.send(endpoint(f"{receiver.url}/ten"), message())
        longer = sender.send(endpoint(f"{receiver.url}/eleven"), message())
        sender.close()
    assert (exact.body, exact.truncated, exact.complete) == (b"x" * 10, False, True)
    assert (longer.body, longer.truncated, longer.complete) == (b"x" * 10, True, True)


# --- https: a real TLS server on 127.0.0.1 with a certificate for NAME only ----------------


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path, list[str | None], list[str]]]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_names: list[str | None] = []
    hosts: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            hosts.append(self.headers["host"])
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], cert_file, server_names, hosts
    server.shutdown()
    server.server_close()


def test_https_is_pinned_yet_verified_and_named_for_the_host(tls_server: Any) -> None:
    port, ca_file, server_names, hosts = tls_server
    sender = Sender(make_settings(), resolver=lambda h, p: ["127.0.0.1"], verify=str(ca_file))
    result = sender.send(endpoint(f"https://{NAME}:{port}/hooks"), message())
    sender.close()
    assert result.complete and result.status_code == 204, result.error
    assert server_names == [NAME]
    assert hosts == [f"{NAME}:{port}"]


def test_https_refuses_a_certificate_for_another_name(tls_server: Any) -> None:
    port, ca_file, _, hosts = tls_server
    sender = Sender(make_settings(), resolver=lambda h, p: ["127.0.0.1"], verify=str(ca_file))
    result = sender.send(endpoint(f"https://other.example.test:{port}/hooks"), message())
    sender.close()
    assert result.status_code is None
    assert result.error is not None and "Hostname mismatch" in result.error
    assert hosts == []


def test_https_refuses_a_certificate_no_trusted_authority_signed(tls_server: Any) -> None:
    port, _, _, hosts = tls_server
    sender = Sender(make_settings(), resolver=lambda h, p: ["127.0.0.1"])
    result = sender.send(endpoint(f"https://{NAME}:{port}/hooks"), message())
    sender.close()
    assert result.status_code is None
    assert result.error is not None and "certificate verify failed" in result.error
    assert hosts == []


def test_https_keeps_its_connection_alive_between_attempts(tls_server: Any) -> None:
    port, ca_file, server_names, hosts = tls_server
    sender = Sender(make_settings(), resolver=lambda h, p: ["127.0.0.1"], verify=str(ca_file))
    results = [sender.send(endpoint(f"https://{NAME}:{port}/hooks"), message()) for _ in range(3)]
    sender.close()
    assert [r.status_code for r in results] == [204, 204, 204]
    assert server_names == [NAME]  # one handshake: the connection was reused
    assert len(hosts) == 3
