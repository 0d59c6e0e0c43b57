"""An https:// egress proxy: TLS to the proxy (its certificate checked against
`HOOKLINE_EGRESS_PROXY_CA` or the system's CAs), CONNECT inside it, then TLS to an https
target inside that. Deliveries and handshakes go through a real CONNECT proxy served over
TLS on 127.0.0.1 (`tests/connectproxy.py`) to real receivers, plain and TLS, with
certificates made here (`tests/certs.py`); signatures are checked with `standardwebhooks`."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook

from common.db.statuses import DeliveryStatus
from common.settings import Settings
from common.signing import new_secret
from common.transport import MemoryTransport
from dispatcher.http import Sender
from dispatcher.policy.retry import Verdict, decide
from hookline.receiver import Received, Receiver, Reply
from hookline.services.verification import handshake
from tests.certs import Authority, server_context
from tests.connectproxy import ConnectProxy
from tests.dispatcher.conftest import Harness, make_settings, wait_until
from tests.dispatcher.http.test_client import endpoint, message
from tests.dispatcher.http.test_proxy import NAME, send_three, to_localhost
from tests.dispatcher.test_delivery import attempts, delivery_row, given_delivery

PASSWORD = "tl5-pr0xy-pa55word"


@dataclass
class Pki:
    proxy_ca: Authority  # vouches for the proxy
    receiver_ca: Authority  # vouches for the https receiver
    stranger: Authority  # vouches for nothing here
    folder: Path

    def proxy_context(self, ca: Authority | None = None, host: str = "127.0.0.1") -> Any:
        return server_context(*(ca or self.proxy_ca).issue(host))


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(
        Authority(tmp_path, "proxy CA"),
        Authority(tmp_path, "receiver CA"),
        Authority(tmp_path, "stranger CA"),
        tmp_path,
    )


@pytest.fixture
def proxy(pki: Pki) -> Iterator[ConnectProxy]:
    with ConnectProxy(auth=("hook", PASSWORD), tls=pki.proxy_context()) as running:
        yield running


@pytest.fixture
def tls_receiver(pki: Pki) -> Iterator[tuple[Receiver, list[str | None]]]:
    """An https receiver on 127.0.0.1 with a certificate for NAME; the SNI names it saw."""
    names: list[str | None] = []
    context = server_context(*pki.receiver_ca.issue(NAME))
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    with Receiver(tls=context, respond=_echo) as receiver:
        yield receiver, names


def _echo(request: Received) -> Reply:
    challenge = json.loads(request.body).get("challenge")
    return Reply(200, json.dumps({"challenge": challenge}).encode())


def through(proxy: ConnectProxy, pki: Pki, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "egress_proxy": proxy.url_with("hook", PASSWORD),
        "egress_proxy_ca": str(pki.proxy_ca.path),
    }
    return make_settings(**{**values, **overrides})


def test_an_http_delivery_goes_through_tls_to_the_proxy_and_verifies(
    proxy: ConnectProxy, pki: Pki
) -> None:
    secret = new_secret()
    with Receiver() as receiver:
        sender = Sender(through(proxy, pki), resolver=to_localhost)
        results = send_three(sender, f"http://{NAME}:{receiver.port}/in", secret)
    assert [r.status_code for r in results] == [200, 200, 200], results[0].error
    # One tunnel, kept alive, to the address the guard checked; no TLS refused.
    assert proxy.requests == [("CONNECT", f"127.0.0.1:{receiver.port}")]
    assert (proxy.tunnels, proxy.refused_tls) == ([("127.0.0.1", receiver.port)], 0)
    got = receiver.received[0]
    assert got.headers["host"] == f"{NAME}:{receiver.port}"
    assert Webhook(secret).verify(got.body, got.headers)["type"] == "order.created"


def test_an_https_delivery_runs_tls_to_the_target_inside_tls_to_the_proxy(
    proxy: ConnectProxy, pki: Pki, tls_receiver: tuple[Receiver, list[str | None]]
) -> None:
    receiver, names = tls_receiver
    secret = new_secret()
    sender = Sender(through(proxy, pki), resolver=to_localhost, verify=str(pki.receiver_ca.path))
    results = send_three(sender, f"https://{NAME}:{receiver.port}/hooks", secret)
    assert [r.status_code for r in results] == [200, 200, 200], results[0].error
    assert proxy.tunnels == [("127.0.0.1", receiver.port)]
    assert names == [NAME]  # SNI for the target's name: one inner handshake for three POSTs
    got = receiver.received
    assert len(got) == 3 and got[0].headers["host"] == f"{NAME}:{receiver.port}"
    assert all(Webhook(secret).verify(r.body, r.headers)["type"] == "order.created" for r in got)


def test_the_inner_tls_checks_the_target_certificate_too(
    proxy: ConnectProxy, pki: Pki, tls_receiver: tuple[Receiver, list[str | None]]
) -> None:
    receiver, _ = tls_receiver
    # The proxy is trusted; the target's certificate is not (its CA is not the one given).
    sender = Sender(through(proxy, pki), resolver=to_localhost, verify=str(pki.stranger.path))
    result = sender.send(endpoint(f"https://{NAME}:{receiver.port}/hooks"), message())
    sender.close()
    assert result.status_code is None and result.error is not None
    assert "SSLCertVerificationError" in result.error and "egress proxy" not in result.error
    assert proxy.tunnels == [("127.0.0.1", receiver.port)] and receiver.count == 0


def test_the_handshake_goes_through_an_https_proxy_to_http_and_https_targets(
    proxy: ConnectProxy, pki: Pki, tls_receiver: tuple[Receiver, list[str | None]]
) -> None:
    tls, names = tls_receiver
    settings = through(proxy, pki)
    with Receiver(respond=_echo) as plain:
        over_tls = handshake(
            f"https://{NAME}:{tls.port}/hooks", [new_secret()], {}, settings,
            resolver=to_localhost, verify_tls=str(pki.receiver_ca.path),
        )  # fmt: skip
        over_http = handshake(
            f"http://{NAME}:{plain.port}/in", [new_secret()], {}, settings, resolver=to_localhost
        )
    assert over_tls.verified, over_tls.detail
    assert over_http.verified, over_http.detail
    assert proxy.tunnels == [("127.0.0.1", tls.port), ("127.0.0.1", plain.port)]
    assert names == [NAME] and tls.count == 1 and plain.count == 1


@pytest.mark.parametrize(
    ("signed_by", "name", "trusted", "why"),
    [
        ("stranger", "127.0.0.1", "proxy", "unable to get local issuer certificate"),
        ("proxy", "127.0.0.1", None, "unable to get local issuer certificate"),
        ("proxy", "proxy.elsewhere.test", "proxy", "IP address mismatch"),
    ],
    ids=["another-ca", "system-cas-only", "another-name"],
)
def test_a_proxy_the_ca_does_not_vouch_for_is_refused_and_nothing_is_sent(
    pki: Pki, signed_by: str, name: str, trusted: str | None, why: str
) -> None:
    authority = {"proxy": pki.proxy_ca, "stranger": pki.stranger}
    presented = pki.proxy_context(authority[signed_by], host=name)
    ca = str(pki.proxy_ca.path) if trusted else None
    with ConnectProxy(auth=("hook", PASSWORD), tls=presented) as proxy, Receiver() as receiver:
        settings = make_settings(egress_proxy=proxy.url_with("hook", PASSWORD), egress_proxy_ca=ca)
        sender = Sender(settings, resolver=to_localhost)
        result = sender.send(endpoint(f"http://{NAME}:{receiver.port}/in"), message())
        sender.close()
        checked = handshake(
            f"http://{NAME}:{receiver.port}/in", [new_secret()], {}, settings,
            resolver=to_localhost,
        )  # fmt: skip
    refusal = f"the egress proxy https://127.0.0.1:{proxy.port} failed the certificate check"
    assert result.status_code is None and result.error is not None
    assert refusal in result.error and why in result.error, result.error
    assert PASSWORD not in result.error and "hook" not in result.error
    assert decide(result.status_code, 1, (5.0,)).outcome is Verdict.RETRY
    assert not checked.verified and checked.detail.startswith(refusal), checked.detail
    # The TLS handshake was broken off before anything was sent: no CONNECT, no credentials.
    assert (proxy.refused_tls, proxy.requests, proxy.tunnels) == (2, [], [])
    assert receiver.count == 0


def test_a_blocked_target_is_refused_before_the_proxy_is_reached(
    proxy: ConnectProxy, pki: Pki
) -> None:
    with Receiver() as receiver:
        sender = Sender(through(proxy, pki, allow_private_targets=False), resolver=to_localhost)
        result = sender.send(endpoint(f"https://{NAME}:{receiver.port}/in"), message())
        sender.close()
    assert result.unsafe and result.status_code is None
    assert (proxy.connections, proxy.requests, receiver.count) == (0, [], 0)


def test_the_dispatcher_delivers_through_an_https_proxy_and_never_shows_its_password(
    pki: Pki, db: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    proxy = ConnectProxy(auth=("hook", PASSWORD), tls=pki.proxy_context())
    with proxy, Receiver() as receiver:
        wrong = Harness(
            through(proxy, pki, egress_proxy=proxy.url_with("hook", "x" + PASSWORD)),
            MemoryTransport(), db,
        )  # fmt: skip
        refused, _ = given_delivery(wrong, f"http://127.0.0.1:{receiver.port}/in")
        with wrong.running():
            wrong.publish(refused)
            wait_until(lambda: attempts(wrong, refused.delivery_id))
        right = Harness(through(proxy, pki), MemoryTransport(), db)
        sent, secret = given_delivery(right, f"http://127.0.0.1:{receiver.port}/in")
        with right.running():
            right.publish(sent)
            wait_until(
                lambda: delivery_row(right, sent.delivery_id).status == DeliveryStatus.SUCCEEDED
            )
    (first, *_) = attempts(wrong, refused.delivery_id)
    assert first.error == "connection failed: ProxyError: the egress proxy refused the tunnel: " \
        "HTTP 407 Proxy Authentication Required"  # fmt: skip
    (got,) = receiver.received
    assert Webhook(secret).verify(got.body, got.headers)["type"] == sent.event.type
    shown = [caplog.text, generate_latest(wrong.metrics.registry).decode()]
    shown += [generate_latest(right.metrics.registry).decode(), str(first.error)]
    assert not [text for text in shown if PASSWORD in text]


def test_the_https_proxy_setting_parses_and_never_shows_its_password(pki: Pki) -> None:
    ca = str(pki.proxy_ca.path)
    url = f"https://u:{PASSWORD}@proxy.internal:3129"
    settings = Settings(egress_proxy=url, egress_proxy_ca=ca)
    proxy = settings.proxy
    assert proxy is not None and (proxy.tls, proxy.ca_file, proxy.port) == (True, ca, 3129)
    assert str(proxy) == "https://proxy.internal:3129" and PASSWORD not in repr(proxy)
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump())
    assert Settings(egress_proxy="https://proxy.internal:3129").proxy.ca_file is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("proxy_url", "ca", "said"),
    [
        (f"http://u:{PASSWORD}@proxy.internal:3128", "proxy", "the egress proxy is not https://"),
        (None, "proxy", "HOOKLINE_EGRESS_PROXY is not"),
        (f"https://u:{PASSWORD}@proxy.internal:3129", "missing", "there is no file"),
        (f"https://u:{PASSWORD}@proxy.internal:3129", "garbage", "not a PEM bundle"),
    ],
)
def test_a_proxy_ca_that_cannot_serve_is_refused_at_start_in_words(
    pki: Pki, proxy_url: str | None, ca: str, said: str
) -> None:
    garbage = pki.folder / "garbage.pem"
    garbage.write_text("not a certificate")
    paths = {"proxy": pki.proxy_ca.path, "missing": pki.folder / "nope.pem", "garbage": garbage}
    with pytest.raises(ValidationError) as caught:
        Settings(egress_proxy=proxy_url, egress_proxy_ca=str(paths[ca]))
    assert said in str(caught.value) and PASSWORD not in str(caught.value)
