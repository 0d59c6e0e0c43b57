"""A tenant's requests in progress at once in an API process are bounded
(`max_concurrent_requests`): however slow its requests are, one tenant cannot hold every
request thread and database connection that all tenants share.

Through a real uvicorn server on PostgreSQL: the test locks the `subscriptions` table, so
tenant A's subscription lists wait for it, as a slow query would. While two of them wait
(A's limit here), A's third request, by key or by its portal, is refused at once with 429;
tenant B's requests are answered meanwhile. Once the lock goes, A's waiting lists answer
and its places are free again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import requests
from sqlalchemy import text

from tests.api.support import ADMIN_TOKEN, Api, assert_error
from tests.isolation.conftest import serve, wait_until
from tests.security.postgres import database_url  # noqa: F401  (PostgreSQL, not SQLite)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PROMPT_S = 2.0
WAITING = text(
    "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'subscriptions'::regclass"
)


def waiting_for_the_lock(api: Api) -> int:
    """How many queries wait for a lock (the test's, on `subscriptions`)."""
    with api.engine.connect() as connection:
        found = connection.scalar(WAITING)
    return int(found or 0)


def portal_browser(api: Api, base: str, tenant_id: str) -> requests.Session:
    """A browser signed in to the tenant's portal through a fresh link."""
    minted = api.client.post("/v1/portal/links", json={"tenant_id": tenant_id}, headers=ADMIN)
    assert minted.status_code == 201, minted.text
    browser = requests.Session()
    path = minted.json()["url"].replace("http://testserver", "")
    assert browser.get(f"{base}{path}", timeout=10).status_code == 200
    return browser


def test_one_tenants_slow_requests_hold_at_most_its_places_and_nobody_elses(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(tenant_max_concurrent_requests=2)
    a_id, a_auth = api.tenant("a")
    _, b_auth = api.tenant("b")
    in_flight = api.app.state.services.in_flight
    with serve(api.app) as base, ThreadPoolExecutor(2) as pool:
        a_portal = portal_browser(api, base, a_id)

        def a_list() -> requests.Response:
            return requests.get(f"{base}/v1/subscriptions", headers=a_auth, timeout=30)

        with api.engine.connect() as holder:
            holder.execute(text("LOCK TABLE subscriptions IN ACCESS EXCLUSIVE MODE"))
            waiting = [pool.submit(a_list) for _ in range(2)]
            wait_until(lambda: waiting_for_the_lock(api) == 2)

            started = time.monotonic()
            third = requests.get(f"{base}/v1/deliveries", headers=a_auth, timeout=10)
            assert "2 requests in progress" in assert_error(third, 429, "concurrency_limited")
            assert third.headers["Retry-After"] == "1"
            page = a_portal.get(f"{base}/portal/endpoints", timeout=10)  # lists A's endpoints
            assert page.status_code == 429 and "text/html" in page.headers["content-type"]
            assert "2 requests in progress" in page.text
            other = requests.get(f"{base}/v1/deliveries", headers=b_auth, timeout=10)
            assert other.status_code == 200, other.text
            assert time.monotonic() - started < PROMPT_S
            assert not any(f.done() for f in waiting), "the lock did not hold A's lists"
            holder.rollback()  # the lock goes: A's lists read the table

        assert [f.result(timeout=10).status_code for f in waiting] == [200, 200]
        wait_until(lambda: in_flight.running(a_id) == 0)
        again = requests.get(f"{base}/v1/deliveries", headers=a_auth, timeout=10)
        assert again.status_code == 200, again.text
        assert a_portal.get(f"{base}/portal/endpoints", timeout=10).status_code == 200
    assert in_flight.running(a_id) == 0
