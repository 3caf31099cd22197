"""Stripe's subscription statuses and their rules, in one place: which grant the
plan, which are final, which block a new subscription, which of a user's rows is
current, and the word the extension hears."""

from __future__ import annotations

from enum import StrEnum

DAY = 86_400


class Status(StrEnum):
    """Stripe's words, as Stripe spells them. Events store them as plain strings;
    the rules below take a string too, so a word Stripe adds later is none of
    live, terminal or blocking, and ranks last."""

    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELED = "canceled"
    UNPAID = "unpaid"
    PAUSED = "paused"


# Grants its plan (past_due too, but only within the plan's payment grace).
LIVE = frozenset({Status.ACTIVE, Status.TRIALING})
# Final: nothing Stripe says afterwards changes it.
TERMINAL = frozenset({Status.CANCELED, Status.INCOMPLETE_EXPIRED})
# The latest payment failed and the subscription has not ended.
DELINQUENT = frozenset({Status.PAST_DUE, Status.UNPAID})
# A user holding one of these may not start another subscription.
BLOCKING = frozenset({*LIVE, *DELINQUENT, Status.PAUSED})
# Which of a user's subscriptions is their current one: the lowest rank, then the
# latest started. Live or in grace first, then those that may yet become live.
_RANKS: dict[str | None, int] = {
    Status.ACTIVE: 0,
    Status.TRIALING: 0,
    Status.PAST_DUE: 0,
    Status.UNPAID: 1,
    Status.INCOMPLETE: 1,
    Status.PAUSED: 1,
}
LAST_RANK = 2  # the ended ones, and any word not listed


def is_live(status: str | None) -> bool:
    return status in LIVE


def is_terminal(status: str | None) -> bool:
    return status in TERMINAL


def is_delinquent(status: str | None) -> bool:
    return status in DELINQUENT


def blocks_new_subscription(status: str | None) -> bool:
    return status in BLOCKING


def current_rank(status: str | None) -> int:
    return _RANKS.get(status, LAST_RANK)


def grants_plan(
    status: str | None, past_due_since: int | None, grace_days: int | None, now: float
) -> bool:
    """Live ones do; `past_due` does while inside the plan's payment grace,
    counted from the first failed payment."""
    if is_live(status):
        return True
    if status == Status.PAST_DUE and past_due_since is not None:
        return now < past_due_since + (grace_days or 0) * DAY
    return False


def extension_word(status: str) -> str:
    """The extension's word for a subscription just created: "active" when it
    grants its plan now, "pending" while the first payment waits for confirmation."""
    return "active" if is_live(status) else "pending"
