"""Partitioned storage (issue 17): maintenance, the upgrade of a populated database, and
the router's idempotency under partitioning, on a PostgreSQL database of their own."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from common.db import keeper, migrate, partitions
from common.db.models import Attempt, Delivery, EventRow, on_its_day
from common.db.session import make_engine, make_sessionmaker
from common.db.statuses import DeliveryStatus
from common.ids import day_of, delivery_id_for, event_day, new_id
from common.wire import Event
from dispatcher.deadletters import DeadFilter, list_dead
from router.index import Target
from router.persist import persist_batch
from tests.services import temporary_database

TODAY = datetime.now(UTC).date()


def _days(engine: Engine, table: str = "deliveries") -> dict[date, str]:
    with engine.connect() as connection:
        return partitions.existing(connection, table)


def test_new_ids_carry_today_and_old_ids_carry_nothing() -> None:
    assert day_of(new_id("evt")) == TODAY
    assert day_of("evt_" + "a" * 24) is None  # a new_id of before
    assert day_of("dlv_" + "0" * 12 + "5" + "0" * 19) is None  # a uuid5 delivery id
    far = "evt_" + "0" * 12 + "7000" + "8" + "0" * 15  # carries 1970: not a partition day
    assert event_day(far, TODAY) == TODAY
    # 48 bits of milliseconds reach the year 10889, past what a date holds: no day.
    beyond = "evt_" + "f" * 12 + "7fff" + "8" + "f" * 15
    assert day_of(beyond) is None
    assert event_day(beyond, TODAY) == TODAY


def _hyphenated(identifier: str) -> str:
    """A new id's UUIDv7 as a producer's own id, printed as UUIDv7 libraries print it."""
    return str(uuid.UUID(identifier.rpartition("_")[2]))


CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _ulid(at: datetime, rest: str = "7ZBQRS2X3Y4W5V6T") -> str:
    """A ULID as a producer's library makes it: 48 bits of ms in ten characters, then 16."""
    ms, head = int(at.timestamp() * 1000), ""
    for _ in range(10):
        ms, digit = divmod(ms, 32)
        head = CROCKFORD[digit] + head
    return head + rest


def test_a_producers_uuidv7_carries_its_day_hyphenated_or_not_in_either_case() -> None:
    made = new_id("evt")
    for own in (_hyphenated(made), "order_" + _hyphenated(made).upper(), made.upper()):
        assert day_of(own) == TODAY == event_day(own, TODAY), own
    assert day_of(str(uuid.uuid4())) is None  # random: no time
    assert day_of(str(uuid.uuid1())) is None  # a time, but not one laid out as v7's
    assert day_of(_hyphenated(made).replace("-", "", 1) + "-") is None  # hyphens elsewhere
    assert day_of("-" + made[5:]) is None  # int() would read the sign as hex
    assert day_of("evt_" + made[4:16] + "7" + "g" * 19) is None  # not hex


def test_a_producers_ulid_carries_its_day_in_either_case() -> None:
    now = datetime.now(UTC)
    assert day_of("01ARZ3NDEKTSV4RRFFQ69G5FAV") == date(2016, 7, 30)  # the spec's example
    for own in (_ulid(now), "order_" + _ulid(now).lower()):
        assert day_of(own) == TODAY == event_day(own, TODAY), own
    assert day_of("8" + _ulid(now)[1:]) is None  # past 48 bits
    assert day_of(_ulid(now)[:-1] + "U") is None  # not in Crockford's alphabet
    assert day_of(_ulid(now)[:-1]) is None  # 25 characters
    assert day_of("7ZZZZZZZZZ" + _ulid(now)[10:]) is None  # past the year 9999


