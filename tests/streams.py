"""Hypothesis strategies for realistic multi-customer webhook streams: signup,
trial, upgrade, cancel at period end, deletion, payment failure and recovery.
Each event has its own id and a strictly later `created` than the one before."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from tests import stripe_objects as so

MONTH = 2_678_400
T0 = 1_767_225_600  # 2026-01-01


@dataclass(frozen=True)
class Delivery:
    event_id: str
    event_type: str
    created: int
    body: bytes = field(repr=False)


@st.composite
def customer_story(draw: st.DrawFn, n: int, clock: itertools.count, prefix: str) -> list[Delivery]:
    cus, sub = f"cus_{prefix}{n}", f"sub_{prefix}{n}"
    user = f"user_{T0}_{prefix}{n:0>9}"[:27]
    shape = draw(st.sampled_from(["current", "legacy"]))
    state: dict[str, Any] = {
        "status": draw(st.sampled_from(["trialing", "active"])),
        "price_id": "price_premium_monthly", "amount": 999, "interval": "month",
        "period_start": T0, "period_end": T0 + MONTH, "cancel_at_period_end": False,
        "trial_end": T0 + 14 * 86_400, "ended_at": None,
    }  # fmt: skip
    out: list[Delivery] = []
    seq = itertools.count()

    def emit(event_type: str, obj: dict[str, Any]) -> None:
        created = T0 + next(clock)
        evt = f"evt_{prefix}{n}_{next(seq)}"
        body = so.body_of(so.event(evt, event_type, obj, created=created, shape=shape))
        out.append(Delivery(evt, event_type, created, body))

    def sub_obj() -> dict[str, Any]:
        return so.subscription(
            sub, cus, user_id=user if metadata_user else None, shape=shape, **state
        )

    metadata_user = draw(st.booleans())
    if draw(st.booleans()):
        emit("customer.created", so.customer(cus, email=f"{n}@example.com", user_id=user))
    else:
        emit(
            "checkout.session.completed",
            so.checkout_session(f"cs_{prefix}{n}", cus, sub, user_id=user),
        )
    emit("customer.subscription.created", sub_obj())
    if state["status"] == "trialing":
        emit("customer.subscription.trial_will_end", sub_obj())
        state["status"] = "active"
        emit("customer.subscription.updated", sub_obj())
    invoices = itertools.count()
    for step in draw(
        st.lists(
            st.sampled_from(["renew", "upgrade", "fail_recover", "cancel", "withdraw", "email"]),
            max_size=5,
        )
    ):
        if step == "renew":
            state["period_start"], state["period_end"] = (
                state["period_end"],
                state["period_end"] + MONTH,
            )
            emit("customer.subscription.updated", sub_obj())
            emit(
                "invoice.paid",
                so.invoice(
                    f"in_{prefix}{n}_{next(invoices)}",
                    cus,
                    sub,
                    amount=state["amount"],
                    shape=shape,
                ),
            )
        elif step == "upgrade":
            state.update(price_id="price_premium_annual", amount=9990, interval="year")
            emit("customer.subscription.updated", sub_obj())
        elif step == "fail_recover":
            inv = f"in_{prefix}{n}_{next(invoices)}"
            emit(
                "invoice.payment_failed",
                so.invoice(inv, cus, sub, status="open", amount=state["amount"], shape=shape),
            )
            state["status"] = "past_due"
            emit("customer.subscription.updated", sub_obj())
            if draw(st.booleans()):
                emit("invoice.paid", so.invoice(inv, cus, sub, amount=state["amount"], shape=shape))
                state["status"] = "active"
                emit("customer.subscription.updated", sub_obj())
        elif step == "cancel":
            state["cancel_at_period_end"] = True
            emit("customer.subscription.updated", sub_obj())
        elif step == "withdraw":
            state["cancel_at_period_end"] = False
            emit("customer.subscription.updated", sub_obj())
        else:
            emit(
                "customer.updated",
                so.customer(cus, email=f"{n}.{next(seq)}@example.com", user_id=user),
            )
    if draw(st.booleans()):
        state.update(status="canceled", ended_at=T0 + next(clock))
        emit("customer.subscription.deleted", sub_obj())
    return out


@st.composite
def webhook_streams(draw: st.DrawFn, prefix: str = "", max_customers: int = 3) -> list[Delivery]:
    """The ordered stream of several customers' stories, interleaved in time."""
    clock = itertools.count(1)
    stories = [
        draw(customer_story(n, clock, prefix)) for n in range(draw(st.integers(1, max_customers)))
    ]
    return sorted((d for story in stories for d in story), key=lambda d: d.created)


@st.composite
def shuffled_with_duplicates(draw: st.DrawFn, stream: list[Delivery]) -> list[Delivery]:
    """Any order, any number of repeats: what Stripe may actually deliver."""
    repeats = draw(st.lists(st.sampled_from(stream), max_size=len(stream))) if stream else []
    return draw(st.permutations(stream + repeats))
