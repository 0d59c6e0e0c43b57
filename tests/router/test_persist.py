"""The router's hand-built encodings against the models they stand in for, and what its
writes keep of an event."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import EventRow
from common.errors import DecodeError
from common.ids import day_of
from common.wire import DeliveryMessage, Event, decode, delivery_id_for, encode
from router.messages import EventMessages
from router.persist import persist_batch

EVENTS = [
    Event(tenant="ten_a", type="order.created", data={"total": 12.5}),
    Event(tenant="ten_a", type="content.updated", operation="sync", data={}),
    # A tenant no id holds (ingest, the SDK and the router's decoding refuse it), built
    # unvalidated: the hand-built encoding escapes every string as the model would.
    Event.model_construct(
        tenant='tën "quoted" \\ \x01', type="a.b", data={"text": "ünïcode ✓", "n": [1, None]}
    ),
    Event(id="evt.with:colons-and_dots", tenant="t", type="x", data={"nested": {"deep": True}}),
]


@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("recheck", [False, True])
def test_delivery_message_body_is_byte_for_byte_the_encoded_model(
    event: Event, recheck: bool
) -> None:
    # Strings no id of Hookline's holds (quotes, controls, non-ASCII): the hand-built
    # encoding must escape them as the model does, whatever a dispatcher then makes of them.
    routed = EventMessages(event).to("dlv_0123", "sub_é9", recheck=recheck)
    model = DeliveryMessage.model_construct(
        delivery_id="dlv_0123", event_id=event.id, tenant=event.tenant,
        subscription_id="sub_é9", attempt=1, event=event,
    )  # fmt: skip
    assert routed.body == encode(model)
    assert (routed.delivery_id, routed.event, routed.recheck) == ("dlv_0123", event, recheck)


def test_a_routed_message_decodes_to_its_model_and_an_id_no_router_writes_is_refused() -> None:
    event = EVENTS[3]
    routed = EventMessages(event).to("dlv_0123", "sub_09", recheck=False)
    assert decode(DeliveryMessage, routed.body) == DeliveryMessage(
        delivery_id="dlv_0123", event_id=event.id, tenant=event.tenant,
        subscription_id="sub_09", attempt=1, event=event,
    )  # fmt: skip
    # A dispatcher takes ids Hookline makes only (architecture §4): these are poison there.
    for odd in (EventMessages(EVENTS[2]).to("dlv_0123", "sub_09", recheck=False),
                EventMessages(event).to("dlv_0123", "sub_é9", recheck=False)):  # fmt: skip
        with pytest.raises(DecodeError):
            decode(DeliveryMessage, odd.body)


def test_delivery_id_is_deterministic_and_carries_the_event_day() -> None:
    day = date(2026, 12, 4)
    for n in range(2000):
        tenant, event_id, sub = f"ten_{n % 7}ü", f"evt_{n}", f"sub_{n * 31}"
        made = delivery_id_for(tenant, event_id, sub, day)
        assert made == delivery_id_for(tenant, event_id, sub, day)
        assert day_of(made) == day
        assert made != delivery_id_for(tenant, event_id, sub + "x", day)
        assert made != delivery_id_for(tenant, event_id, sub, date(2026, 12, 5))


def test_an_event_keeps_the_context_it_was_first_routed_in(sessions: sessionmaker[Session]) -> None:
    # On both databases: PostgreSQL writes the batch as one JSON recordset, in which an
    # untraced event leaves the field out (read as NULL); SQLite inserts the rows.
    first = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    traced, untraced = Event(tenant="ten_a", type="a.b"), Event(tenant="ten_a", type="a.c")
    with sessions() as session, session.begin():
        persist_batch(
            session, [(traced, []), (untraced, [])], traceparents={("ten_a", traced.id): first}
        )
    with sessions() as session, session.begin():  # routed again: the row is kept as it was
        again = "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01"
        persist_batch(session, [(traced, [])], traceparents={("ten_a", traced.id): again})
    with sessions() as session:
        stored = dict(session.execute(select(EventRow.id, EventRow.traceparent)).tuples().all())
    assert stored == {traced.id: first, untraced.id: None}
