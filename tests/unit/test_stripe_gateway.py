"""StripeGateway through the stripe library's pluggable HTTP client.

`RecordingTransport` replaces only the socket: the library still builds the real
requests (form encoding, headers, idempotency keys) and still runs its own retry
loop (`HTTPClient._request_with_retries_internal`), so what is asserted here is
what Stripe would receive. Nothing here opens a connection.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import stripe

from ledger.stripe.gateway import (
    CanceledSubscription,
    CreatedSubscription,
    StripeGateway,
    StripeRejected,
    StripeUnavailable,
)
from ledger.stripe.payloads import read_subscription
from tests.stripe_transport import RecordingTransport

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
API_KEY = "sk_test_51UnitTestKeyDoNotLeak0123456789"
PRICE = "price_lisa_premium_monthly"
USER = "user_1767225600_abcdefghij"
PERIOD_START, PERIOD_END = 1_767_225_600, 1_769_904_000


def fixture(name: str) -> dict[str, Any]:
    return copy.deepcopy(json.loads((FIXTURES / f"{name}.json").read_text()))


def customer_json(cus_id: str = "cus_A") -> dict[str, Any]:
    obj = fixture("customer")
    obj.update(id=cus_id, metadata={"user_id": USER})
    return obj


def payment_method_json(pm_id: str, cus_id: str = "cus_A") -> dict[str, Any]:
    # No payment_method fixture: the fields the gateway and the library look at.
    return {"id": pm_id, "object": "payment_method", "type": "card", "customer": cus_id}


def subscription_json(
    status: str = "incomplete",
    *,
    sub_id: str = "sub_x",
    latest_invoice: Any = None,
    cancel_at_period_end: bool = False,
    cancel_at: int | None = None,
    canceled_at: int | None = None,
    ended_at: int | None = None,
) -> dict[str, Any]:
    """Current API shape: the periods are on the item."""
    obj = fixture("subscription")
    item = obj["items"]["data"][0]
    item["price"]["id"] = PRICE
    item.update(current_period_start=PERIOD_START, current_period_end=PERIOD_END)
    obj.update(
        id=sub_id,
        customer="cus_A",
        status=status,
        metadata={"user_id": USER},
        latest_invoice=latest_invoice,
        cancel_at_period_end=cancel_at_period_end,
        cancel_at=cancel_at,
        canceled_at=canceled_at,
        ended_at=ended_at,
    )
    return obj


def invoice_json(client_secret: str | None) -> dict[str, Any]:
    obj = fixture("invoice")
    obj.update(id="in_1", status="open")
    obj["confirmation_secret"] = (
        {"client_secret": client_secret, "type": "payment_intent"} if client_secret else None
    )
    return obj


def legacy_subscription_json() -> dict[str, Any]:
    """localstripe's 2017 shape: periods at the top, invoice.payment_intent."""
    obj = subscription_json("active")
    for item in obj["items"]["data"]:
        del item["current_period_start"], item["current_period_end"]
    obj.update(current_period_start=PERIOD_START, current_period_end=PERIOD_END)
    invoice = fixture("invoice")
    invoice.update(id="in_1", status="paid")
    invoice["payment_intent"] = {
        "id": "pi_1",
        "object": "payment_intent",
        "status": "succeeded",
        "client_secret": "pi_1_secret_legacy",
    }
    obj["latest_invoice"] = invoice
    return obj


def error_json(message: str, type_: str = "invalid_request_error", **extra: Any) -> dict:
    return {"error": {"message": message, "type": type_, **extra}}


@pytest.fixture
def transport() -> RecordingTransport:
    return RecordingTransport()


def real_gateway(transport: RecordingTransport, **kwargs: Any) -> StripeGateway:
    return StripeGateway(API_KEY, http_client=transport, **kwargs)


