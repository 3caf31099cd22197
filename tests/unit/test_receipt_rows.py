"""A delivery's receipt written directly as its row of the log (`ReceiptRows`, the
ingest path on PostgreSQL) is what the library's mapper writes for the receipt's
event, byte for byte, whatever the delivery holds; and it reads back as that event."""

from __future__ import annotations

import dataclasses
import json

from eventsourcing.persistence import StoredEvent
from hypothesis import given
from hypothesis import strategies as st

from ledger.application import Ledger
from ledger.domain.receipt import Delivery, Receipt, Source

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=60)  # UTF-8: no lone surrogates
deliveries = st.builds(
    Delivery,
    stripe_event_id=text,
    event_type=text,
    stripe_created=st.integers(-(2**63), 2**63 - 1),
    api_version=st.none() | text,
    livemode=st.booleans(),
    payload=st.text(st.characters(exclude_categories=["Cs"]), max_size=300),
    source=st.sampled_from(Source),
    signature_time=st.none() | st.integers(0, 2**40),
)


def _as_the_mapper_writes(ledger: Ledger, delivery: Delivery, row: StoredEvent) -> StoredEvent:
    [event] = delivery.new_aggregate().collect_events()
    assert type(event) is Receipt.Received
    stored = ledger.mapper.to_stored_event(event)
    # the same instant as the row's (each is made at its own)
    made = json.loads(stored.state)["timestamp"]["_data_"]
    wanted = json.loads(row.state)["timestamp"]["_data_"]
    return dataclasses.replace(stored, state=stored.state.replace(made.encode(), wanted.encode()))


@given(deliveries)
def test_a_receipts_row_is_the_mappers(delivery: Delivery) -> None:
    ledger = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    [row] = ledger.stored_events([delivery])
    assert row == _as_the_mapper_writes(ledger, delivery, row)
    back = ledger.mapper.to_domain_event(row)
    assert type(back) is Receipt.Received
    assert (back.stripe_event_id, back.payload, back.api_version, back.signature_time) == (
        delivery.stripe_event_id,
        delivery.payload,
        delivery.api_version,
        delivery.signature_time,
    )
    assert back.originator_id == delivery.aggregate_id


def test_a_value_of_another_type_goes_through_the_mapper() -> None:
    """What the direct writing does not know (here an int subclass) is the mapper's."""
    ledger = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    delivery = Delivery("evt_1", "invoice.paid", True, None, False, "{}")  # bool is an int
    [row] = ledger.stored_events([delivery])
    assert row == _as_the_mapper_writes(ledger, delivery, row)
    assert b'"stripe_created":true' in row.state
