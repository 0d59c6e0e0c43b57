"""AMQP 0-9-1 framing of a publish (section 4.2.3), written here rather than by pika's
`basic_publish`, which builds and marshals three frame objects per message: that was about
60 % of a batch's CPU. `tests/transport/test_rabbitmq.py` checks these bytes against pika's
own marshalling."""

from __future__ import annotations

import struct

import pika
from pika import spec
from pika.data import encode_table

from common.transport.base import Outgoing

_FRAME_METHOD, _FRAME_HEADER, _FRAME_BODY = spec.FRAME_METHOD, spec.FRAME_HEADER, spec.FRAME_BODY
_FRAME_END = bytes((spec.FRAME_END,))
_PUBLISH = struct.pack(">IH", spec.Basic.Publish.INDEX, 0)  # method id, ticket 0
_CONTENT_TYPE = b"\x10application/json"
_HAS_CONTENT_TYPE, _HAS_HEADERS, _HAS_DELIVERY_MODE = 1 << 15, 1 << 13, 1 << 12
_HAS_CORRELATION_ID, _HAS_MESSAGE_ID = 1 << 10, 1 << 7
_PERSISTENT = bytes((pika.DeliveryMode.Persistent.value,))
_METHOD_CACHE_SIZE = 4096  # distinct (exchange, routing key) pairs kept pre-marshalled


def _short(value: str) -> bytes:
    encoded = value.encode()
    if len(encoded) > 255:
        raise ValueError(f"short string longer than 255 bytes: {value[:40]!r}...")
    return bytes((len(encoded),)) + encoded


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + _FRAME_END


class Frames:
    """Marshals one publish (Basic.Publish, content header, body frames) as pika would, with
    the method frame of each exchange and routing key built once."""

    def __init__(self, channel: int, body_max: int) -> None:
        self._channel = channel
        self._body_max = body_max
        self._methods: dict[tuple[str, str], bytes] = {}

    def publish(self, message: Outgoing, correlation_id: str) -> bytes:
        """The frames of one persistent, mandatory message; raises if it cannot be (a short
        string over 255 bytes, a header value AMQP cannot carry)."""
        key = (message.exchange, message.routing_key)
        method = self._methods.get(key)
        if method is None:
            payload = _PUBLISH + _short(key[0]) + _short(key[1]) + b"\x01"  # mandatory
            method = _frame(_FRAME_METHOD, self._channel, payload)
            if len(self._methods) >= _METHOD_CACHE_SIZE:
                self._methods.clear()
            self._methods[key] = method
        flags = _HAS_CONTENT_TYPE | _HAS_DELIVERY_MODE | _HAS_CORRELATION_ID
        parts = [b"", _CONTENT_TYPE]
        if message.headers:
            flags |= _HAS_HEADERS
            encode_table(parts, dict(message.headers))
        parts += (_PERSISTENT, _short(correlation_id))
        if message.message_id is not None:
            flags |= _HAS_MESSAGE_ID
            parts.append(_short(message.message_id))
        body = message.body
        parts[0] = struct.pack(">HxxQH", spec.BasicProperties.INDEX, len(body), flags)
        frames = [method, _frame(_FRAME_HEADER, self._channel, b"".join(parts))]
        for start in range(0, len(body), self._body_max):
            frames.append(_frame(_FRAME_BODY, self._channel, body[start : start + self._body_max]))
        return b"".join(frames)