def localstripe_gateway(transport: RecordingTransport, **kwargs: Any) -> StripeGateway:
    return StripeGateway(
        API_KEY,
        "http://127.0.0.1:8420",
        payment_behavior="allow_incomplete",
        http_client=transport,
        **kwargs,
    )


# --- the requests Stripe receives (real-Stripe mode) ------------------------------------


def test_create_customer_sends_user_id_metadata_with_derived_idempotency_key(transport):
    transport.answer(200, customer_json("cus_A"))

    assert real_gateway(transport).create_customer(USER, "evt-7:customer") == "cus_A"

    [req] = transport.requests
    assert (req.method, req.url) == ("post", "https://api.stripe.com/v1/customers")
    assert req.params == {"metadata[user_id]": USER}
    assert req.idempotency_key == "evt-7:customer:create"
    assert req.stripe_version == stripe.api_version == "2026-10-28.endive"
    assert req.authorization == f"Bearer {API_KEY}"


def test_create_customer_with_test_payment_method_makes_the_attached_one_default(transport):
    transport.answer(200, customer_json("cus_A"))
    transport.answer(200, payment_method_json("pm_attached_1"))
    transport.answer(200, customer_json("cus_A"))
    gateway = real_gateway(transport, test_payment_method="pm_card_visa")

    assert gateway.create_customer(USER, "k") == "cus_A"

    assert [(r.method, r.path, r.params, r.idempotency_key) for r in transport.requests] == [
        ("post", "/v1/customers", {"metadata[user_id]": USER}, "k:create"),
        ("post", "/v1/payment_methods/pm_card_visa/attach", {"customer": "cus_A"}, "k:attach_pm"),
        (
            "post",
            "/v1/customers/cus_A",
            # the id Stripe answered with, not the test token
            {"invoice_settings[default_payment_method]": "pm_attached_1"},
            "k:customer_default_pm",
        ),
    ]


