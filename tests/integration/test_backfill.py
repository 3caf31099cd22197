"""Backfill on real stores: whatever subset of a stream the webhook missed,
backfilling from Stripe's events list (which holds all of it) ends in the state
of the whole stream; what was delivered is a duplicate that costs nothing."""

from __future__ import annotations

import itertools
import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import stripe
from eventsourcing.utils import get_topic
from hypothesis import given, settings
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict

from ledger.application import Ledger
from ledger.backfill import Backfill, UnhandledTypes, clamp_since
from ledger.domain.receipt import Receipt, Source
from ledger.intake import GroupCommitter
from ledger.stripe.gateway import StripeGateway
from ledger.stripe.payloads import read_delivery
from tests.streams import T0, webhook_streams
from tests.unit.test_any_order import run, state_of, states

_prefixes = itertools.count()
NOW = T0 + 86_400


class EventsList(stripe.HTTPClient):
    """Stripe's `GET /v1/events`, newest first, `limit` per page, `starting_after`."""

    name = "events-list"

    def __init__(self, events: list[dict[str, Any]]) -> None:
        super().__init__()
        self.events = sorted(events, key=lambda e: (e["created"], e["id"]), reverse=True)
        self.pages = 0

    def request(self, method, url, headers, post_data=None, *, _usage=None):
        params = dict(parse_qsl(urlsplit(url).query))
        assert (method, urlsplit(url).path) == ("get", "/v1/events")
        ids = [e["id"] for e in self.events]
        start = ids.index(params["starting_after"]) + 1 if "starting_after" in params else 0
        limit = int(params["limit"])
        data = self.events[start : start + limit]
        self.pages += 1
        body = {"object": "list", "data": data, "has_more": start + limit < len(self.events)}
        return json.dumps(body), 200, CaseInsensitiveDict({"request-id": "req_1"})

    def close(self) -> None:
        pass


def revealed(ledger: Ledger, state: tuple[Any, ...]) -> tuple[Any, ...]:
    """A customer's email is stored encrypted with the customer's key: compare it plain."""
    if state[0] != "customer":
        return state
    return (*state[:2], ledger.personal.plain(state[2]), *state[3:])


def backfill_from(ledger: Ledger, events: list[dict[str, Any]], **run: Any) -> Any:
    gateway = StripeGateway("sk_test_x", http_client=EventsList(events), reads_per_second=100)
    committer = GroupCommitter(ledger)
    try:
        return Backfill(ledger, gateway, committer).run(now=NOW, **run)
    finally:
        committer.close()


def received(ledger: Ledger) -> list[Receipt.Received]:
    notifications = ledger.recorder.select_notifications(
        start=1, limit=10_000, topics=[get_topic(Receipt.Received)]
    )
    return [ledger.mapper.to_domain_event(n) for n in notifications]  # type: ignore[misc]


@settings(max_examples=15)
@given(st.data())
def test_backfill_of_any_withheld_subset_ends_in_the_whole_streams_state(
    ledger: Ledger, data: st.DataObject
) -> None:
    stream = data.draw(webhook_streams(prefix=f"b{next(_prefixes)}_"))
    delivered = data.draw(st.lists(st.sampled_from(stream), unique=True)) if stream else []
    delivered.sort(key=lambda d: d.created)
    if delivered:
        ledger.record([read_delivery(d.body) for d in delivered])
        ledger.process_new()

    summary = backfill_from(ledger, [json.loads(d.body) for d in stream])

    assert (summary.listed, summary.new) == (len(stream), len(stream) - len(delivered))
    expected = run(stream)
    held = {revealed(ledger, state_of(ledger.repository.get(i))) for i in expected.aggregates}
    assert held == states(expected)
    withheld = {d.event_id for d in stream} - {d.event_id for d in delivered}
    ours = {d.event_id for d in stream}  # the store keeps earlier examples' receipts too
    sources = {e.stripe_event_id: e.source for e in received(ledger) if e.stripe_event_id in ours}
    assert {i for i, s in sources.items() if s == Source.BACKFILL.value} == withheld
    assert all(ledger.receipt(d.event_id).is_settled for d in stream)
    assert backfill_from(ledger, [json.loads(d.body) for d in stream]).new == 0


def test_a_since_older_than_thirty_days_is_clamped() -> None:
    assert clamp_since(None, NOW) == (NOW - 30 * 86_400, False)
    assert clamp_since(NOW - 40 * 86_400, NOW) == (NOW - 30 * 86_400, True)
    assert clamp_since(NOW - 86_400, NOW) == (NOW - 86_400, False)


def test_an_unhandled_type_is_refused_before_asking_stripe(ledger: Ledger) -> None:
    with pytest.raises(UnhandledTypes, match=r"plan\.created"):
        backfill_from(ledger, [], types=["plan.created"])
    assert received(ledger) == []
