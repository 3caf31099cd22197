"""The billing API's reads: a user's current subscription with its payment grace
and pending downgrade, and the user's Stripe customer."""

from __future__ import annotations

from typing import Any

from ledger.domain.status import DAY, Status, grants_plan
from projections.customers import customer_of
from projections.pending_changes import pending_change_of
from projections.store import Cursor
from projections.subscription_status import current_row

NO_SUBSCRIPTION: dict[str, Any] = {"active": False, "id": None}


def subscription_of(c: Cursor, user_id: str, now: float, free_tier: str) -> dict[str, Any]:
    """`GET /api/v1/billing/subscription`: the current subscription as of `now`."""
    row = current_row(c, user_id)
    if row is None:
        return {**NO_SUBSCRIPTION, "tier": free_tier}
    active = grants_plan(row["status"], row["past_due_since"], row["grace_days"], now)
    grace_until = None
    if row["status"] == Status.PAST_DUE and row["past_due_since"] is not None:
        grace_until = row["past_due_since"] + (row["grace_days"] or 0) * DAY
    at_period_end = bool(row["cancel_at_period_end"])
    pending = pending_change_of(c, row["subscription_id"], now)
    return {
        "id": row["stripe_subscription_id"],
        "status": row["status"],
        "active": active,
        "tier": row["tier"] if active else free_tier,
        "plan_id": row["plan_id"],
        "plan_name": row["plan_name"],
        "price_id": row["price_id"],
        "interval": row["interval"],
        "amount": row["amount"],
        "currency": row["currency"],
        "current_period_start": row["current_period_start"],
        "current_period_end": row["current_period_end"],
        "cancel_at_period_end": at_period_end,
        "cancel_at": row["current_period_end"] if at_period_end else row["cancel_at"],
        "trial_end": row["trial_end"],
        "in_grace_until": grace_until,
        "pending_change": None
        if pending is None
        else {
            "price_id": pending["price_id"],
            "plan_id": pending["plan_id"],
            "effective_at": pending["effective_at"],
        },
    }


def customer_answer(c: Cursor, user_id: str) -> dict[str, Any] | None:
    """`GET /api/v1/billing/customer`: None when the user has no customer yet."""
    row = customer_of(c, user_id)
    if row is None:
        return None
    return {"customer_id": row["stripe_customer_id"], "email": row["email"], "name": row["name"]}
