"""Hypothesis strategies for usage records: repeated keys, times around period
boundaries, both kinds of metric."""

from __future__ import annotations

from hypothesis import strategies as st

from ledger.domain.usage import Usage
from tests.streams import MONTH, T0

BOUNDARIES = (T0 - 1, T0, T0 + MONTH - 1, T0 + MONTH, T0 + 2 * MONTH - 1, T0 + 2 * MONTH)


@st.composite
def usage_records(draw: st.DrawFn, users: list[str], max_distinct: int = 12) -> list[Usage]:
    """Distinct keys' records, then any number of repeats of them, in any order."""
    n = draw(st.integers(1, max_distinct))
    times = st.one_of(st.sampled_from(BOUNDARIES), st.integers(T0 - MONTH, T0 + 3 * MONTH))
    distinct = [
        Usage(
            user_id=draw(st.sampled_from(users)),
            metric=draw(st.sampled_from(["ai_requests", "storage_mb"])),
            quantity=draw(st.integers(0, 1500)),
            idempotency_key=f"k{i}",
            occurred_at=draw(times),
        )
        for i in range(n)
    ]
    repeats = draw(st.lists(st.sampled_from(distinct), max_size=n))
    return draw(st.permutations(distinct + repeats))
