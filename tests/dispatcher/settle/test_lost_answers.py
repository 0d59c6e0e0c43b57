"""Answers the network loses after the database did the work: the settler retries in place
on a new connection, and stores each attempt once. PostgreSQL only (SQLite has no network);
`tests.faultproxy` cuts the answer."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import Attempt
from common.db.session import make_engine, make_sessionmaker
from common.db.statuses import DeliveryStatus
from common.metrics import Metrics
from common.transport import MemoryTransport
from common.transport import topology as tp
from common.wire import DeliveryMessage
from dispatcher.http import SendResult
from dispatcher.outcome import Attempted
from dispatcher.policy.retry import SUCCESS, Decision, Verdict
from dispatcher.settle import Settler
from tests.dispatcher.conftest import Harness, make_settings
from tests.dispatcher.settle.conftest import NOW, given, row, taken
from tests.faultproxy import FaultProxy


def settled_through_a_cut(
    database_url: str, harness: Harness, decision: Decision, result: SendResult, *markers: bytes
) -> tuple[DeliveryMessage, int]:
    """Settle one delivery's outcome through a fault proxy that cuts the answer to the
    request carrying the delivery's id (then each of `markers` in turn); the delivery, and
    how many answers the proxy cut."""
    [delivery] = given(harness, 1)
    consumer, [message] = taken(harness, 1)
    url = make_url(database_url)
    with FaultProxy("127.0.0.1", url.port or 5432) as proxy:
        engine = make_engine(url.set(host="127.0.0.1", port=proxy.port).render_as_string(False))
        settling = Settler(consumer, harness.transport, make_sessionmaker(engine),
                           Metrics(CollectorRegistry()), publish_timeout_s=5)  # fmt: skip
        # The id travels in the attempts' rows.
        proxy.cut_after(delivery.delivery_id.encode(), *markers)
        try:
            settling.settle([Attempted(message, delivery, decision, result, NOW)])
        finally:
            engine.dispose()
    consumer.close()  # nothing to give back when the message was acked
    return delivery, proxy.cuts


def stored_attempts(db: sessionmaker[Session]) -> list[tuple[str, int]]:
    with db() as session:
        return [(a.delivery_id, a.attempt) for a in session.scalars(select(Attempt))]


def test_a_statement_whose_answer_the_network_lost_after_it_landed_stores_its_attempt_once(
    database_url: str, db: sessionmaker[Session]
) -> None:
    """On PostgreSQL the common batch's statement runs in autocommit on the settler's own
    connection. Here it reaches the server and commits, then the connection drops before
    the answer comes back: the settler retries in place on a new connection, stores the
    attempt once (not a second time), and acks the message once."""
    if db.kw["bind"].dialect.name != "postgresql":
        pytest.skip("the settler's own connection is PostgreSQL's")
    harness = Harness(make_settings(), MemoryTransport(), db)
    delivery, cuts = settled_through_a_cut(database_url, harness, SUCCESS, SendResult(200, 0.1))
    assert cuts == 1, "no answer was lost: nothing was tested"
    assert stored_attempts(db) == [(delivery.delivery_id, 1)]
    assert row(db, delivery.delivery_id).status == DeliveryStatus.SUCCEEDED
    assert harness.depth(tp.DELIVERIES) == 0  # acked, once


def test_a_transaction_whose_commit_answer_the_network_lost_stores_its_attempt_once(
    database_url: str, db: sessionmaker[Session]
) -> None:
    """A batch with a failure is written in a transaction. Here its COMMIT reaches the server
    and commits, then the connection drops before the answer comes back: the settler's
    retry must find the attempt stored and not store it again, and the retry copy is
    published and the message acked once."""
    if db.kw["bind"].dialect.name != "postgresql":
        pytest.skip("a lost answer needs a network between the settler and its database")
    harness = Harness(make_settings(retry_schedule="1h"), MemoryTransport(), db)
    retry = Decision(Verdict.RETRY, delay_s=3600.0)
    # The COMMIT after the insert that carries the id is the request whose answer is cut.
    delivery, cuts = settled_through_a_cut(
        database_url, harness, retry, SendResult(500, 0.1), b"COMMIT"
    )
    assert cuts == 1, "no COMMIT's answer was lost: nothing was tested"
    assert stored_attempts(db) == [(delivery.delivery_id, 1)]
    assert row(db, delivery.delivery_id).status == DeliveryStatus.RETRYING
    assert harness.depth(tp.retry_queue(3600.0)) == 1
    assert harness.depth(tp.DELIVERIES) == 0  # acked, once