def test_maintenance_creates_days_ahead_and_drops_old_days_keeping_dead(engine: Engine) -> None:
    policy = keeper.Policy(timedelta(days=30), timedelta(days=90), ahead_days=3)
    old, older = TODAY - timedelta(days=40), TODAY - timedelta(days=100)
    with engine.begin() as connection:
        partitions.ensure(connection, [old, older, old + timedelta(days=1)])
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        for n, (status, day) in enumerate(
            [
                (DeliveryStatus.DEAD, old),
                (DeliveryStatus.SUCCEEDED, old),
                (DeliveryStatus.DEAD, older),
            ]
        ):
            event = EventRow(tenant_id="t", id=f"e{n}", type="x", timestamp=datetime.now(UTC),
                             data={}, day=day)  # fmt: skip
            delivery = Delivery(id=f"d{n}", tenant_id="t", event_id=f"e{n}", subscription_id="s",
                                event_type="x", status=status, day=day)  # fmt: skip
            attempt = Attempt(delivery_id=f"d{n}", attempt=1, outcome="x", duration_s=0, day=day)
            session.add_all([event, delivery, attempt])

    outcome = keeper.maintain(engine, policy, TODAY)

    assert outcome.ran
    for table in partitions.TABLES:
        days = _days(engine, table)
        assert {TODAY + timedelta(days=n) for n in range(4)} <= set(days)
        assert older not in days  # past the dead retention: gone whole
        assert days[old] == partitions.name(table, old, kept=True)
    assert old + timedelta(days=1) in outcome.dropped  # nothing dead there: gone at once
    assert outcome.trimmed == {old: 1, old + timedelta(days=1): 0}
    with sessions() as session:  # the dead one kept with its event and attempt, found by id
        assert session.get(Delivery, "d0") is not None
        assert session.get(EventRow, ("t", "e0")) is not None
        assert session.scalar(select(func.count()).select_from(Attempt)) == 1
        assert session.get(Delivery, "d1") is None and session.get(Delivery, "d2") is None
    assert keeper.maintain(engine, policy, TODAY).trimmed == {}  # kept days are not trimmed again


def test_one_runner_at_a_time(engine: Engine) -> None:
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": keeper.LOCK_KEY})
        assert not keeper.maintain(engine, keeper.Policy()).ran
        holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": keeper.LOCK_KEY})
        holder.commit()
    results: list[bool] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        results.append(keeper.maintain(engine, keeper.Policy()).ran)

    threads = [threading.Thread(target=run) for _ in range(2)]
    [t.start() for t in threads]  # type: ignore[func-returns-value]
    [t.join() for t in threads]  # type: ignore[func-returns-value]
    assert True in results  # at least one ran; never both at once (the lock says so above)


def _explaining(connection: Connection, *settings: str) -> list[str]:
    """The plans of every statement `connection` runs from now on, as auto_explain logs
    them (one string each)."""
    plans: list[str] = []
    raw = connection.connection.dbapi_connection
    assert raw is not None
    raw.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
    for setting in ("LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0",
                    "SET auto_explain.log_level = notice", *settings):  # fmt: skip
        connection.exec_driver_sql(setting)
    return plans


