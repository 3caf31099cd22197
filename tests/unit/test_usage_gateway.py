"""The exact requests Stripe receives when overage is reported: a billing meter
event (localstripe has no meters) and an invoice item."""

from __future__ import annotations

from tests.unit.test_stripe_gateway import RecordingTransport, real_gateway

USER = "user_1767225600_abcdefghij"


def test_a_meter_event_carries_the_customer_the_value_and_its_identifier() -> None:
    transport = RecordingTransport()
    key = f"usage-{USER}-ai_requests-1767225600"
    transport.answer(
        200,
        {"object": "billing.meter_event", "event_name": "ai_requests", "identifier": key,
         "timestamp": 1769903999, "payload": {"stripe_customer_id": "cus_A", "value": "200"}},
    )  # fmt: skip
    gateway = real_gateway(transport)
    assert gateway.report_meter_event("ai_requests", "cus_A", 200, 1769903999, key) == key
    [req] = transport.requests
    assert (req.method, req.url) == ("post", "https://api.stripe.com/v1/billing/meter_events")
    assert req.params == {
        "event_name": "ai_requests",
        "identifier": key,
        "timestamp": "1769903999",
        "payload[stripe_customer_id]": "cus_A",
        "payload[value]": "200",
    }
    assert req.idempotency_key == f"{key}:meter_event"


def test_an_invoice_item_carries_the_amount_in_minor_units() -> None:
    transport = RecordingTransport()
    key = f"usage-{USER}-storage_mb-1767225600"
    transport.answer(
        200, {"id": "ii_1", "object": "invoiceitem", "amount": 2500, "currency": "usd"}
    )
    gateway = real_gateway(transport)
    assert (
        gateway.create_invoice_item("cus_A", 2500, "usd", "storage", {"usage_report": key}, key)
        == "ii_1"
    )
    [req] = transport.requests
    assert (req.method, req.url) == ("post", "https://api.stripe.com/v1/invoiceitems")
    assert req.params == {
        "customer": "cus_A",
        "amount": "2500",
        "currency": "usd",
        "description": "storage",
        "metadata[usage_report]": key,
    }
    assert req.idempotency_key == f"{key}:invoice_item"
