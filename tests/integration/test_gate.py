"""The feature gate agrees with the entitlements answer, for every feature of
every plan, in every state of generated streams, on both stores; and the hot
path (memory) says what the tables say."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.application import Ledger
from ledger.config import Settings
from ledger.domain.gate import GRACE_ENDED, INACTIVE, NOT_IN_PLAN
from ledger.plans import load_catalog
from ledger.stripe.payloads import read_delivery
from projections.read_side import ReadSide
from tests.streams import T0, webhook_streams

DAY = 86_400
CATALOG = load_catalog()
FEATURES = sorted({f for plan in CATALOG.plans for f in plan.features})
PRICES = [price.id for plan in CATALOG.plans for price in plan.prices]
_prefixes = itertools.count()


@pytest.fixture
def read(ledger: Ledger, settings: Settings) -> Iterator[ReadSide]:
    side = ReadSide(ledger, CATALOG, settings.database_url)
    try:
        yield side
    finally:
        side.close()


@settings(max_examples=10)
@given(st.data())
def test_check_agrees_with_entitlements_for_every_feature_in_every_state(
    ledger: Ledger, read: ReadSide, data: st.DataObject
) -> None:
    stream = data.draw(webhook_streams(prefix=f"g{next(_prefixes)}_"))
    # the streams' two prices, each swapped for a plan of the catalog (or left unknown)
    swaps = {
        old: data.draw(st.sampled_from([*PRICES, old]))
        for old in (b"price_premium_monthly", b"price_premium_annual")
    }
    users = sorted({u.decode() for d in stream for u in re.findall(rb'"(user_[^"]+)"', d.body)})
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(stream)), min_size=1, max_size=3))))
    done = 0
    for cut in cuts:
        for delivery in stream[done:cut]:
            body = delivery.body
            for old, new in swaps.items():
                body = body.replace(old, new.encode() if isinstance(new, str) else new)
            ledger.record([read_delivery(body)])
        done = cut
        ledger.process_new()
        read.catchup.run_once()
        read.holdings.check()  # what the watcher does every 25 ms: the projections moved
        for user in users:
            for now in (T0 + 60, T0 + 2 * DAY, T0 + 10 * DAY, time.time()):
                granted = read.entitlement(user, now)
                for feature in FEATURES:
                    verdict = read.check(user, feature, now)
                    assert verdict.allowed == (feature in granted.features)
                    if verdict.allowed:
                        continue
                    assert verdict.reason in (NOT_IN_PLAN, INACTIVE, GRACE_ENDED)
                    assert verdict.reason == NOT_IN_PLAN or not granted.active
                    plan = next((p for p in CATALOG.plans if p.id == verdict.upgrade_to), None)
                    assert plan is None or feature in plan.features
                # the hot path answers the same from memory
                hot = asyncio.run(read.entitlement_async(user, now))
                assert hot == granted


def test_the_gate_is_answered_from_memory_while_the_projections_stand_still(
    read: ReadSide,
) -> None:
    async def scenario() -> None:
        await read.open_async()
        try:
            user = "user_1767225600_nobodyyyyy"
            assert not (await read.check_async(user, "sso")).allowed
            assert read.holdings.get(user) is None  # kept: no subscription
            calls = []
            original = read._fetch_one

            async def counted(*args: object) -> object:
                calls.append(args)
                return await original(*args)  # type: ignore[arg-type]

            read._fetch_one = counted  # type: ignore[method-assign]
            for _ in range(100):
                await read.check_async(user, "premium_features")
            assert calls == []
        finally:
            await read.close_async()

    asyncio.run(scenario())