def test_create_subscription_default_incomplete_returns_confirmation_secret(transport):
    transport.answer(200, subscription_json("incomplete", latest_invoice=invoice_json("pi_1_s")))

    created = real_gateway(transport).create_subscription("cus_A", PRICE, USER, "k:subscription")

    [req] = transport.requests
    assert (req.method, req.url) == ("post", "https://api.stripe.com/v1/subscriptions")
    assert req.params == {
        "customer": "cus_A",
        "items[0][price]": PRICE,
        "metadata[user_id]": USER,
        "payment_behavior": "default_incomplete",
        "payment_settings[save_default_payment_method]": "on_subscription",
        "expand[0]": "latest_invoice.confirmation_secret",
    }
    assert req.idempotency_key == "k:subscription:create"
    assert created == CreatedSubscription(
        stripe_subscription_id="sub_x",
        stripe_customer_id="cus_A",
        status="incomplete",
        client_secret="pi_1_s",
        current_period_start=PERIOD_START,
        current_period_end=PERIOD_END,
        trial_end=1_234_567_890,  # Stripe's example subscription is in a trial
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        created.status = "active"  # type: ignore[misc]


def test_create_subscription_without_confirmation_secret_has_no_client_secret(transport):
    # e.g. nothing to pay now: the invoice has no confirmation_secret
    transport.answer(200, subscription_json("active", latest_invoice=invoice_json(None)))

    created = real_gateway(transport).create_subscription("cus_A", PRICE, USER, "k")

    assert (created.status, created.client_secret) == ("active", None)


@pytest.mark.parametrize("shape", ["current", "legacy", "both"])
def test_the_gateway_reads_a_period_as_a_webhook_payload_is_read(transport, shape):
    """One reader for both: the item's period first (current API), the top level's
    otherwise (pre-2025 and localstripe), even when an answer carries both."""
    obj = legacy_subscription_json() if shape == "legacy" else subscription_json("active")
    if shape == "both":
        obj.update(current_period_start=1, current_period_end=2)
    transport.answer(200, obj)

    created = real_gateway(transport).create_subscription("cus_A", PRICE, USER, "k")

    state = read_subscription(obj)
    assert (created.current_period_start, created.current_period_end) == (
        state.current_period_start,
        state.current_period_end,
    )
    assert (created.current_period_start, created.current_period_end) == (PERIOD_START, PERIOD_END)


def test_cancel_immediately_deletes_the_subscription(transport):
    transport.answer(
        200, subscription_json("canceled", canceled_at=1_768_000_000, ended_at=1_768_000_001)
    )

    canceled = real_gateway(transport).cancel("sub_x", immediate=True, idempotency_key="k")

    [req] = transport.requests
    assert (req.method, req.url, req.params) == (
        "delete",
        "https://api.stripe.com/v1/subscriptions/sub_x",
        {},
    )
    assert req.idempotency_key == "k:cancel_now"
    assert canceled == CanceledSubscription("sub_x", "canceled", False, 1_768_000_001)


def test_cancel_at_period_end_updates_the_subscription(transport):
    transport.answer(
        200, subscription_json("active", cancel_at_period_end=True, cancel_at=PERIOD_END)
    )

    canceled = real_gateway(transport).cancel("sub_x", immediate=False, idempotency_key="k")

    [req] = transport.requests
    assert (req.method, req.path, req.params) == (
        "post",
        "/v1/subscriptions/sub_x",
        {"cancel_at_period_end": "true"},
    )
    assert req.idempotency_key == "k:cancel_at_period_end"
    assert canceled == CanceledSubscription("sub_x", "active", True, PERIOD_END)


def test_cancel_at_period_end_falls_back_to_the_period_end(transport):
    transport.answer(200, subscription_json("active", cancel_at_period_end=True))

    canceled = real_gateway(transport).cancel("sub_x", immediate=False, idempotency_key="k")

    assert canceled.effective_at == PERIOD_END


def test_set_default_payment_method_on_customer_and_subscription(transport):
    transport.answer(200, payment_method_json("pm_x"))
    transport.answer(200, customer_json("cus_A"))
    transport.answer(200, subscription_json("active"))

    attached = real_gateway(transport).set_default_payment_method("cus_A", "sub_x", "pm_x", "k")

    assert attached == "pm_x"
    assert [(r.method, r.path, r.params, r.idempotency_key) for r in transport.requests] == [
        ("post", "/v1/payment_methods/pm_x/attach", {"customer": "cus_A"}, "k:attach_pm"),
        (
            "post",
            "/v1/customers/cus_A",
            {"invoice_settings[default_payment_method]": "pm_x"},
            "k:customer_default_pm",
        ),
        (
            "post",
            "/v1/subscriptions/sub_x",
            {"default_payment_method": "pm_x"},
            "k:subscription_default_pm",
        ),
    ]


def test_same_caller_key_gives_the_same_stripe_keys_and_another_key_others(transport):
    gateway = real_gateway(transport)
    for _ in range(2):
        transport.answer(200, subscription_json(latest_invoice=invoice_json("s")))
    gateway.create_subscription("cus_A", PRICE, USER, "key-1")
    gateway.create_subscription("cus_A", PRICE, USER, "key-1")
    transport.answer(200, subscription_json(latest_invoice=invoice_json("s")))
    gateway.create_subscription("cus_A", PRICE, USER, "key-2")

    assert [r.idempotency_key for r in transport.requests] == [
        "key-1:create",
        "key-1:create",
        "key-2:create",
    ]


def test_missing_idempotency_key_is_refused_before_any_request(transport):
    with pytest.raises(ValueError, match="idempotency key"):
        real_gateway(transport).cancel("sub_x", immediate=True, idempotency_key="")
    assert transport.requests == []


def test_unknown_payment_behavior_is_refused():
    with pytest.raises(ValueError, match="payment_behavior"):
        StripeGateway(API_KEY, payment_behavior="default_incomplet")


# --- localstripe mode ---------------------------------------------------------------------


def test_localstripe_mode_subscribes_to_a_plan_and_expands_the_payment_intent(transport):
    transport.answer(200, legacy_subscription_json())
    gateway = localstripe_gateway(transport)
    assert gateway.localstripe_mode

    created = gateway.create_subscription("cus_A", PRICE, USER, "k")

    [req] = transport.requests
    assert req.url == "http://127.0.0.1:8420/v1/subscriptions"
    assert req.params == {
        "customer": "cus_A",
        "items[0][plan]": PRICE,
        "metadata[user_id]": USER,
        "payment_behavior": "allow_incomplete",
        "expand[0]": "latest_invoice.payment_intent",
    }
    assert created == CreatedSubscription(
        "sub_x", "cus_A", "active", "pi_1_secret_legacy", PERIOD_START, PERIOD_END,
        created.trial_end,
    )  # fmt: skip


def test_localstripe_mode_sets_no_subscription_default_payment_method(transport):
    # localstripe answers 500 to a subscription's default_payment_method; the
    # customer's default is what it charges.
    transport.answer(200, payment_method_json("pm_new"))
    transport.answer(200, customer_json("cus_A"))

    attached = localstripe_gateway(transport).set_default_payment_method(
        "cus_A", "sub_x", "pm_card_visa", "k"
    )

    assert attached == "pm_new"
    assert [r.path for r in transport.requests] == [
        "/v1/payment_methods/pm_card_visa/attach",
        "/v1/customers/cus_A",
    ]


# --- retries (the library's own loop) -----------------------------------------------------


def test_500_then_200_is_retried_with_the_same_idempotency_key(transport):
    transport.answer(500, error_json("boom", "api_error"))
    transport.answer(200, customer_json("cus_A"))

    assert real_gateway(transport).create_customer(USER, "k") == "cus_A"

    assert [r.idempotency_key for r in transport.requests] == ["k:create", "k:create"]
    assert transport.sleeps == [0.5]  # the library's first back-off: INITIAL_DELAY


def test_500_three_times_gives_stripe_unavailable(transport):
    for _ in range(3):
        transport.answer(500, error_json("boom", "api_error"))

    with pytest.raises(StripeUnavailable) as caught:
        real_gateway(transport).create_subscription("cus_A", PRICE, USER, "k")

    assert (caught.value.code, caught.value.http_status) == ("stripe_unavailable", 500)
    assert caught.value.request_id == "req_3"
    assert [r.idempotency_key for r in transport.requests] == ["k:create"] * 3
    assert len(transport.sleeps) == 2
    assert 0.5 <= transport.sleeps[1] <= 1.0  # exponential back-off, jittered


def test_max_network_retries_is_passed_to_the_library(transport):
    transport.answer(503, error_json("down", "api_error"))

    with pytest.raises(StripeUnavailable):
        real_gateway(transport, max_network_retries=0).create_customer(USER, "k")

    assert len(transport.requests) == 1


def test_connection_error_is_retried(transport):
    transport.fail(stripe.APIConnectionError("connection reset", should_retry=True))
    transport.answer(200, subscription_json("canceled", ended_at=1_768_000_000))

    canceled = real_gateway(transport).cancel("sub_x", immediate=True, idempotency_key="k")

    assert canceled.status == "canceled"
    assert [(r.method, r.idempotency_key) for r in transport.requests] == [
        ("delete", "k:cancel_now"),
        ("delete", "k:cancel_now"),
    ]


def test_connection_errors_to_the_end_give_stripe_unavailable(transport):
    for _ in range(3):
        transport.fail(stripe.APIConnectionError(f"timed out ({API_KEY})", should_retry=True))

    with pytest.raises(StripeUnavailable) as caught:
        real_gateway(transport).create_customer(USER, "k")

    assert len(transport.requests) == 3
    assert (caught.value.code, caught.value.http_status) == ("stripe_unavailable", None)
    assert API_KEY not in caught.value.message


def test_connection_error_the_library_marks_final_is_not_retried(transport):
    transport.fail(stripe.APIConnectionError("bad certificate", should_retry=False))

    with pytest.raises(StripeUnavailable):
        real_gateway(transport).create_customer(USER, "k")

    assert len(transport.requests) == 1


def test_409_is_retried_but_429_only_when_stripe_says_so(transport):
    gateway = real_gateway(transport)
    transport.answer(409, error_json("lock", "invalid_request_error"))
    transport.answer(200, customer_json("cus_A"))
    assert gateway.create_customer(USER, "a") == "cus_A"
    assert len(transport.requests) == 2

    transport.answer(429, error_json("slow down", "invalid_request_error", code="rate_limit"))
    with pytest.raises(StripeUnavailable):
        gateway.create_customer(USER, "b")
    assert len(transport.requests) == 3  # not retried

    transport.answer(
        429, error_json("lock", "invalid_request_error"), {"Stripe-Should-Retry": "true"}
    )
    transport.answer(200, customer_json("cus_B"))
    assert gateway.create_customer(USER, "c") == "cus_B"
    assert len(transport.requests) == 5


# --- rejections and secrets ---------------------------------------------------------------


def test_card_declined_is_rejected_with_its_code_and_not_retried(transport):
    transport.answer(
        402,
        error_json(
            "Your card was declined.", "card_error", code="card_declined", decline_code="generic"
        ),
    )

    with pytest.raises(StripeRejected) as caught:
        real_gateway(transport).set_default_payment_method("cus_A", "sub_x", "pm_bad", "k")

    assert caught.value.code == "card_declined"
    assert caught.value.message == "Your card was declined."
    assert caught.value.http_status == 402
    assert len(transport.requests) == 1


def test_unknown_subscription_is_rejected_with_stripes_code(transport):
    transport.answer(
        404,
        error_json("No such subscription: 'sub_nope'", code="resource_missing", param="id"),
    )

    with pytest.raises(StripeRejected) as caught:
        real_gateway(transport).cancel("sub_nope", immediate=False, idempotency_key="k")

    assert (caught.value.code, caught.value.http_status) == ("resource_missing", 404)
    assert caught.value.message == "No such subscription: 'sub_nope'"
    assert len(transport.requests) == 1


def test_rejection_without_a_code_gets_a_generic_one(transport):
    transport.answer(400, error_json("Bad request"))  # localstripe's style: no code

    with pytest.raises(StripeRejected) as caught:
        real_gateway(transport).create_customer(USER, "k")

    assert caught.value.code == "stripe_rejected"


def test_the_api_key_never_appears_in_errors_or_logs(transport, caplog):
    caplog.set_level(logging.DEBUG)
    gateway = real_gateway(transport)
    transport.answer(401, error_json(f"Invalid API Key provided: {API_KEY}"))
    with pytest.raises(StripeRejected) as bad_key:
        gateway.create_customer(USER, "k1")
    transport.answer(400, error_json(f"Something about {API_KEY} and sk_live_abc123"))
    with pytest.raises(StripeRejected) as bad_request:
        gateway.create_customer(USER, "k2")

    assert bad_key.value.code == "stripe_rejected"
    assert bad_key.value.message == "Stripe refused this service's credentials."
    assert bad_request.value.message == "Something about [redacted] and [redacted]"
    for error in (bad_key.value, bad_request.value):
        for text in (str(error), repr(error), error.message):
            assert API_KEY not in text
            assert "sk_live_abc123" not in text
        assert error.__cause__ is None and error.__suppress_context__
    assert API_KEY not in repr(gateway)
    assert "stripe create_customer failed" in caplog.text
    assert API_KEY not in caplog.text
    assert "metadata" not in caplog.text  # no request bodies, not even the library's
