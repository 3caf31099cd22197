"""When a subscription counts as active, and which of a user's subscriptions is
their current one. Shared by the readers of subscription_status and entitlements."""

from __future__ import annotations

from ledger.domain.subscription import LIVE_STATUSES

DAY = 86_400

# The user's current subscription: a live one first, then the latest started.
CURRENT_ORDER = (
    "ORDER BY CASE WHEN status IN ('active', 'trialing', 'past_due') THEN 0 "
    "WHEN status IN ('unpaid', 'incomplete', 'paused') THEN 1 ELSE 2 END, "
    "started_at DESC, subscription_id"
)


def is_active(
    status: str | None, past_due_since: int | None, grace_days: int | None, now: float
) -> bool:
    """`active` and `trialing` are; `past_due` is while inside the plan's payment
    grace, counted from the first failed payment."""
    if status in LIVE_STATUSES:
        return True
    if status == "past_due" and past_due_since is not None:
        return now < past_due_since + (grace_days or 0) * DAY
    return False


def past_due_since_sql(column: str = "past_due_since") -> str:
    """The earlier of what is held and :t (the first failed payment)."""
    return f"CASE WHEN {column} IS NULL OR {column} > :t THEN :t ELSE {column} END"
