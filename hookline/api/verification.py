"""The verification handshake: proof that whoever answers at a URL wants its webhooks.

Hookline POSTs a signed `{"type": "webhook.verification", "challenge": "<random>"}` to the
subscription's URL, with the subscription's static headers; the endpoint must answer 2xx
with `{"challenge": "<the same>"}`. The request goes through the SSRF guard and to the
address it checked (the name stays in Host, SNI and the certificate check), follows no
redirect and reads a bounded answer, like every webhook.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import certifi
import urllib3

from common import __version__
from common.errors import UnsafeTargetError
from common.settings import Settings
from common.signing import signature_header
from common.ssrf import Resolver, Target, check_url
from common.wire import new_id

VERIFICATION_TYPE = "webhook.verification"
MAX_ANSWER_BYTES = 16 * 1024
# A handshake runs inside an API request: it must not hold it as long as a webhook may.
MAX_HANDSHAKE_S = 10.0


@dataclass(frozen=True)
class Outcome:
    verified: bool
    detail: str


def _pool(target: Target, verify_tls: bool | str) -> urllib3.HTTPConnectionPool:
    """A pool for the checked address; TLS names and verifies the host, not the address."""
    if target.scheme == "https":
        ca_file = verify_tls if isinstance(verify_tls, str) else certifi.where()
        return urllib3.HTTPSConnectionPool(
            target.address,
            target.port,
            server_hostname=target.host,
            assert_hostname=target.host if verify_tls else False,
            cert_reqs="CERT_REQUIRED" if verify_tls else "CERT_NONE",
            ca_certs=ca_file if verify_tls else None,
            maxsize=1,
        )
    return urllib3.HTTPConnectionPool(target.address, target.port, maxsize=1)


def _host_header(target: Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.scheme == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


def _echoed(raw: bytes, challenge: str) -> bool:
    try:
        answer = json.loads(raw)
    except ValueError:
        return False
    return isinstance(answer, dict) and answer.get("challenge") == challenge


def handshake(
    url: str,
    keys: Sequence[str],
    static_headers: Mapping[str, str],
    settings: Settings,
    *,
    resolver: Resolver,
    verify_tls: bool | str = True,
) -> Outcome:
    """POST a fresh challenge to `url`, signed with `keys`; verified only on a true echo."""
    try:
        target = check_url(
            url,
            allow_private=settings.allow_private_targets,
            allow_http=settings.allow_http,
            resolver=resolver,
        )
    except UnsafeTargetError as exc:
        return Outcome(False, f"url refused: {exc}")
    challenge = secrets.token_urlsafe(24)
    body = json.dumps({"type": VERIFICATION_TYPE, "challenge": challenge}).encode()
    msg_id, timestamp = new_id("vrf"), int(time.time())
    headers = dict(static_headers)
    headers.update(
        {
            "host": _host_header(target),
            "content-type": "application/json",
            "user-agent": f"Hookline/{__version__}",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(keys, msg_id, timestamp, body),
        }
    )
    total_s = min(settings.request_timeout_s, MAX_HANDSHAKE_S)
    timeout = urllib3.Timeout(connect=min(settings.connect_timeout_s, total_s), read=total_s)
    pool = _pool(target, verify_tls)
    try:
        response = pool.urlopen(
            "POST", _path(url), body=body, headers=headers, redirect=False, retries=False,
            timeout=timeout, preload_content=False, assert_same_host=False,
        )  # fmt: skip
        raw = response.read(MAX_ANSWER_BYTES + 1, decode_content=False)
        response.release_conn()
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        return Outcome(False, f"the endpoint did not answer: {type(exc).__name__}")
    finally:
        pool.close()
    if not 200 <= response.status < 300:
        return Outcome(False, f"the endpoint answered HTTP {response.status}, not 2xx")
    if len(raw) > MAX_ANSWER_BYTES or not _echoed(raw, challenge):
        return Outcome(False, 'the endpoint did not echo {"challenge": "<the challenge>"}')
    return Outcome(True, f"the endpoint echoed the challenge (HTTP {response.status})")


def _path(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
