"""The verification handshake: proof that whoever answers at a URL wants its webhooks.

Hookline POSTs a signed `{"type": "webhook.verification", "challenge": "<random>"}` to the
subscription's URL, with the subscription's static headers; the endpoint must answer 2xx
with `{"challenge": "<the same>"}`. The request goes through the SSRF guard and to the
address it checked (the name stays in Host, SNI and the certificate check), follows no
redirect, reads a bounded answer and ends at a deadline for the whole exchange (a server
that drips its answer cannot hold the API request longer), like every webhook: it is sent
by the dispatcher's own HTTP client, through the egress proxy when one is set.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from common.errors import UnsafeTargetError
from common.settings import Settings
from common.ssrf import Resolver, check_url
from common.wire import new_id
from dispatcher.http import (
    DeadlineExceeded,
    Pool,
    ProtocolError,
    ProxyError,
    build_headers,
    request_bytes,
    request_target,
    tls_context,
)

VERIFICATION_TYPE = "webhook.verification"
MAX_ANSWER_BYTES = 16 * 1024
# A handshake runs inside an API request: it must not hold it as long as a webhook may.
MAX_HANDSHAKE_S = 10.0


@dataclass(frozen=True)
class Outcome:
    verified: bool
    detail: str


def _echoed(raw: bytes, challenge: str) -> bool:
    try:
        answer = json.loads(raw)
    except (ValueError, RecursionError):  # the receiver's bytes: nested past the parser too
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
    started = time.monotonic()
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
    headers = build_headers(static_headers, msg_id, timestamp, body, keys)
    path, host = request_target(target)
    try:
        request = request_bytes(path, host, headers, body)
    except ValueError as exc:
        return Outcome(False, f"the request cannot be sent: {exc}")
    total_s = min(settings.request_timeout_s, MAX_HANDSHAKE_S)
    context = tls_context(verify_tls) if target.scheme == "https" else None
    pool = Pool(
        target.scheme, target.address, target.port, target.host,
        context=context, maxsize=1, proxy=settings.proxy,
    )  # fmt: skip
    late = f"the endpoint did not answer within {total_s:g} s"
    try:
        response = pool.request(
            request,
            connect_timeout_s=min(settings.connect_timeout_s, total_s),
            deadline_at=started + total_s,
            limit=MAX_ANSWER_BYTES,
        )
    except (DeadlineExceeded, TimeoutError):
        return Outcome(False, late)
    except ProxyError as exc:  # names the proxy and its status, never its credentials
        return Outcome(False, str(exc))
    except (ProtocolError, OSError) as exc:
        return Outcome(False, f"the endpoint did not answer: {type(exc).__name__}")
    finally:
        pool.close()
    if response.timed_out:
        return Outcome(False, late)
    if not 200 <= response.status < 300:
        return Outcome(False, f"the endpoint answered HTTP {response.status}, not 2xx")
    if response.error or response.truncated or not _echoed(response.body, challenge):
        return Outcome(False, 'the endpoint did not echo {"challenge": "<the challenge>"}')
    return Outcome(True, f"the endpoint echoed the challenge (HTTP {response.status})")
