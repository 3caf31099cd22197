"""The status vocabulary: its rules, word by word, and the SQL order drawn from it
sorting rows as the Python rank does."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.domain.status import (
    Status,
    blocks_new_subscription,
    current_rank,
    extension_word,
    grants_plan,
    is_delinquent,
    is_live,
    is_terminal,
)
from projections.activity import CURRENT_ORDER

DAY = 86_400

# word: (live, terminal, blocks a new subscription, current-row rank, extension's word)
RULES = {
    "active": (True, False, True, 0, "active"),
    "trialing": (True, False, True, 0, "active"),
    "past_due": (False, False, True, 0, "pending"),
    "unpaid": (False, False, True, 1, "pending"),
    "incomplete": (False, False, False, 1, "pending"),
    "paused": (False, False, True, 1, "pending"),
    "canceled": (False, True, False, 2, "pending"),
    "incomplete_expired": (False, True, False, 2, "pending"),
}


def test_the_vocabulary_is_stripes_eight_words() -> None:
    assert {str(s) for s in Status} == set(RULES)
    assert Status("past_due") is Status.PAST_DUE and Status.PAST_DUE == "past_due"


@pytest.mark.parametrize("word", sorted(RULES))
def test_each_word_follows_its_rules(word: str) -> None:
    rules = (
        is_live(word),
        is_terminal(word),
        blocks_new_subscription(word),
        current_rank(word),
        extension_word(word),
    )
    assert rules == RULES[word]
    assert is_delinquent(word) == (word in ("past_due", "unpaid"))


def test_a_word_stripe_adds_later_grants_nothing_blocks_nothing_and_ranks_last() -> None:
    for word in ("paused_for_review", None):
        assert not (is_live(word) or is_terminal(word) or blocks_new_subscription(word))
        assert current_rank(word) == 2
    assert extension_word("paused_for_review") == "pending"


def test_past_due_grants_the_plan_only_within_grace() -> None:
    since = 1_000_000
    assert grants_plan("past_due", since, 3, since + 3 * DAY - 1)
    assert not grants_plan("past_due", since, 3, since + 3 * DAY)
    assert not grants_plan("past_due", since, None, since)
    assert not grants_plan("past_due", None, 3, since)  # no failed payment seen
    assert grants_plan("trialing", None, 0, since) and not grants_plan("unpaid", since, 3, since)
    assert not grants_plan(None, None, None, since)


def test_the_sql_order_names_no_word_by_hand() -> None:
    for word in RULES:
        assert CURRENT_ORDER.count(f"'{word}'") == (1 if current_rank(word) < 2 else 0)


ROWS = st.lists(
    st.tuples(st.sampled_from([*RULES, "paused_for_review"]), st.integers(0, 5)),
    min_size=1,
    max_size=12,
)


@given(ROWS)
def test_the_sql_order_sorts_real_rows_as_the_python_rank_does(
    rows: list[tuple[str, int]],
) -> None:
    db = sqlite3.connect(":memory:")
    try:
        db.execute(
            "CREATE TABLE subscription_status "
            "(subscription_id TEXT PRIMARY KEY, status TEXT NOT NULL, started_at BIGINT NOT NULL)"
        )
        table = [(f"sub_{i:02}", status, started) for i, (status, started) in enumerate(rows)]
        db.executemany("INSERT INTO subscription_status VALUES (?, ?, ?)", table)
        query = f"SELECT subscription_id FROM subscription_status {CURRENT_ORDER}"
        ordered = [r[0] for r in db.execute(query)]
    finally:
        db.close()
    by_rank = sorted(table, key=lambda r: (current_rank(r[1]), -r[2], r[0]))
    assert ordered == [r[0] for r in by_rank]