def test_a_repeated_foreign_id_creates_nothing_on_a_later_day(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    event = Event(id="order-17", tenant="t", type="x")
    with sessions.begin() as session:
        # As if it was first routed yesterday: its row lives in yesterday's partition.
        session.add(EventRow(tenant_id="t", id=event.id, type="x", timestamp=event.timestamp,
                             data={}, day=TODAY - timedelta(days=1)))  # fmt: skip
    with sessions.begin() as session:
        assert persist_batch(session, [(event, [Target("sub_1", "t", ("x",))])]) == []
    mine = Event(tenant="t", type="x")  # an id that carries its day
    with sessions.begin() as session:
        assert len(persist_batch(session, [(mine, [Target("sub_1", "t", ("x",))])])) == 1
    with sessions.begin() as session:
        assert persist_batch(session, [(mine, [Target("sub_1", "t", ("x",))])]) == []
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 1
        (row,) = session.scalars(select(Delivery))
        assert row.day == TODAY == day_of(row.id)


def test_the_look_up_of_a_foreign_id_reads_each_day_by_key_in_a_generic_plan(
    engine: Engine,
) -> None:
    """The router's statement is prepared, and PostgreSQL soon plans it once for all
    parameters, guessing 100 rows for a batch. Written as `carried OR NOT EXISTS (...)` that
    plan read every events row of the day into a hash on every batch (2.8 ms for a lone
    event's statement with 6,000 events that day, up to 6,000 to 9,000); each id must be
    looked up by the (tenant_id, id) index instead, whatever the day holds."""
    sessions = make_sessionmaker(engine)
    target = [Target("sub_1", "t", ("x",))]
    for start in range(0, 3000, 500):
        with sessions.begin() as session:
            batch = [Event(id=f"fill-{start + n}", tenant="t", type="x") for n in range(500)]
            persist_batch(session, [(event, target) for event in batch])
    yesterday = Event(id="order-18", tenant="t", type="x")
    with sessions.begin() as session:
        session.add(EventRow(tenant_id="t", id=yesterday.id, type="x", data={}, day=TODAY -
                             timedelta(days=1), timestamp=yesterday.timestamp))  # fmt: skip
    with engine.connect() as connection:
        connection.exec_driver_sql("ANALYZE events")
        connection.commit()
    with engine.connect() as connection:
        plans = _explaining(connection, "SET plan_cache_mode = force_generic_plan")
        with Session(bind=connection) as session:
            fresh = [Event(id="order-19", tenant="t", type="x"), Event(tenant="t", type="x")]
            batch = [yesterday, *fresh]
            routed = persist_batch(session, [(event, target) for event in batch])
            session.commit()
    assert sorted(r.event.id for r in routed) == sorted(e.id for e in fresh)
    (plan,) = [p for p in plans if "Insert on events" in p]
    today = partitions.name("events", TODAY)
    assert "hashed SubPlan" not in plan
    assert f"Seq Scan on {today}" not in plan
    assert f"Index Only Scan using {today}_tenant_id_id_idx" in plan


@pytest.mark.parametrize("form", ["sdk", "uuidv7", "ulid"], ids=lambda f: f"{f}-id")
def test_a_batch_of_ids_that_carry_their_day_reads_no_other_partition(
    engine: Engine, form: str
) -> None:
    """Such a batch goes without the look-up: merely being in the statement, it opened every
    events partition's index on each statement, although `carried` skipped it row by row.
    A repeat is still refused by today's unique key alone. A producer's own UUIDv7 in its
    usual hyphenated form, or ULID, goes the same way."""
    with engine.begin() as connection:
        partitions.ensure(connection, [TODAY - timedelta(days=n) for n in range(1, 4)])
    sessions = make_sessionmaker(engine)
    target = [Target("sub_1", "t", ("x",))]
    first = Event(tenant="t", type="x")
    if form != "sdk":
        own = _hyphenated(first.id) if form == "uuidv7" else _ulid(datetime.now(UTC))
        first = Event(id=own, tenant="t", type="x")
    with sessions.begin() as session:
        assert len(persist_batch(session, [(first, target)])) == 1
    with engine.connect() as connection:
        plans = _explaining(connection)
        with Session(bind=connection) as session:
            fresh = Event(tenant="t", type="x")
            routed = persist_batch(session, [(first, target), (fresh, target)])
            session.commit()
        connection.commit()  # the session joined the connection's transaction
    assert [r.event.id for r in routed] == [fresh.id]  # the repeat created nothing
    (plan,) = [p for p in plans if "Insert on events" in p]
    for day in range(1, 4):
        assert partitions.name("events", TODAY - timedelta(days=day)) not in plan
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 2


def test_upgrade_of_a_populated_database_keeps_every_row() -> None:
    with temporary_database() as url:
        migrate.upgrade(url, "0010")
        engine = make_engine(url)
        then = datetime.now(UTC) - timedelta(days=5)
        with engine.begin() as c:
            for n in range(50):
                c.execute(text("INSERT INTO events (tenant_id, id, type, timestamp, data, "
                               "received_at) VALUES ('t', :id, 'x', :at, '{}', :at)"),
                          {"id": f"e{n}", "at": then})  # fmt: skip
                c.execute(text("INSERT INTO deliveries (id, tenant_id, event_id, subscription_id,"
                               " event_type, status, attempts, replay_count, created_at, "
                               "updated_at, finished_at) VALUES (:id, 't', :e, 's', 'x', :st, 1,"
                               " 0, :at, :at, :at)"),
                          {"id": f"dlv_{n}", "e": f"e{n}",
                           "st": DeliveryStatus.DEAD if n % 2 else DeliveryStatus.SUCCEEDED,
                           "at": then})  # fmt: skip
                c.execute(text("INSERT INTO attempts (delivery_id, attempt, outcome, duration_s,"
                               " created_at) VALUES (:d, 1, 'x', 0, :at)"),
                          {"d": f"dlv_{n}", "at": then})  # fmt: skip
        migrate.upgrade(url)
        sessions = make_sessionmaker(engine)
        with sessions() as session:
            for model in (EventRow, Delivery, Attempt):
                assert session.scalar(select(func.count()).select_from(model)) == 50
            dead = session.scalars(
                select(Delivery.id).where(Delivery.status == DeliveryStatus.DEAD)
            ).all()
            assert len(dead) == 25
            listed = list_dead(session, DeadFilter(tenant="t"), limit=100)  # as `dlq list`
            assert sorted(d.id for d in listed) == sorted(dead)
            old = session.get(Delivery, "dlv_1")  # an id without time: found all the same
            assert old is not None and old.day == then.date()
        with sessions.begin() as session:  # a repeat of an old event creates nothing
            repeat = Event(id="e3", tenant="t", type="x")
            assert persist_batch(session, [(repeat, [Target("s", "t", ("x",))])]) == []
        with engine.connect() as c:
            assert then.date() in partitions.existing(c, "deliveries")
        engine.dispose()


def test_lookups_by_id_find_ids_with_and_without_time(sessions: sessionmaker[Session]) -> None:
    new = delivery_id_for("t", "e1", "s", TODAY)
    old = "dlv_" + "1" * 12 + "5" + "1" * 19  # a uuid5 id of before 0011
    with sessions.begin() as session:
        for n, delivery_id in enumerate((new, old)):
            session.add(Delivery(id=delivery_id, tenant_id="t", event_id=f"e{n}",
                                 subscription_id="s", event_type="x"))  # fmt: skip
    with sessions() as session:
        for delivery_id in (new, old):
            query = select(Delivery).where(
                Delivery.id == delivery_id, *on_its_day(Delivery.day, delivery_id)
            )
            (found,) = session.scalars(query).all()
            assert found.day == TODAY


def test_the_keeper_leaves_sqlite_to_hookline_gc(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    thread = keeper.PartitionKeeper(engine, keeper.Policy(), interval_s=0.01)
    thread.start()
    thread.stop()
    assert not thread.is_alive() and thread.runs == 0 and thread.failure is None
    engine.dispose()


def test_a_trimmed_day_keeps_its_indexes_and_leaves_no_detached_table(engine: Engine) -> None:
    old = TODAY - timedelta(days=40)
    with engine.begin() as connection:
        partitions.ensure(connection, [old])
    with make_sessionmaker(engine).begin() as session:
        session.add_all([
            EventRow(tenant_id="t", id="e1", type="x", timestamp=datetime.now(UTC), data={},
                     day=old),
            Delivery(id="d1", tenant_id="t", event_id="e1", subscription_id="s", event_type="x",
                     status=DeliveryStatus.DEAD, day=old),
        ])  # fmt: skip
    # A run that died after its swap, before it dropped what it swapped out.
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE attempts_p20000101 (LIKE attempts)"))

    outcome = keeper.maintain(engine, keeper.Policy(), TODAY)

    assert outcome.trimmed == {old: 1}
    with engine.connect() as connection:
        assert partitions.detached(connection) == []  # the leftover and the swapped-out day

        def indexes(relname: str) -> list[str]:
            query = text("SELECT indexdef FROM pg_indexes WHERE tablename = :t")
            found = connection.execute(query, {"t": relname}).scalars()
            return sorted(d.replace(relname, "<part>") for d in found)

        for table in partitions.TABLES:  # built before the swap, attached, not rebuilt
            kept, plain = partitions.name(table, old, kept=True), partitions.name(table, TODAY)
            assert indexes(kept) == indexes(plain) != []


@pytest.mark.parametrize("parallel", [True, False])
def test_a_paced_drop_takes_the_indexes_first_and_leaves_nothing(
    engine: Engine, parallel: bool
) -> None:
    old = TODAY - timedelta(days=40)
    with engine.begin() as connection:
        partitions.ensure(connection, [old])
    with make_sessionmaker(engine).begin() as session:
        session.add(Delivery(id="d1", tenant_id="t", event_id="e1", subscription_id="s",
                             event_type="x", status=DeliveryStatus.SUCCEEDED, day=old))  # fmt: skip
    names = [partitions.name(table, old) for table in partitions.TABLES]

    dropped = partitions.drop(engine, old, parallel=parallel, pause_s=0.01)

    assert sorted(dropped) == sorted(names)
    with engine.connect() as connection:
        assert old not in partitions.existing(connection, "deliveries")
        left = text("SELECT relname FROM pg_class WHERE relname LIKE :p")
        assert connection.execute(left, {"p": f"%{old:%Y%m%d}%"}).scalars().all() == []
