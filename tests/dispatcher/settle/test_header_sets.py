"""Each attempt row names the headers its request went out with: one `header_sets` row per
shape, shared by every attempt and every dispatcher; the attempt's time is the time it was
signed. On SQLite and PostgreSQL (the settler's inserts differ)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import Attempt, HeaderSet
from common.signing import new_secret
from common.transport import MemoryTransport
from dispatcher.http import SendResult, build_headers, header_shape
from dispatcher.outcome import Attempted
from dispatcher.policy.retry import SUCCESS, DeadReason, dead
from tests.dispatcher.conftest import Harness, make_settings
from tests.dispatcher.settle.conftest import NOW, given, settler, taken

SIGNED_AT = NOW + timedelta(seconds=1, microseconds=250_000)


def _sent(static: dict[str, str], secrets: int = 1) -> SendResult:
    headers = build_headers(static, "evt_1", 0, b"{}", [new_secret() for _ in range(secrets)])
    return SendResult(200, 0.1, signed_at=SIGNED_AT, shape=header_shape(headers))


def _attempts(db: sessionmaker[Session]) -> dict[str, Attempt]:
    with db() as session:
        return {a.delivery_id: a for a in session.scalars(select(Attempt))}


def _sets(db: sessionmaker[Session]) -> dict[int, list[list[str | None]]]:
    with db() as session:
        return dict(session.execute(select(HeaderSet.id, HeaderSet.headers)).tuples().all())


def test_attempts_of_one_shape_share_a_row_and_a_new_shape_gets_its_own(
    db: sessionmaker[Session],
) -> None:
    harness = Harness(make_settings(), MemoryTransport(), db)
    plain_a, plain_b, rotating, refused = given(harness, 4)
    consumer, messages = taken(harness, 4)
    shapes = [_sent({"X-Key": "a"}), _sent({"X-Key": "b"}), _sent({"X-Key": "a"}, secrets=2)]
    refusal = SendResult(None, 0.0, "unsafe target: private address", unsafe=True)
    settler(harness, consumer).settle(
        [
            Attempted(messages[0], plain_a, SUCCESS, shapes[0], NOW),
            Attempted(messages[1], plain_b, SUCCESS, shapes[1], NOW),
            Attempted(messages[2], rotating, SUCCESS, shapes[2], NOW),
            Attempted(messages[3], refused, dead(DeadReason.UNSAFE_TARGET), refusal, NOW),
        ]
    )
    rows, sets = _attempts(db), _sets(db)
    assert len(sets) == 2
    first = rows[plain_a.delivery_id]
    assert first.header_set_id == rows[plain_b.delivery_id].header_set_id
    assert first.header_set_id is not None
    assert sets[first.header_set_id] == [list(pair) for pair in shapes[0].shape.headers]  # type: ignore[union-attr]
    third = rows[rotating.delivery_id].header_set_id
    assert third is not None and third != first.header_set_id
    assert ["webhook-signature", "v1 v1"] in sets[third]
    assert first.created_at == SIGNED_AT  # the webhook-timestamp it was sent with, whole
    nothing_sent = rows[refused.delivery_id]
    assert nothing_sent.header_set_id is None and nothing_sent.created_at == NOW


def test_another_dispatcher_meeting_a_known_shape_reuses_its_row(
    db: sessionmaker[Session],
) -> None:
    harness = Harness(make_settings(), MemoryTransport(), db)
    one, two = given(harness, 2)
    consumer, messages = taken(harness, 2)
    # Two settlers know nothing of each other: as two dispatcher processes.
    settler(harness, consumer).settle([Attempted(messages[0], one, SUCCESS, _sent({}), NOW)])
    settler(harness, consumer).settle([Attempted(messages[1], two, SUCCESS, _sent({}), NOW)])
    rows = _attempts(db)
    with db() as session:
        assert session.scalar(select(func.count()).select_from(HeaderSet)) == 1
    assert rows[one.delivery_id].header_set_id == rows[two.delivery_id].header_set_id
