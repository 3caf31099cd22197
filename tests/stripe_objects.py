"""Stripe payloads for tests, built from Stripe's own example objects
(tests/fixtures, copied from Stripe's OpenAPI fixtures) in the two shapes an
endpoint may receive: "current" (API 2026-07-29.dahlia) and "legacy" (pre-2025,
as localstripe sends)."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
from functools import cache
from pathlib import Path
from typing import Any, Literal

FIXTURES = Path(__file__).parent / "fixtures"
Shape = Literal["current", "legacy"]
API_VERSIONS = {"current": "2026-07-29.dahlia", "legacy": "2017-08-15"}


@cache
def _fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def fixture(name: str) -> dict[str, Any]:
    return copy.deepcopy(_fixture(name))


def customer(
    cus_id: str, *, email: str | None = None, user_id: str | None = None, name: str | None = None
) -> dict[str, Any]:
    obj = fixture("customer")
    obj.update(id=cus_id, email=email, name=name, metadata={"user_id": user_id} if user_id else {})
    return obj


def subscription(
    sub_id: str,
    cus_id: str,
    *,
    status: str = "active",
    price_id: str = "price_premium_monthly",
    amount: int = 999,
    interval: str = "month",
    period_start: int = 1_767_225_600,  # 2026-01-01
    period_end: int = 1_769_904_000,  # 2026-02-01
    cancel_at_period_end: bool = False,
    cancel_at: int | None = None,
    trial_end: int | None = None,
    ended_at: int | None = None,
    user_id: str | None = None,
    lookup_key: str | None = None,
    shape: Shape = "current",
) -> dict[str, Any]:
    obj = fixture("subscription")
    item = obj["items"]["data"][0]
    price = item["price"]
    price.update(
        id=price_id,
        unit_amount=amount,
        unit_amount_decimal=str(amount),
        currency="usd",
        lookup_key=lookup_key,
        product="prod_premium",
    )
    price["recurring"].update(interval=interval, interval_count=1)
    item.update(
        id=f"si_{sub_id}",
        subscription=sub_id,
        current_period_start=period_start,
        current_period_end=period_end,
    )
    item["plan"] = _plan(price_id, amount, interval)
    obj.update(
        id=sub_id,
        customer=cus_id,
        status=status,
        cancel_at_period_end=cancel_at_period_end,
        cancel_at=period_end if cancel_at_period_end else cancel_at,
        canceled_at=None,
        ended_at=ended_at,
        trial_end=trial_end,
        trial_start=None,
        metadata={"user_id": user_id} if user_id else {},
        latest_invoice=None,
    )
    if shape == "legacy":
        for key in ("current_period_start", "current_period_end"):
            del item[key]
        del item["price"]
        obj.update(
            current_period_start=period_start,
            current_period_end=period_end,
            plan=_plan(price_id, amount, interval),
        )
    return obj


def _plan(plan_id: str, amount: int, interval: str) -> dict[str, Any]:
    plan = fixture("event")["data"]["object"]  # Stripe's example event carries a plan
    plan.update(
        id=plan_id,
        amount=amount,
        amount_decimal=str(amount),
        currency="usd",
        interval=interval,
        interval_count=1,
        product="prod_premium",
    )
    return plan


def invoice(
    in_id: str,
    cus_id: str,
    sub_id: str | None,
    *,
    amount: int = 999,
    status: str = "paid",
    attempt_count: int = 1,
    period_start: int = 1_767_225_600,
    period_end: int = 1_769_904_000,
    shape: Shape = "current",
    created: int | None = None,
) -> dict[str, Any]:
    obj = fixture("invoice")
    if created is not None:
        obj["created"] = created
    paid = status == "paid"
    obj.update(
        id=in_id,
        customer=cus_id,
        currency="usd",
        amount_due=amount,
        amount_paid=amount if paid else 0,
        amount_remaining=0 if paid else amount,
        status=status,
        attempt_count=attempt_count,
        period_start=period_start,
        period_end=period_end,
        number=f"INV-{in_id[-6:]}",
        billing_reason="subscription_cycle",
    )
    if shape == "legacy":
        obj["parent"] = None
        obj["subscription"] = sub_id
    else:
        obj["subscription"] = None
        obj["parent"] = {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": sub_id},
        }
    return obj


def checkout_session(
    cs_id: str, cus_id: str, sub_id: str, *, user_id: str | None, amount: int = 999
) -> dict[str, Any]:
    obj = fixture("checkout.session")
    obj.update(
        id=cs_id,
        customer=cus_id,
        subscription=sub_id,
        client_reference_id=user_id,
        mode="subscription",
        amount_total=amount,
        currency="usd",
        status="complete",
        payment_status="paid",
    )
    return obj


def event(
    evt_id: str, event_type: str, obj: dict[str, Any], *, created: int, shape: Shape = "current"
) -> dict[str, Any]:
    envelope = fixture("event")
    envelope.update(
        id=evt_id,
        type=event_type,
        created=created,
        api_version=API_VERSIONS[shape],
        data={"object": obj},
    )
    return envelope


def body_of(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope, separators=(",", ":")).encode()


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """Stripe's scheme: HMAC-SHA256 over "{t}.{body}", header "t=...,v1=..."."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def portal_session(cus_id: str, return_url: str, *, bps_id: str = "bps_1") -> dict[str, Any]:
    obj = fixture("billing_portal.session")
    obj.update(
        id=bps_id,
        customer=cus_id,
        return_url=return_url,
        url=f"https://billing.stripe.com/p/session/test_{bps_id}",
    )
    return obj


def open_checkout_session(cs_id: str, cus_id: str, *, user_id: str) -> dict[str, Any]:
    """A session as its create call answers: open, with its hosted page's URL."""
    obj = fixture("checkout.session")
    obj.update(
        id=cs_id,
        customer=cus_id,
        client_reference_id=user_id,
        mode="subscription",
        status="open",
        subscription=None,
        url=f"https://checkout.stripe.com/c/pay/{cs_id}",
    )
    return obj


def schedule(
    sched_id: str, sub_id: str, cus_id: str, phases: list[tuple[str, int, int | None]]
) -> dict[str, Any]:
    """A subscription schedule with phases of (price, start, end)."""
    obj = fixture("subscription_schedule")
    template = obj["phases"][0]
    obj.update(
        id=sched_id,
        subscription=sub_id,
        customer=cus_id,
        phases=[
            {
                **copy.deepcopy(template),
                "items": [{**template["items"][0], "price": price}],
                "start_date": start,
                "end_date": end,
            }
            for price, start, end in phases
        ],
    )
    return obj
