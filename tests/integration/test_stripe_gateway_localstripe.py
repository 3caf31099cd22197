"""StripeGateway against a real localstripe on 127.0.0.1 (started here, stopped after)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ledger.stripe.gateway import (
    CanceledSubscription,
    StripeGateway,
    StripeRejected,
    StripeUnavailable,
)
from tests.localstripe import (
    TEST_API_KEY,
    LocalStripe,
    create_plan,
    free_port,
    localstripe_server,
)

PRICE = "price_lisa_premium_monthly"
USER = "user_1767225600_abcdefghij"


@pytest.fixture(scope="module")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStripe]:
    with localstripe_server(tmp_path_factory.mktemp("localstripe")) as server:
        create_plan(server.url, PRICE, 999, "month", "Lisa Premium")
        yield server


@pytest.fixture
def make_gateway(localstripe: LocalStripe) -> Iterator[Callable[..., StripeGateway]]:
    made: list[StripeGateway] = []

    def make(**kwargs: Any) -> StripeGateway:
        options: dict[str, Any] = {
            "api_base": localstripe.url,
            # localstripe has no idempotency: a retried POST could create a duplicate.
            "max_network_retries": 0,
            "payment_behavior": "allow_incomplete",
            "test_payment_method": "pm_card_visa",
        }
        made.append(StripeGateway(TEST_API_KEY, **(options | kwargs)))
        return made[-1]

    yield make
    for gateway in made:
        gateway.close()


@pytest.fixture
def gateway(make_gateway: Callable[..., StripeGateway]) -> StripeGateway:
    return make_gateway()


def key() -> str:
    return uuid.uuid4().hex


def test_subscription_lifecycle(gateway: StripeGateway) -> None:
    customer_id = gateway.create_customer(USER, key())
    assert customer_id.startswith("cus_")

    created = gateway.create_subscription(customer_id, PRICE, USER, key())
    assert created.stripe_subscription_id.startswith("sub_")
    assert created.stripe_customer_id == customer_id
    assert created.status == "active"  # pm_card_visa pays the first invoice at once
    assert created.client_secret is not None and "_secret_" in created.client_secret
    assert created.current_period_start is not None
    assert created.current_period_end is not None
    assert created.current_period_end > created.current_period_start

    sub_id = created.stripe_subscription_id
    at_period_end = gateway.cancel(sub_id, immediate=False, idempotency_key=key())
    assert at_period_end == CanceledSubscription(sub_id, "active", True, created.current_period_end)

    attached = gateway.set_default_payment_method(customer_id, sub_id, "pm_card_visa", key())
    assert attached.startswith("pm_") and attached != "pm_card_visa"  # a new PM each attach

    now = gateway.cancel(sub_id, immediate=True, idempotency_key=key())
    assert (now.stripe_subscription_id, now.status) == (sub_id, "canceled")
    assert now.effective_at is not None
    assert now.effective_at >= created.current_period_start


def test_unknown_subscription_is_rejected(gateway: StripeGateway) -> None:
    with pytest.raises(StripeRejected) as caught:
        gateway.cancel("sub_nonexistent", immediate=True, idempotency_key=key())
    assert caught.value.http_status == 404
    assert caught.value.code == "stripe_rejected"  # localstripe sends no error code


def test_unknown_plan_is_rejected(gateway: StripeGateway) -> None:
    customer_id = gateway.create_customer(USER, key())
    with pytest.raises(StripeRejected):
        gateway.create_subscription(customer_id, "price_nope", USER, key())


def test_declined_card_is_rejected_with_its_code(make_gateway) -> None:
    gateway = make_gateway(test_payment_method="pm_card_visa_chargeDeclined")
    with pytest.raises(StripeRejected) as caught:
        gateway.create_customer(USER, key())
    assert (caught.value.code, caught.value.message) == ("card_declined", "Your card was declined.")


def test_real_stripe_mode_is_refused_by_localstripe(make_gateway) -> None:
    """Why the mode is explicit: localstripe rejects the current API's request."""
    gateway = make_gateway(payment_behavior="default_incomplete")
    customer_id = gateway.create_customer(USER, key())
    with pytest.raises(StripeRejected) as caught:
        gateway.create_subscription(customer_id, PRICE, USER, key())
    assert caught.value.http_status == 400


def test_nothing_listening_is_unavailable(make_gateway) -> None:
    # connection refused: the library retries it once (after ~0.5 s), then gives up
    gateway = make_gateway(api_base=f"http://127.0.0.1:{free_port()}", max_network_retries=1)
    with pytest.raises(StripeUnavailable) as caught:
        gateway.create_customer(USER, key())
    assert caught.value.code == "stripe_unavailable"
