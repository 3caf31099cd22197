"""Test helpers for localstripe (a fake Stripe API) on 127.0.0.1.

    with localstripe_server(tmp_path) as ls:
        create_plan(ls.url, "price_lisa_premium_monthly", 999, "month", "Lisa Premium")
        register_webhook(ls.url, "http://127.0.0.1:8000/webhooks/stripe", "whsec_x")
        gateway = StripeGateway(TEST_API_KEY, ls.url, payment_behavior="allow_incomplete",
                                test_payment_method="pm_card_visa", max_network_retries=0)

The implementation lives in scripts/dev/localstripe_server.py, which `make demo` uses too.
"""

from __future__ import annotations

from scripts.dev.localstripe_server import (
    TEST_API_KEY,
    LocalStripe,
    create_plan,
    free_port,
    register_webhook,
)
from scripts.dev.localstripe_server import localstripe as localstripe_server
from scripts.dev.localstripe_server import start as start_localstripe

__all__ = [
    "TEST_API_KEY",
    "LocalStripe",
    "create_plan",
    "free_port",
    "localstripe_server",
    "register_webhook",
    "start_localstripe",
]
