"""No input makes the API answer 500, and malformed input changes nothing; every
answer names its request (the given X-Request-ID when well formed)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from api.app import create_app
from ledger.application import Ledger
from ledger.opening import open_ledger
from tests.conftest import make_settings

ROUTES = [
    ("POST", "/api/users"),
    ("POST", "/api/stripe/create-subscription"),
    ("GET", "/api/stripe/get-subscription"),
    ("POST", "/api/stripe/verify-subscription"),
    ("POST", "/api/stripe/cancel-subscription"),
    ("POST", "/api/stripe/update-payment-method"),
    ("POST", "/webhooks/stripe"),
    ("GET", "/api/v1/audit/users/user_1767225600_abcdefghij"),
    ("GET", "/api/v1/audit/webhooks"),
    ("GET", "/healthz"),
    ("GET", "/nowhere"),
    ("DELETE", "/api/stripe/get-subscription"),
    ("GET", "/api/v1/billing/invoices?limit=0&starting_after=in_x"),
    ("GET", "/api/v1/billing/invoices?limit=2"),
    ("GET", "/api/v1/billing/entitlements"),
    ("GET", "/api/v1/billing/entitlements/check?feature=%00%ff"),
    ("GET", "/api/v1/billing/entitlements/check?feature=sso&feature=x"),
    ("GET", "/api/v1/billing/notifications?after=-1&limit=x"),
    ("GET", "/api/v1/billing/notifications?after=99999999999999999999999"),
]
USER = "user_1767225600_abcdefghij"
WELL_FORMED = re.compile(r"[A-Za-z0-9._-]{1,64}")
MADE = re.compile(r"req_[0-9a-f]{24}")

header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
near_valid = st.fixed_dictionaries({}, optional={
    "user_id": st.sampled_from([USER, "user_1", "", None, 7]) | st.text(max_size=20),
    "price_id": st.sampled_from(["price_lisa_premium_monthly", "price_x", ""]) | json_values,
    "billing_cycle": st.sampled_from(["month", "year", "day"]) | json_values,
    "return_url": json_values,
    "immediate": st.sampled_from([True, False, "true", 1, None]),
    "payment_method_id": st.sampled_from(["pm_card_visa", "pm_", "card_1"]) | json_values,
    "id": st.sampled_from(["evt_1", "x"]), "type": st.text(max_size=10),
    "created": json_values, "data": json_values,
})  # fmt: skip
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    near_valid.map(lambda v: json.dumps(v).encode()),
)


@pytest.fixture
def fuzz_client(database_url: str) -> Iterator[tuple[TestClient, str, Ledger]]:
    settings = make_settings(
        database_url,
        LEDGER_RATE_LIMIT_PER_USER="1000000/minute",
        LEDGER_RATE_LIMIT_PER_ADDRESS="1000000/minute",
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        token = client.post("/api/users", json={"user_id": USER}).json()["token"]
        with open_ledger(settings) as reader:
            yield client, token, reader


@settings(max_examples=150)
@given(
    route=st.sampled_from(ROUTES),
    headers=st.dictionaries(
        st.sampled_from(
            [
                "X-User-ID",
                "Authorization",
                "Content-Type",
                "Stripe-Signature",
                "Origin",
                "Content-Length",
                "X-Request-ID",
            ]
        ),
        header_text,
        max_size=4,
    ),
    credentials=st.booleans(),
    body=bodies,
)
def test_no_input_makes_the_api_answer_500_or_change_anything(
    fuzz_client: tuple[TestClient, str, Ledger],
    route: tuple[str, str],
    headers: dict[str, str],
    credentials: bool,
    body: bytes,
) -> None:
    client, token, ledger = fuzz_client
    headers.pop("Content-Length", None)  # the client computes it; a lie is not ours to test
    if credentials:
        headers.update({"X-User-ID": USER, "Authorization": f"Bearer {token}"})
    head = ledger.recorder.max_notification_id()
    method, path = route
    answer = client.request(method, path, headers=headers, content=body)
    assert answer.status_code < 500, answer.text
    given = headers.get("X-Request-ID")
    if given is not None and WELL_FORMED.fullmatch(given):
        assert answer.headers["Request-Id"] == given
    else:
        assert MADE.fullmatch(answer.headers["Request-Id"])
    if answer.status_code >= 400:
        assert set(answer.json()) == {"error", "error_code"}
        assert "Traceback" not in answer.text and token not in answer.text
    if not (path == "/api/users" and answer.status_code == 201):
        assert ledger.recorder.max_notification_id() == head
