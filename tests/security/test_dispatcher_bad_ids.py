"""A delivery message whose ids or numbers the database would refuse is poison for its
own message only.

Delivery queues take messages from the router, and from whoever holds the broker's
credentials (an operator's tool, a resubmitted poison message). The dispatcher on real
PostgreSQL: a message whose id holds a NUL (PostgreSQL's text refuses it), whose attempt
overflows the attempts column, or whose first attempt's (or event's) time has no zone,
published before a good delivery: the bad one goes to poison as undecodable, the good one
is delivered, and the dispatcher's session does not end (which would hand every other
tenant's unsettled deliveries back to the broker, to be sent again).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from common.db.session import make_engine, make_sessionmaker
from common.transport import MemoryTransport
from common.transport import topology as tp
from hookline.receiver import Receiver
from tests.dispatcher.conftest import Harness, make_settings, wait_until
from tests.dispatcher.test_delivery import finished, given_delivery
from tests.security.postgres import database_url  # noqa: F401  (PostgreSQL, not SQLite)

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def harness(database_url: str) -> Iterator[Harness]:  # noqa: F811
    engine = make_engine(database_url)
    yield Harness(make_settings(), MemoryTransport(), make_sessionmaker(engine))
    engine.dispose()


BAD: dict[str, dict[str, Any]] = {
    "NUL in the subscription id": {"subscription_id": "sub_\u0000x"},
    "NUL in the delivery id": {"delivery_id": "dlv_\u0000x"},
    "NUL in the event id": {"event_id": "evt_\u0000x"},
    "NUL in the tenant": {"tenant": "ten_\u0000x"},
    "an attempt past the column": {"attempt": 2**40},
    "a first attempt without a zone": {"first_attempt_at": "2026-12-01T00:00:00"},
    "a first attempt before year 1 in UTC": {"first_attempt_at": "0001-01-01T00:00:00+14:00"},
    # Not for the database: the settler's e2e metric subtracted it from the clock after the
    # ack, and the TypeError ended the session all the same.
    "an event time without a zone": {"event": {"timestamp": "2026-12-01T00:00:00"}},
}


@pytest.mark.parametrize("fields", BAD.values(), ids=BAD.keys())
def test_a_delivery_message_the_database_would_refuse_is_poison_alone(
    harness: Harness, fields: dict[str, Any]
) -> None:
    with Receiver() as receiver:
        good, _ = given_delivery(harness, receiver.url)
        bad = good.model_dump(mode="json")
        for key, value in fields.items():  # a dict changes some of the event's fields
            bad[key] = bad[key] | value if isinstance(value, dict) else value
        harness.publish_raw(json.dumps(bad).encode())
        harness.publish(good)
        with harness.running():  # re-raises what ended the session
            wait_until(lambda: finished(harness, good.delivery_id, "succeeded"))
            wait_until(lambda: harness.depth(tp.POISON) == 1)
    [(_, headers)] = harness.take(tp.POISON)
    assert headers[tp.H_REASON] == "undecodable"
    assert receiver.count == 1
