"""The handshake over TLS: it connects to the checked address, but sends SNI for the name
and verifies the certificate against that name, with a real TLS server on 127.0.0.1."""

from __future__ import annotations

import datetime
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common.settings import Settings
from common.signing import new_secret
from hookline.services.verification import handshake

NAME = "receiver.test"


def certificate(tmp: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for `name` (it is its own CA) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = tmp / f"{name}.pem", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Echo(BaseHTTPRequestHandler):
    server_names: list[str | None]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        answer = json.dumps({"challenge": body["challenge"]}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def tls_receiver(tmp_path: Path) -> Iterator[tuple[int, Path, list[str | None]]]:
    cert, key = certificate(tmp_path, NAME)
    names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    server = HTTPServer(("127.0.0.1", 0), Echo)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], cert, names
    server.shutdown()
    server.server_close()


SETTINGS = Settings(allow_private_targets=True)


def to_localhost(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


def test_a_certificate_for_the_name_verifies_though_the_connection_goes_to_the_address(
    tls_receiver,
):
    port, ca, names = tls_receiver

    outcome = handshake(
        f"https://{NAME}:{port}/hooks", [new_secret()], {}, SETTINGS,
        resolver=to_localhost, verify_tls=str(ca),
    )  # fmt: skip

    assert outcome.verified, outcome.detail
    assert names == [NAME]


def test_an_untrusted_certificate_fails_the_handshake(tls_receiver):
    port, _, _ = tls_receiver

    outcome = handshake(
        f"https://{NAME}:{port}/hooks", [new_secret()], {}, SETTINGS, resolver=to_localhost
    )

    assert not outcome.verified
    assert "did not answer" in outcome.detail


def test_a_certificate_for_another_name_fails_the_handshake(tls_receiver, tmp_path):
    port, ca, _ = tls_receiver

    outcome = handshake(
        f"https://other.test:{port}/hooks", [new_secret()], {}, SETTINGS,
        resolver=to_localhost, verify_tls=str(ca),
    )  # fmt: skip

    assert not outcome.verified
