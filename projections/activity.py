"""SQL of subscription_status drawn from the status vocabulary: which of a user's
subscriptions is their current one, and when the first payment failed."""

from __future__ import annotations

from ledger.domain.status import LAST_RANK, Status, current_rank


def _rank_sql(column: str) -> str:
    """`current_rank` as a CASE over the column: one WHEN for each rank but the last."""
    whens = "".join(
        f"WHEN {column} IN ({', '.join(repr(str(s)) for s in Status if current_rank(s) == rank)})"
        f" THEN {rank} "
        for rank in sorted({current_rank(s) for s in Status} - {LAST_RANK})
    )
    return f"CASE {whens}ELSE {LAST_RANK} END"


# The user's current subscription: the lowest rank, then the latest started.
CURRENT_ORDER = f"ORDER BY {_rank_sql('status')}, started_at DESC, subscription_id"


def past_due_since_sql(column: str = "past_due_since") -> str:
    """The earlier of what is held and :t (the first failed payment)."""
    return f"CASE WHEN {column} IS NULL OR {column} > :t THEN :t ELSE {column} END"
