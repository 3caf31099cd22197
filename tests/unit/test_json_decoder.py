"""`json_decoder` (orjson's parse, then the registered types restored) answers what
the library's `JSONTranscoder.decode` answers for whatever the library's encoder
wrote, or raises, and then `LeanMapper` decodes through the library's own."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    StoredEvent,
    TranscodingNotRegisteredError,
    UUIDAsHex,
)
from hypothesis import given
from hypothesis import strategies as st

from ledger.domain.money import Price
from ledger.domain.receipt import Receipt
from ledger.store.library import LeanMapper, json_decoder
from ledger.store.transcodings import PriceAsDict


def _transcoder() -> JSONTranscoder:
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO(), PriceAsDict()):
        transcoder.register(transcoding)
    return transcoder


THEIRS = _transcoder()
OURS = json_decoder(THEIRS)

texts = st.text(st.characters(codec="utf-8"), max_size=12)  # the encoder writes UTF-8
scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # past 64 bits: orjson refuses
    | st.floats()  # NaN and infinities: orjson refuses
    | texts
    | st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))]))
    | st.uuids()
    | st.decimals(allow_nan=False)
    | st.builds(Price, texts, st.integers(0, 10**6), texts, texts)
)
keys = texts | st.sampled_from(["_type_", "_data_", "timestamp"])
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(keys, inner, max_size=4)
        # what looks like a registered value, or nearly: restored, or left a dict
        | st.fixed_dictionaries({"_type_": st.sampled_from(["price", "uuid_hex"]), "_data_": inner})
    ),
    max_leaves=20,
)


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN, and of the same types throughout."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _outcome(decode: Any, data: bytes) -> tuple[str, Any]:
    try:
        return "value", decode(data)
    except Exception as exc:  # which one is what is compared
        return type(exc).__name__, None


@given(values)
def test_it_answers_what_the_library_answers_or_raises(value: Any) -> None:
    try:
        data = THEIRS.encode(value)
    except (TypeError, ValueError):  # e.g. a Price around a Decimal: not ours to write
        return
    theirs, ours = _outcome(THEIRS.decode, data), _outcome(OURS, data)
    if ours[0] == "value":
        assert theirs[0] == "value" and _same(ours[1], theirs[1])
    elif theirs[0] == "value":  # refused: a float (or an integer orjson made one)
        assert any(
            isinstance(n, float) or (isinstance(n, int) and abs(n) >= 2**63)
            for n in _leaves(theirs[1])
        ), data


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in _leaves(v)]
    if isinstance(value, Price):
        return [value.unit_amount]
    return [value]


def test_an_unregistered_type_is_refused_as_the_library_refuses_it() -> None:
    data = b'{"a":{"_type_":"nope","_data_":1}}'
    with pytest.raises(TranscodingNotRegisteredError):
        THEIRS.decode(data)
    with pytest.raises(KeyError):
        OURS(data)


def test_what_orjson_refuses_is_decoded_by_the_librarys_mapper() -> None:
    """A receipt whose state holds NaN and an integer past 64 bits (orjson refuses
    the first and makes a float of the second; no code of ours writes either, a
    hand-written or future event might) is the library's event."""
    mapper = LeanMapper(transcoder=_transcoder())
    receipt_id = uuid.uuid4()
    state = (
        b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T04:12:42+00:00"},'
        b'"originator_topic":"ledger.receipt:Receipt","stripe_event_id":"evt_1",'
        b'"event_type":"x","stripe_created":NaN,"api_version":null,"livemode":false,'
        b'"payload":"{}","source":"webhook","signature_time":184467440737095516150,'
        b'"class_version":2}'
    )
    event = mapper.to_domain_event(
        StoredEvent(receipt_id, 1, "ledger.receipt:Receipt.Received", state)
    )
    assert type(event) is Receipt.Received
    assert event.originator_id == receipt_id
    assert math.isnan(event.stripe_created)
    assert event.signature_time == 184467440737095516150
    assert event.timestamp == datetime(2026, 12, 2, 4, 12, 42, tzinfo=UTC)


def test_the_ledgers_events_are_decoded_without_the_librarys_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The library's parser is the fallback for what orjson reads otherwise, not
    the common case: with it broken, a receipt (a time, text with an escape, null,
    the largest 64-bit integer) and a price still decode; a subclassed transcoder
    keeps its own decode."""

    def refused(self: Any, data: bytes) -> Any:
        raise AssertionError("the library's parser was used")

    monkeypatch.setattr(JSONTranscoder, "decode", refused)
    mapper = LeanMapper(transcoder=_transcoder())
    state = {
        "timestamp": {"_type_": "datetime_iso", "_data_": "2026-12-02T04:12:42+00:00"},
        "originator_topic": "ledger.receipt:Receipt", "stripe_event_id": "evt_1",
        "event_type": "x", "stripe_created": 1767225600, "api_version": None,
        "livemode": False, "payload": '{"a": "\u00fc"}', "source": "webhook",
        "signature_time": 2**63 - 1, "class_version": 2,
    }  # fmt: skip
    received = StoredEvent(
        uuid.uuid4(), 1, "ledger.receipt:Receipt.Received", json.dumps(state).encode()
    )
    event = mapper.to_domain_event(received)
    assert (event.stripe_created, event.signature_time) == (1767225600, 2**63 - 1)
    assert event.payload == '{"a": "\u00fc"}'
    assert event.timestamp == datetime(2026, 12, 2, 4, 12, 42, tzinfo=UTC)
    price = {"_type_": "price", "_data_": {
        "stripe_price_id": "price_1", "unit_amount": 999, "currency": "usd",
        "interval": "month", "interval_count": 1, "lookup_key": None,
        "stripe_product_id": None, "nickname": None}}  # fmt: skip
    assert json_decoder(mapper.transcoder)(json.dumps({"p": [price]}).encode()) == {
        "p": [Price("price_1", 999, "usd", "month")]
    }

    class Other(JSONTranscoder):
        pass

    other = Other()
    assert json_decoder(other) == other.decode
