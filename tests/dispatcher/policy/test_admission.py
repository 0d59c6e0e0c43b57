"""Per-endpoint isolation as units: the circuit breaker, the lanes in front of the sending
pool, the gate, and the shared rate-limit windows (on SQLite and PostgreSQL)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker

from common.db.session import make_engine, make_sessionmaker
from common.metrics import Metrics
from dispatcher.http import SendResult
from dispatcher.policy.admission.breaker import STALE_S, Breaker, healthy
from dispatcher.policy.admission.gate import EndpointGate, in_flight_cap
from dispatcher.policy.admission.lanes import (
    PARK_BUDGET_S,
    PARK_LIMIT_FACTOR,
    SLOW_AFTER_S,
    SPEED_WEIGHT,
    Lanes,
)
from dispatcher.policy.admission.ratelimit import RateLimiter, plan
from dispatcher.subscriptions import Endpoint
from tests import builders
from tests.dispatcher.conftest import make_settings


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_only_a_timely_answer_below_500_other_than_429_counts_as_healthy() -> None:
    assert healthy(200, None) and healthy(404, None) and healthy(302, None)
    assert not healthy(500, None) and not healthy(429, None)
    assert not healthy(None, "timeout") and not healthy(200, "timeout: body incomplete")


def test_the_breaker_opens_after_the_threshold_and_half_opens_with_one_probe() -> None:
    clock = Clock()
    changes: list[int] = []
    breaker = Breaker(threshold=3, open_s=10.0, on_change=changes.append, clock=clock)
    for _ in range(2):
        breaker.record("e", False)
    assert breaker.admit("e") is None, "opened before the threshold"
    breaker.record("e", False)
    assert breaker.admit("e") == pytest.approx(10.0)
    assert changes == [1] and breaker.open_count == 1
    clock.now += 10.0
    assert breaker.admit("e") is None, "no probe after the open period"
    assert breaker.admit("e") is not None, "a second probe while the first is out"
    breaker.record("e", False)  # the probe failed: open again
    assert breaker.admit("e") == pytest.approx(10.0)
    clock.now += 10.0
    assert breaker.admit("e") is None
    breaker.record("e", True)  # the probe succeeded: closed
    assert breaker.admit("e") is None and breaker.admit("e") is None
    assert changes == [1, 0] and breaker.open_count == 0


def test_the_open_count_follows_several_circuits_through_re_opens_and_closes() -> None:
    """The count is kept as circuits open and close, not recounted: a re-open by a failed
    probe and an answer from an endpoint with no circuit leave it alone."""
    changes: list[int] = []
    breaker = Breaker(threshold=1, open_s=10.0, on_change=changes.append, clock=Clock())
    breaker.record("a", False)
    breaker.record("b", False)
    breaker.record("a", False)  # re-opened, still one circuit
    breaker.record("c", True)  # no circuit to close
    assert breaker.open_count == 2 and changes == [1, 2]
    breaker.record("b", True)
    breaker.record("b", True)
    breaker.record("a", True)
    assert breaker.open_count == 0 and changes == [1, 2, 1, 0]


def test_closed_for_tells_the_open_time_left_without_claiming_the_probe() -> None:
    clock = Clock()
    breaker = Breaker(threshold=1, open_s=10.0, clock=clock)
    assert breaker.closed_for("e") == 0.0
    breaker.record("e", False)
    clock.now += 4.0
    assert breaker.closed_for("e") == pytest.approx(6.0)
    clock.now += 6.0
    assert breaker.closed_for("e") == 0.0
    assert breaker.closed_for("e") == 0.0
    assert breaker.admit("e") is None, "asking took the probe"


def test_the_longest_open_circuit_counts_its_reopens_and_forgets_idle_ones() -> None:
    clock = Clock()
    breaker = Breaker(threshold=1, open_s=10.0, clock=clock)
    assert breaker.longest_open_s() == 0.0
    breaker.record("a", ok=False)
    clock.now += 10.0
    assert breaker.admit("a") is None  # the probe
    breaker.record("a", ok=False)  # fails: re-opened, still the same outage
    clock.now += 5.0
    breaker.record("b", ok=False)
    assert breaker.longest_open_s() == 15.0
    breaker.record("a", ok=True)
    assert breaker.longest_open_s() == 0.0  # only b, opened just now
    clock.now += 10.0 + STALE_S + 1  # nothing probed b since: no traffic goes there
    assert breaker.longest_open_s() == 0.0


def test_a_success_resets_the_count_of_failures() -> None:
    breaker = Breaker(threshold=2, open_s=10.0, clock=Clock())
    breaker.record("e", False)
    breaker.record("e", True)
    breaker.record("e", False)
    assert breaker.admit("e") is None
    assert breaker.admit("other") is None


class Pool:
    """Jobs as the lanes hand them to the sending pool, run when the test says so."""

    def __init__(self) -> None:
        self.jobs: list[Callable[[], None]] = []
        self.shards: list[str] = []  # the shard each job was handed over in

    def submit(self, job: Callable[[], None], shard: str) -> None:
        self.jobs.append(job)
        self.shards.append(shard)

    def run_one(self) -> None:
        self.jobs.pop(0)()


def test_lanes_run_up_to_the_cap_park_the_next_and_run_them_as_slots_free() -> None:
    pool, clock = Pool(), Clock()
    ran: list[int] = []
    deferred: list[int] = []
    lanes = Lanes(pool.submit, lambda _key: 2, clock=clock)
    for n in range(5):
        lanes.submit("e", functools.partial(ran.append, n), functools.partial(deferred.append, n))
    assert len(pool.jobs) == 2, "more than the cap on the pool"
    lanes.submit("other", lambda: ran.append(99), lambda: deferred.append(99))
    assert len(pool.jobs) == 3, "another endpoint waits behind a full one"
    for _ in range(6):
        pool.run_one()
    assert sorted(ran) == [0, 1, 2, 3, 4, 99] and deferred == []


def test_a_job_reaches_the_pool_in_the_shard_it_came_from_also_after_waiting_parked() -> None:
    pool, clock = Pool(), Clock()
    lanes = Lanes(pool.submit, lambda _key: 1, clock=clock)
    lanes.submit("e", lambda: None, lambda: None, "hookline.deliveries.3")
    lanes.submit("e", lambda: None, lambda: None, "hookline.deliveries.overflow")  # parked
    lanes.submit("f", lambda: None, lambda: None, "hookline.deliveries.5")
    assert pool.shards == ["hookline.deliveries.3", "hookline.deliveries.5"]
    pool.run_one()  # "e" frees its slot: the parked job follows, in its own shard
    assert pool.shards[-1] == "hookline.deliveries.overflow" and len(pool.jobs) == 2


def answered_once(lanes: Lanes, pool: Pool, clock: Clock, request_s: float = 1.0) -> None:
    """Endpoint "e" answers one request in `request_s`: its lane has a speed from now on."""
    lanes.submit("e", lambda: None, lambda: None)
    clock.now += request_s
    pool.run_one()
    assert not pool.jobs


def test_a_lane_parks_up_to_four_times_its_cap_or_the_floor_then_defers() -> None:
    for floor, parked in ((0, 8), (20, 20)):
        pool, clock = Pool(), Clock()
        deferred: list[int] = []
        lanes = Lanes(pool.submit, lambda _key: 2, park_floor=floor, clock=clock)
        answered_once(lanes, pool, clock)  # slow: 1 s a request
        for n in range(2 + parked + 3):
            lanes.submit("e", lambda: None, functools.partial(deferred.append, n))
        assert len(pool.jobs) == 2
        assert deferred == list(range(2 + parked, 2 + parked + 3)), (floor, deferred)


def test_the_park_bound_holds_per_shard_as_the_prefetch_windows_do() -> None:
    """A burst coming from its own shard and the overflow shard parks up to the bound from
    each (each has its own window); a slot freed takes the oldest parked, whichever shard,
    and the count of its shard goes down with it."""
    pool, clock = Pool(), Clock()
    deferred: list[str] = []
    lanes = Lanes(pool.submit, lambda _key: 2, clock=clock)
    answered_once(lanes, pool, clock)
    bound = 2 * PARK_LIMIT_FACTOR
    for shard in ("own", "overflow"):
        for n in range(bound + (2 if shard == "own" else 0) + 1):
            lanes.submit(
                "e", lambda: None, functools.partial(deferred.append, f"{shard}{n}"), shard
            )
    assert len(pool.jobs) == 2  # the cap, taken by the first two of "own"
    assert deferred == [f"own{bound + 2}", f"overflow{bound}"]  # one past the bound in each
    pool.run_one()  # the oldest parked ("own") follows: "own" has room for one more
    lanes.submit("e", lambda: None, lambda: deferred.append("own again"), "own")
    lanes.submit("e", lambda: None, lambda: deferred.append("overflow again"), "overflow")
    assert deferred[2:] == ["overflow again"]


def test_a_lane_with_no_answer_yet_parks_its_burst_and_defers_it_once_it_turns_slow() -> None:
    """No speed to judge by before the first answer: the burst's first window parks whole
    instead of half of it going to a retry tier; if the endpoint hangs, all of it is deferred
    once its oldest request passes `SLOW_AFTER_S`, and what comes after at once."""
    pool, clock = Pool(), Clock()
    deferred: list[int] = []
    lanes = Lanes(pool.submit, lambda _key: 2, park_floor=8, clock=clock)
    for n in range(100):
        lanes.submit("e", lambda: None, functools.partial(deferred.append, n))
    assert len(pool.jobs) == 2 and deferred == []
    clock.now += SLOW_AFTER_S
    lanes.expire()
    assert deferred == list(range(2, 100))
    lanes.submit("e", lambda: None, lambda: deferred.append(100))
    assert deferred[-1] == 100 and len(pool.jobs) == 2


def lane_that_ran(pool: Pool, clock: Clock, request_s: float) -> Lanes:
    """Lanes with cap 2 whose endpoint "e" has finished requests of `request_s` each."""
    lanes = Lanes(pool.submit, lambda _key: 2, clock=clock)
    for _ in range(20):
        lanes.submit("e", lambda: None, lambda: None)
        clock.now += request_s
        pool.run_one()
    assert not pool.jobs
    return lanes


def test_a_fast_endpoint_parks_what_it_clears_in_the_budget_and_a_slow_one_the_fixed_bound() -> (
    None
):
    fixed = 2 * PARK_LIMIT_FACTOR
    # Binary fractions, so that the clock arithmetic is exact.
    for request_s, parked in ((1 / 512, int(2 * PARK_BUDGET_S * 512)), (0.5, fixed)):
        pool, clock = Pool(), Clock()
        lanes = lane_that_ran(pool, clock, request_s)
        deferred: list[int] = []
        for n in range(2 + parked + 3):
            lanes.submit("e", lambda: None, functools.partial(deferred.append, n))
        assert len(pool.jobs) == 2
        assert deferred == list(range(2 + parked, 2 + parked + 3)), (request_s, deferred[:3])


def test_a_few_slow_answers_amid_a_fast_stream_leave_a_window_parked() -> None:
    """A fast endpoint whose drain fills the window (128 parked) keeps it through three
    answers six times slower, as a contended CPU gives: the bound had dropped to 61 with
    them, and the rest went to the 5 s tier."""
    pool, clock = Pool(), Clock()
    lanes = lane_that_ran(pool, clock, 1 / 256)
    for _ in range(3):
        lanes.submit("e", lambda: None, lambda: None)
        clock.now += 6 / 256
        pool.run_one()
    deferred: list[int] = []
    for n in range(2 + 128):
        lanes.submit("e", lambda: None, functools.partial(deferred.append, n))
    assert deferred == [] and len(pool.jobs) == 2


def test_a_lane_that_turns_slower_gives_back_what_it_parked_beyond_its_new_bound() -> None:
    """Parked while fast, then answers slowly (not slow enough for `SLOW_AFTER_S`): the next
    `expire` defers the newest parked of each shard beyond the new bound, and the rest run."""
    pool, clock = Pool(), Clock()
    lanes = lane_that_ran(pool, clock, 1 / 512)
    deferred: list[str] = []
    for shard, count in (("own", 200), ("overflow", 50)):
        for n in range(count):
            defer = functools.partial(deferred.append, f"{shard}{n}")
            lanes.submit("e", lambda: None, defer, shard)
    assert deferred == [] and len(pool.jobs) == 2  # "own" 0 and 1 run, the rest park
    clock.now += 0.5
    pool.run_one()  # "own" 2 takes the freed slot
    average = 1 / 512 + SPEED_WEIGHT * (0.5 - 1 / 512)
    bound = max(2 * PARK_LIMIT_FACTOR, int(2 * PARK_BUDGET_S / average))
    assert bound < 50
    lanes.expire()
    assert deferred == [f"own{n}" for n in range(3 + bound, 200)] + [
        f"overflow{n}" for n in range(bound, 50)
    ]
    lanes.expire()  # nothing more: each shard holds its bound
    assert len(deferred) == (200 - 3 - bound) + (50 - bound)


def test_behind_a_slow_endpoint_the_parked_and_new_deliveries_are_deferred() -> None:
    pool, clock = Pool(), Clock()
    deferred: list[int] = []
    lanes = Lanes(pool.submit, lambda _key: 1, clock=clock)
    lanes.submit("e", lambda: None, lambda: deferred.append(0))
    lanes.submit("e", lambda: None, lambda: deferred.append(1))  # parked
    clock.now += SLOW_AFTER_S
    lanes.expire()
    assert deferred == [1]
    lanes.submit("e", lambda: None, lambda: deferred.append(2))
    assert deferred == [1, 2] and len(pool.jobs) == 1, "a thread was given to a slow endpoint"


def endpoint(**fields: object) -> Endpoint:
    values: dict[str, object] = {
        "id": "sub_1",
        "tenant_id": "t",
        "url": "http://x",
        "status": "active",
    }
    values.update(fields)
    return Endpoint(**values)  # type: ignore[arg-type]


def test_the_in_flight_cap_is_the_subscriptions_or_the_default_and_at_most_half_the_threads() -> (
    None
):
    settings = make_settings(dispatcher_concurrency=32, endpoint_max_in_flight=10)
    assert in_flight_cap(None, settings) == 10
    assert in_flight_cap(endpoint(max_in_flight=3), settings) == 3
    assert in_flight_cap(endpoint(max_in_flight=100), settings) == 16
    assert in_flight_cap(None, make_settings(dispatcher_concurrency=1)) == 1


def test_the_gate_refuses_over_the_cap_and_while_the_circuit_is_open() -> None:
    metrics = Metrics(CollectorRegistry())
    settings = make_settings(circuit_failure_threshold=2, circuit_open_s=30.0)
    gate = EndpointGate(settings, metrics)
    one = endpoint(max_in_flight=1)
    assert gate.enter(one)
    assert not gate.enter(one) and gate.deferral_s() == 0.0
    gate.leave(one, SendResult(500, 0.1))
    assert gate.enter(one)
    gate.leave(one, SendResult(None, 0.1, "timeout"))
    assert gate.in_flight(one.id) == 0
    assert not gate.enter(one), "the circuit did not open"
    assert 29.0 < gate.deferral_s() <= 30.0
    assert metrics.circuit_open._value.get() == 1


@pytest.fixture
def db(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def given_subscription(db: sessionmaker[Session]) -> str:
    with db() as session, session.begin():
        tenant = builders.tenant(session)
        sub, _ = builders.subscription(session, tenant.id, "http://a.test")
        return sub.id


def test_a_rate_window_plan_claims_small_chunks() -> None:
    assert plan(100.0) == (1000, 100, 5)
    assert plan(20.0) == (1000, 20, 1)
    assert plan(0.5) == (2000, 1, 1)


def test_replicas_together_get_exactly_the_allowance_of_each_window(
    db: sessionmaker[Session],
) -> None:
    subscription_id = given_subscription(db)
    clock = Clock(5000.25)
    replicas = [RateLimiter(db, clock=clock) for _ in range(3)]
    granted = [0, 0, 0]
    for _ in range(40):
        for n, limiter in enumerate(replicas):
            if limiter.acquire(subscription_id, 20.0) is None:
                granted[n] += 1
    assert sum(granted) == 20 and min(granted) > 0
    refused = replicas[0].acquire(subscription_id, 20.0)
    assert refused == pytest.approx(0.75)  # until the next window
    clock.now += 1.0
    assert replicas[1].acquire(subscription_id, 20.0) is None, "a new window gave nothing"


def test_concurrent_claims_never_exceed_the_allowance(db: sessionmaker[Session]) -> None:
    subscription_id = given_subscription(db)
    clock = Clock(7000.0)
    replicas = [RateLimiter(db, clock=clock) for _ in range(4)]
    granted: list[int] = []
    lock = threading.Lock()

    def take(limiter: RateLimiter) -> None:
        for _ in range(60):
            if limiter.acquire(subscription_id, 100.0) is None:
                with lock:
                    granted.append(1)

    threads = [threading.Thread(target=take, args=(r,)) for r in replicas for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(granted) == 100
