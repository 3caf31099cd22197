"""The billing API's Stripe calls that localstripe cannot serve (Prices, Checkout,
the Customer Portal, subscription schedules, updates with proration), as the
exact requests the `stripe` library sends, through its pluggable HTTP client."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.stripe.gateway import (
    ChangedSubscription,
    CustomerDetails,
    ScheduledChange,
    Session,
    StripeGateway,
    StripeRejected,
)
from tests import stripe_objects as so
from tests.stripe_transport import RecordingTransport

API_KEY = "sk_test_51UnitTestKeyDoNotLeak0123456789"
USER = "user_1767225600_abcdefghij"
START, END = 1_767_225_600, 1_769_904_000


@pytest.fixture
def transport() -> RecordingTransport:
    return RecordingTransport()


def gateway(transport: RecordingTransport, **kwargs: Any) -> StripeGateway:
    return StripeGateway(API_KEY, http_client=transport, **kwargs)


def sub(price: str = "price_starter_monthly", **kw: Any) -> dict[str, Any]:
    return so.subscription("sub_1", "cus_1", price_id=price, user_id=USER, **kw)


def test_update_customer_sends_only_what_is_given(transport: RecordingTransport) -> None:
    transport.answer(200, so.customer("cus_1", email="ada@example.com", name="Ada"))
    details = gateway(transport).update_customer("cus_1", "ada@example.com", None, "k")
    [req] = transport.requests
    assert (req.method, req.path) == ("post", "/v1/customers/cus_1")
    assert req.params == {"email": "ada@example.com"}
    assert req.idempotency_key == "k:update_customer"
    assert details == CustomerDetails("cus_1", "ada@example.com", "Ada")


def test_an_upgrade_moves_the_item_to_the_new_price_with_proration(
    transport: RecordingTransport,
) -> None:
    transport.answer(200, sub())
    transport.answer(200, sub("price_professional_monthly", amount=4900))
    changed = gateway(transport).change_price(
        "sub_1", "price_professional_monthly", "always_invoice", "k"
    )
    read, update = transport.requests
    assert (read.method, read.path, read.params) == ("get", "/v1/subscriptions/sub_1", {})
    assert (update.method, update.path) == ("post", "/v1/subscriptions/sub_1")
    assert update.params == {
        "items[0][id]": "si_sub_1",
        "items[0][price]": "price_professional_monthly",
        "proration_behavior": "always_invoice",
        "payment_behavior": "pending_if_incomplete",
    }
    assert update.idempotency_key == "k:change_price"
    assert changed == ChangedSubscription(
        "sub_1", "active", "price_professional_monthly", False, None
    )


def test_localstripe_mode_upgrades_by_plan_without_proration_settings(
    transport: RecordingTransport,
) -> None:
    transport.answer(200, sub())
    transport.answer(200, sub("price_professional_monthly", amount=4900))
    gateway(transport, payment_behavior="allow_incomplete").change_price(
        "sub_1", "price_professional_monthly", "always_invoice", "k"
    )
    assert transport.requests[1].params == {
        "items[0][id]": "si_sub_1",
        "items[0][plan]": "price_professional_monthly",
    }


def test_a_downgrade_is_a_schedule_keeping_the_period_then_the_new_price(
    transport: RecordingTransport,
) -> None:
    current = [("price_professional_monthly", START, END)]
    transport.answer(200, so.schedule("sub_sched_1", "sub_1", "cus_1", current))
    transport.answer(
        200,
        so.schedule(
            "sub_sched_1", "sub_1", "cus_1", [*current, ("price_starter_monthly", END, None)]
        ),
    )
    scheduled = gateway(transport).schedule_price_change(
        "sub_1", "price_professional_monthly", "price_starter_monthly", "k"
    )
    create, update = transport.requests
    assert (create.method, create.path) == ("post", "/v1/subscription_schedules")
    assert create.params == {"from_subscription": "sub_1"}
    assert create.idempotency_key == "k:schedule_create"
    assert (update.method, update.path) == ("post", "/v1/subscription_schedules/sub_sched_1")
    assert update.params == {
        "end_behavior": "release",
        "phases[0][items][0][price]": "price_professional_monthly",
        "phases[0][items][0][quantity]": "1",
        "phases[0][start_date]": str(START),
        "phases[0][end_date]": str(END),
        "phases[1][items][0][price]": "price_starter_monthly",
        "phases[1][items][0][quantity]": "1",
        "phases[1][proration_behavior]": "none",
    }
    assert update.idempotency_key == "k:schedule_phases"
    assert scheduled == ScheduledChange("sub_sched_1", END)


def test_a_schedule_without_a_period_end_is_refused(transport: RecordingTransport) -> None:
    transport.answer(200, so.schedule("sub_sched_1", "sub_1", "cus_1", [("p", START, None)]))
    with pytest.raises(StripeRejected):
        gateway(transport).schedule_price_change("sub_1", "p", "q", "k")
    assert len(transport.requests) == 1


def test_releasing_a_schedule(transport: RecordingTransport) -> None:
    transport.answer(200, so.schedule("sub_sched_1", "sub_1", "cus_1", []))
    gateway(transport).release_schedule("sub_sched_1", "k")
    [req] = transport.requests
    assert (req.method, req.path, req.params) == (
        "post",
        "/v1/subscription_schedules/sub_sched_1/release",
        {},
    )
    assert req.idempotency_key == "k:schedule_release"


@pytest.mark.parametrize(
    ("at_period_end", "params"),
    [(True, {"cancel_at_period_end": "false"}), (False, {"cancel_at": ""})],
)
def test_resume_withdraws_either_kind_of_scheduled_cancellation(
    transport: RecordingTransport, at_period_end: bool, params: dict[str, str]
) -> None:
    transport.answer(200, sub())
    changed = gateway(transport).resume(
        "sub_1", cancel_at_period_end=at_period_end, idempotency_key="k"
    )
    [req] = transport.requests
    assert (req.method, req.path, req.params) == ("post", "/v1/subscriptions/sub_1", params)
    assert req.idempotency_key == "k:resume"
    assert changed.cancel_at_period_end is False


def test_checkout_session_for_the_customer_with_the_user_and_the_trial(
    transport: RecordingTransport,
) -> None:
    transport.answer(200, so.open_checkout_session("cs_1", "cus_1", user_id=USER))
    session = gateway(transport).create_checkout_session(
        "cus_1",
        "price_starter_monthly",
        USER,
        "https://app.example.com/billing/done",
        "https://app.example.com/billing",
        14,
        "k",
    )
    [req] = transport.requests
    assert (req.method, req.path) == ("post", "/v1/checkout/sessions")
    assert req.params == {
        "mode": "subscription",
        "customer": "cus_1",
        "client_reference_id": USER,
        "line_items[0][price]": "price_starter_monthly",
        "line_items[0][quantity]": "1",
        "success_url": "https://app.example.com/billing/done",
        "cancel_url": "https://app.example.com/billing",
        "metadata[user_id]": USER,
        "subscription_data[metadata][user_id]": USER,
        "subscription_data[trial_period_days]": "14",
    }
    assert req.idempotency_key == "k:checkout"
    assert session == Session("cs_1", "https://checkout.stripe.com/c/pay/cs_1")


def test_checkout_without_a_trial_sends_none(transport: RecordingTransport) -> None:
    transport.answer(200, so.open_checkout_session("cs_1", "cus_1", user_id=USER))
    gateway(transport).create_checkout_session(
        "cus_1", "p", USER, "https://a/", "https://a/", 0, "k"
    )
    assert "subscription_data[trial_period_days]" not in transport.requests[0].params


def test_portal_session(transport: RecordingTransport) -> None:
    transport.answer(200, so.portal_session("cus_1", "https://app.example.com/account"))
    session = gateway(transport).create_portal_session(
        "cus_1", "https://app.example.com/account", "k"
    )
    [req] = transport.requests
    assert (req.method, req.path) == ("post", "/v1/billing_portal/sessions")
    assert req.params == {"customer": "cus_1", "return_url": "https://app.example.com/account"}
    assert req.idempotency_key == "k:portal"
    assert session == Session("bps_1", "https://billing.stripe.com/p/session/test_bps_1")


def test_a_subscription_with_a_trial(transport: RecordingTransport) -> None:
    transport.answer(200, sub(status="trialing", trial_end=END))
    created = gateway(transport).create_subscription(
        "cus_1", "price_starter_monthly", USER, "k", trial_days=14
    )
    assert transport.requests[0].params["trial_period_days"] == "14"
    assert (created.status, created.trial_end) == ("trialing", END)
