"""The two private pika members the publisher relies on (frames.py explains why it writes
its own frames). Pinned pika (==1.4.4) has them; `.ci/pika-canary` runs this file and the
transport suite against the newest pika, so a release that drops them is known early."""

from __future__ import annotations

import inspect

import pika
from pika.connection import Connection


def test_the_connection_still_has_the_private_members_the_publisher_uses() -> None:
    assert callable(getattr(Connection, "_output_marshaled_frames", None))
    assert list(inspect.signature(Connection._output_marshaled_frames).parameters) == [
        "self",
        "marshaled_frames",
    ]
    # `_body_max_length` is set per connection from the negotiated frame size.
    source = inspect.getsource(Connection)
    assert "self._body_max_length" in source
    assert issubclass(pika.SelectConnection, Connection)
