"""Stage one reads only the head of a delivery and whom its object is about
(`read_delivery`); it must accept and refuse exactly the bodies stage two's full
read (`read_envelope`) accepts and refuses, and record the same receipt."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from ledger.stripe.payloads import NotAnEvent, _data_subject, read_delivery, read_envelope
from tests import stripe_objects as so

EVENTS = [
    so.event("evt_c", "customer.updated", so.customer("cus_1", email="a@example.com"), created=1),
    so.event(
        "evt_s", "customer.subscription.updated", so.subscription("sub_1", "cus_1"), created=2
    ),
    so.event(
        "evt_i", "invoice.paid", so.invoice("in_1", "cus_1", "sub_1", status="paid"), created=3
    ),
]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def by_envelope(body: bytes) -> tuple[Any, ...]:
    """What stage one recorded of a body when it read the whole envelope, before."""
    e = read_envelope(body)
    obj = e.object.model_dump() if isinstance(e.object, BaseModel) else e.object
    return (e.id, e.type, e.created, e.api_version, e.livemode, _data_subject(obj))


def by_head(body: bytes) -> tuple[Any, ...]:
    d = read_delivery(body)
    assert d.payload == body.decode()
    return (d.stripe_event_id, d.event_type, d.stripe_created, d.api_version, d.livemode,
            d.data_subject)  # fmt: skip


def outcome(read: Any, body: bytes) -> Any:
    try:
        return read(body)
    except NotAnEvent:
        return NotAnEvent


@given(
    event=st.sampled_from(EVENTS),
    where=st.sampled_from(["object.customer", "object.object", "object.id", "object", "data",
                           "id", "type", "created", "livemode", "api_version", "-id", "-data"]),
    value=JSON | st.sampled_from(["cus_2", "customer", "evt_2", {"id": "cus_3"}, 5]),
)  # fmt: skip
def test_stage_one_reads_a_body_as_the_whole_envelope_would(
    event: dict[str, Any], where: str, value: Any
) -> None:
    event = json.loads(json.dumps(event))
    if where.startswith("-"):
        del event[where[1:]]
    elif where.startswith("object."):
        event["data"]["object"][where.split(".")[1]] = value
    elif where == "object":
        event["data"]["object"] = value
    else:
        event[where] = value
    body = json.dumps(event).encode()
    assert outcome(by_head, body) == outcome(by_envelope, body)


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e["type"])
def test_each_kind_of_object_names_its_customer(event: dict[str, Any]) -> None:
    assert read_delivery(so.body_of(event)).data_subject == "cus_1"
