"""A statement of an API request runs at most `HOOKLINE_API_STATEMENT_TIMEOUT_S` on
PostgreSQL: a tenant's request that the database cannot answer in time (a slow query, or
one waiting on a lock) gives its connection back with 503 `query_timeout`, rather than
holding it, and a thread, for as long as the database takes. A purge is exempt: it must
finish however many dead letters it cancels.

The test holds a lock the request needs, as the slowest query would hold it up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, text

from common.db.session import make_engine, make_sessionmaker
from tests import builders
from tests.api.support import Api, assert_error
from tests.dead_letters import dead_letter
from tests.security.postgres import database_url  # noqa: F401  (PostgreSQL, not SQLite)

TIMEOUT_S = 0.5
HELD_S = 2.0


@pytest.fixture
def bounded(database_url: str, make_api: Callable[..., Api]) -> Iterator[Api]:  # noqa: F811
    """An app whose engine bounds statements as `hookline api`'s does."""
    engine = make_engine(database_url, statement_timeout_s=TIMEOUT_S)
    yield make_api(sessionmaker=make_sessionmaker(engine), api_statement_timeout_s=TIMEOUT_S)
    engine.dispose()


def locked_for(engine: Engine, lock: str, seconds: float) -> threading.Thread:
    """A thread holding the lock that `lock` takes for `seconds` (returned once taken)."""
    taken = threading.Event()

    def hold() -> None:
        with engine.connect() as connection:
            connection.execute(text(lock))
            taken.set()
            time.sleep(seconds)
            connection.rollback()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert taken.wait(10)
    return thread


def test_a_request_the_database_cannot_answer_in_time_is_answered_503(bounded: Api) -> None:
    _, auth = bounded.tenant("a")
    holder = locked_for(bounded.engine, "LOCK TABLE subscriptions IN ACCESS EXCLUSIVE MODE", HELD_S)
    started = time.monotonic()
    answer = bounded.client.get("/v1/subscriptions", headers=auth)
    took_s = time.monotonic() - started
    assert holder.is_alive(), "answered only once the lock went"
    message = assert_error(answer, 503, "query_timeout")
    assert f"within {TIMEOUT_S:g} s" in message
    assert TIMEOUT_S <= took_s < HELD_S
    holder.join()
    assert bounded.client.get("/v1/subscriptions", headers=auth).status_code == 200


def test_a_purge_runs_past_the_statement_timeout(bounded: Api) -> None:
    tenant_id, auth = bounded.tenant("a")
    with bounded.sessionmaker.begin() as session:
        sub, _ = builders.subscription(session, tenant_id, "http://127.0.0.1:9/a")
        dead = dead_letter(session, tenant_id, sub.id).id
    # The dead letter's row, so that its purge's count reads on and its update waits.
    row_lock = f"SELECT id FROM deliveries WHERE id = '{dead}' FOR UPDATE"
    holder = locked_for(bounded.engine, row_lock, HELD_S)
    started = time.monotonic()
    body = {"subscription_id": sub.id, "dry_run": False}
    answer = bounded.client.post("/v1/dead-letters/purge", json=body, headers=auth)
    assert answer.status_code == 200, answer.text
    assert answer.json()["purged"] == 1
    assert time.monotonic() - started >= HELD_S - 0.2  # it waited the lock out
    holder.join()
