"""What an attempt records of its request headers: names in order, the values that carry
nothing secret, the signature's schemes; never a secret, a signature or a subscription's
own header value. Read back, it is what the receiver got, with those masked."""

from __future__ import annotations

import datetime as dt
import json

from common.signing import new_secret, new_signing_key
from common.wire import webhook_id_for
from dispatcher.http import MASK, USER_AGENT, Sender, build_headers, header_shape, headers_shown
from hookline.receiver import Receiver
from tests.dispatcher.conftest import make_settings
from tests.dispatcher.http.test_client import endpoint, message

SIGNED_AT = dt.datetime(2026, 12, 5, 21, 0, 7, 900_000, tzinfo=dt.UTC)


def test_a_shape_keeps_names_and_public_values_but_no_secret() -> None:
    secret, previous, key = new_secret(), new_secret(), new_signing_key()
    static = {"Authorization": "Bearer s3cr3t-token", "X-Tenant": "acme-internal"}
    stamp = int(SIGNED_AT.timestamp())
    headers = build_headers(static, "evt_1", stamp, b"{}", [secret, previous, key])
    shape = header_shape(headers)
    stored = json.dumps([list(pair) for pair in shape.headers])
    for secret_text in (secret, previous, key, "s3cr3t-token", "acme-internal", "evt_1"):
        assert secret_text not in stored
    assert headers["webhook-signature"].split(" ")[0] not in stored
    assert dict(shape.headers) == {
        "Authorization": None, "X-Tenant": None, "webhook-id": None,
        "webhook-timestamp": None, "webhook-signature": "v1 v1 v1a",
        "content-type": "application/json", "user-agent": USER_AGENT,
    }  # fmt: skip
    assert [name for name, _ in shape.headers] == list(headers)


def test_the_same_shape_has_the_same_digest_and_another_shape_another() -> None:
    one = build_headers({"X-A": "1"}, "evt_1", 1, b"{}", [new_secret()])
    same = build_headers({"X-A": "2"}, "evt_2", 2, b"[]", [new_secret()])
    rotating = build_headers({"X-A": "1"}, "evt_1", 1, b"{}", [new_secret(), new_secret()])
    renamed = build_headers({"X-B": "1"}, "evt_1", 1, b"{}", [new_secret()])
    digests = [header_shape(h).digest for h in (one, same, rotating, renamed)]
    assert digests[0] == digests[1]
    assert len(set(digests)) == 3


def test_read_back_an_attempt_shows_its_own_id_and_timestamp_and_masks_the_rest() -> None:
    headers = build_headers({"X-Api-Key": "k"}, "msg_9", 1, b"{}", [new_secret(), new_secret()])
    shown = dict(headers_shown(header_shape(headers).headers, "msg_9", SIGNED_AT))
    assert shown == {
        "X-Api-Key": MASK,
        "webhook-id": "msg_9",
        "webhook-timestamp": str(int(SIGNED_AT.timestamp())),
        "webhook-signature": f"v1,{MASK} v1,{MASK}",
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def test_a_sent_request_is_shown_as_the_receiver_got_it_masked() -> None:
    sender = Sender(make_settings(allow_http=True))
    with Receiver() as receiver:
        target = endpoint(f"http://127.0.0.1:{receiver.port}/in", headers={"X-Key": "hidden"})
        delivery = message()
        result = sender.send(target, delivery)
        sender.close()
    assert result.complete and result.shape is not None and result.signed_at is not None
    got = receiver.received[0].headers
    sent_id = webhook_id_for(delivery.tenant, delivery.event_id)
    shown = headers_shown(result.shape.headers, sent_id, result.signed_at)
    for name, value in shown:
        if value == MASK:
            assert name == "X-Key" and got["x-key"] == "hidden"
        elif name == "webhook-signature":
            assert value == f"v1,{MASK}" and got[name].startswith("v1,")
        else:
            assert got[name] == value, name  # the id, the timestamp, type, agent: as sent


def test_a_request_never_sent_has_no_shape() -> None:
    # The SSRF guard refuses a private address before anything is signed.
    sender = Sender(make_settings(allow_private_targets=False))
    result = sender.send(endpoint("http://127.0.0.1:9/in"), message())
    sender.close()
    assert result.unsafe and result.shape is None and result.signed_at is None
