"""The extension's API contract, field for field, and its refusals (no Stripe
needed for these; the Stripe paths run against localstripe in tests/e2e)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from ledger.config import Settings
from ledger.domain.user import User, hash_token
from ledger.opening import open_ledger
from tests import stripe_objects as so
from tests.conftest import deliver, eventually, make_settings, stored_events

USER = "user_1767225600_abcdefghij"
OTHER = "user_1767225601_zyxwvutsrq"


@pytest.fixture
def live_settings(database_url: str) -> Settings:
    return make_settings(
        database_url,
        LEDGER_PROCESSOR="inline",
        LEDGER_PROCESSOR_INTERVAL=0.05,
        LEDGER_ALLOWED_ORIGINS="chrome-extension://abcdefghijklmnop",
    )


@pytest.fixture
def client(live_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(live_settings)) as c:
        yield c


def register(client: TestClient, user_id: str = USER) -> dict[str, str]:
    answer = client.post("/api/users", json={"user_id": user_id})
    assert answer.status_code == 201
    return {"X-User-ID": user_id, "Authorization": f"Bearer {answer.json()['token']}"}


def wait_for(client: TestClient, headers: dict[str, str], **expected: Any) -> dict[str, Any]:
    def answer() -> dict[str, Any] | None:
        got = client.get("/api/stripe/get-subscription", headers=headers).json()
        return got if all(got.get(k) == v for k, v in expected.items()) else None

    return eventually(answer)


def assert_error(answer: Any, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error", "error_code"}
    assert answer.json()["error_code"] == code
    assert isinstance(answer.json()["error"], str) and answer.json()["error"]


# --- identity -------------------------------------------------------------------------


def test_registration_answers_the_id_and_a_token_once(
    client: TestClient, live_settings: Settings
) -> None:
    answer = client.post("/api/users", json={"user_id": USER})
    assert answer.status_code == 201
    assert set(answer.json()) == {"user_id", "token"}
    assert answer.json()["user_id"] == USER
    token = answer.json()["token"]
    assert isinstance(token, str) and len(token) >= 40
    assert_error(client.post("/api/users", json={"user_id": USER}), 409, "user_exists")
    with open_ledger(live_settings) as ledger:
        user = ledger.repository.get(User.create_id(USER))
        assert user.token_hash == hash_token(token) and token not in repr(user.__dict__)


@pytest.mark.parametrize(("body", "code"), [
    ({"user_id": "user_123"}, "invalid_user_id"),
    ({"user_id": "user_1767225600_ABCDEFGHIJ"}, "invalid_user_id"),
    ({"user_id": "user_1767225600_abcdefghi"}, "invalid_user_id"),
    ({"user_id": "admin"}, "invalid_user_id"),
    ({"user_id": 5}, "bad_request"), ({}, "bad_request"), ([], "bad_request"),
    ("user_1767225600_abcdefghij", "bad_request"),
])  # fmt: skip
def test_a_malformed_user_id_is_refused(client: TestClient, body: Any, code: str) -> None:
    assert_error(client.post("/api/users", json=body), 400, code)


def test_per_user_calls_need_the_users_own_token(client: TestClient) -> None:
    mine = register(client)
    theirs = register(client, OTHER)
    attempts = [
        {},
        {"X-User-ID": USER},
        {"X-User-ID": USER, "Authorization": "Bearer wrong"},
        {"X-User-ID": USER, "Authorization": theirs["Authorization"]},
        {"X-User-ID": USER, "Authorization": mine["Authorization"].replace("Bearer", "Basic")},
        {"X-User-ID": "user_1767225699_nobodyhere", "Authorization": mine["Authorization"]},
    ]
    for headers in attempts:
        for method, path in [
            ("GET", "get-subscription"),
            ("POST", "verify-subscription"),
            ("POST", "cancel-subscription"),
            ("POST", "update-payment-method"),
            ("POST", "create-subscription"),
        ]:
            answer = client.request(method, f"/api/stripe/{path}", headers=headers, json={})
            assert_error(answer, 401, "unauthorized")
    assert client.get("/api/stripe/get-subscription", headers=mine).status_code == 200


# --- reads ---------------------------------------------------------------------------


def test_get_and_verify_without_a_subscription(client: TestClient) -> None:
    headers = register(client)
    assert client.get("/api/stripe/get-subscription", headers=headers).json() == {"active": False}
    assert client.post("/api/stripe/verify-subscription", headers=headers).json() == {
        "valid": False,
        "subscription_id": None,
        "status": None,
    }


def test_get_and_verify_answer_the_contract_field_for_field(client: TestClient) -> None:
    headers = register(client)
    deliver(client, "evt_1", "customer.created", so.customer("cus_1", user_id=USER), 100)
    deliver(
        client,
        "evt_2",
        "customer.subscription.created",
        so.subscription("sub_1", "cus_1", price_id="price_lisa_premium_monthly"),
        101,
    )
    answer = wait_for(client, headers, active=True)
    assert answer == {
        "active": True, "id": "sub_1", "status": "active",
        "plan_name": "LISA Premium - Monthly", "amount": 999, "interval": "month",
        "current_period_start": 1_767_225_600, "current_period_end": 1_769_904_000,
        "cancel_at_period_end": False,
    }  # fmt: skip
    types = {k: type(v) for k, v in answer.items()}
    assert types == {
        "active": bool,
        "id": str,
        "status": str,
        "plan_name": str,
        "amount": int,
        "interval": str,
        "current_period_start": int,
        "current_period_end": int,
        "cancel_at_period_end": bool,
    }
    verify = client.post("/api/stripe/verify-subscription", headers=headers).json()
    assert verify == {"valid": True, "subscription_id": "sub_1", "status": "active"}
    # another user sees nothing of it
    assert client.get("/api/stripe/get-subscription", headers=register(client, OTHER)).json() == {
        "active": False
    }


# --- refusals before Stripe is asked -------------------------------------------------


def create(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    payload = {
        "user_id": USER,
        "price_id": "price_lisa_premium_monthly",
        "billing_cycle": "month",
        "return_url": "chrome-extension://abc/popup.html",
    }
    payload.update(body)
    return client.post("/api/stripe/create-subscription", headers=headers, json=payload)


def test_create_subscription_refusals(client: TestClient) -> None:
    headers = register(client)
    assert_error(create(client, headers, user_id=OTHER), 403, "forbidden")
    assert_error(create(client, headers, price_id="price_not_ours"), 400, "invalid_price")
    assert_error(create(client, headers, billing_cycle="year"), 400, "invalid_billing_cycle")
    fortnight = create(client, headers, billing_cycle="fortnight")
    assert_error(fortnight, 400, "bad_request")
    assert "billing_cycle" in fortnight.json()["error"]  # the README: errors name the field
    assert_error(
        client.post("/api/stripe/create-subscription", headers=headers, content=b"{not json"),
        400,
        "bad_request",
    )
    deliver(
        client,
        "evt_1",
        "customer.subscription.created",
        so.subscription("sub_1", "cus_1", user_id=USER),
        100,
    )
    wait_for(client, headers, active=True)
    assert_error(create(client, headers), 409, "subscription_exists")


def test_cancel_and_update_without_a_subscription_are_404(client: TestClient) -> None:
    headers = register(client)
    assert_error(
        client.post("/api/stripe/cancel-subscription", headers=headers, json={"immediate": True}),
        404,
        "subscription_not_found",
    )
    assert_error(
        client.post(
            "/api/stripe/update-payment-method",
            headers=headers,
            json={"payment_method_id": "pm_card_visa"},
        ),
        404,
        "subscription_not_found",
    )
    assert_error(
        client.post("/api/stripe/cancel-subscription", headers=headers, json={"immediate": "yes"}),
        400,
        "bad_request",
    )
    assert_error(
        client.post(
            "/api/stripe/update-payment-method",
            headers=headers,
            json={"payment_method_id": "card_1"},
        ),
        400,
        "bad_request",
    )


def test_without_a_stripe_key_billing_actions_say_so(client: TestClient) -> None:
    headers = register(client)
    assert_error(create(client, headers), 503, "stripe_not_configured")


# --- hardening -------------------------------------------------------------------------


def test_rate_limits_per_user_and_per_address(database_url: str) -> None:
    settings = make_settings(
        database_url,
        LEDGER_RATE_LIMIT_PER_USER="3/minute",
        LEDGER_RATE_LIMIT_PER_ADDRESS="8/minute",
    )
    with TestClient(create_app(settings)) as client:
        headers = register(client)
        codes = [
            client.get("/api/stripe/get-subscription", headers=headers).status_code
            for _ in range(4)
        ]
        assert codes == [200, 200, 200, 429]
        limited = client.get("/api/stripe/get-subscription", headers=headers)
        assert_error(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        other = {"X-User-ID": OTHER}  # another user, same address: the address limit
        codes = [
            client.get("/api/stripe/get-subscription", headers=other).status_code for _ in range(3)
        ]
        assert 429 in codes
        assert client.get("/healthz").status_code == 200  # only /api/ is limited


def test_cors_allows_only_the_configured_origins(client: TestClient) -> None:
    allowed = "chrome-extension://abcdefghijklmnop"
    preflight = client.options(
        "/api/stripe/get-subscription",
        headers={
            "Origin": allowed,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization,x-user-id",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == allowed
    denied = client.options(
        "/api/stripe/get-subscription",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in denied.headers
    simple = client.get("/api/stripe/get-subscription", headers={"Origin": allowed})
    assert simple.headers["access-control-allow-origin"] == allowed
    assert simple.headers["vary"] == "Origin"
    # no Origin (a server's call): no CORS grant, and caches still told it may differ
    plain = client.get("/api/stripe/get-subscription")
    assert "access-control-allow-origin" not in plain.headers
    assert plain.headers["vary"] == "Origin"


def test_stripe_unreachable_answers_502_and_records_the_failure(database_url: str) -> None:
    from scripts.dev.localstripe_server import free_port

    settings = make_settings(
        database_url,
        STRIPE_SECRET_KEY="sk_test_unreachable",
        STRIPE_API_BASE=f"http://127.0.0.1:{free_port()}",
        STRIPE_MAX_NETWORK_RETRIES=1,
    )
    with TestClient(create_app(settings)) as client:
        headers = register(client)
        answer = create(client, headers)
        assert_error(answer, 502, "stripe_unavailable")
        assert "sk_test_unreachable" not in answer.text
    with open_ledger(settings) as ledger:
        events = stored_events(ledger, User.create_id(USER))
    assert [type(e).__qualname__ for e in events] == ["User.Registered", "User.StripeCallFailed"]
    assert (events[1].action, events[1].error_code) == ("create_subscription", "stripe_unavailable")


def test_an_api_body_over_16_kib_is_refused(client: TestClient) -> None:
    headers = register(client)
    answer = client.post(
        "/api/stripe/cancel-subscription",
        headers=headers,
        content=b'{"immediate": false, "pad": "' + b"x" * 17_000 + b'"}',
    )
    assert_error(answer, 413, "payload_too_large")


def test_a_bug_answers_500_internal_error_without_its_details(
    live_settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from projections.read_side import ReadSide

    async def broken(self: ReadSide, user_id: str) -> dict[str, Any]:
        raise RuntimeError("a bug holding sk_test_secret")

    monkeypatch.setattr(ReadSide, "status_async", broken)
    with TestClient(create_app(live_settings), raise_server_exceptions=False) as client:
        headers = register(client)
        answer = client.get("/api/stripe/get-subscription", headers=headers)
    assert_error(answer, 500, "internal_error")
    assert "sk_test_secret" not in answer.text and "Traceback" not in answer.text
    assert "unhandled RuntimeError on GET /api/stripe/get-subscription" in caplog.text


@pytest.mark.parametrize(
    ("status", "refused"),
    [("trialing", True), ("past_due", True), ("unpaid", True), ("paused", True),
     ("incomplete", False), ("canceled", False)],
)  # fmt: skip
def test_which_subscriptions_block_a_new_one(
    client: TestClient, status: str, refused: bool
) -> None:
    """A live subscription (even unpaid) blocks a second one; an abandoned first
    payment (incomplete) or an ended one does not."""
    headers = register(client)
    deliver(
        client,
        "evt_1",
        "customer.subscription.created",
        so.subscription("sub_1", "cus_1", status=status, user_id=USER),
        100,
    )
    wait_for(client, headers, status=status)
    answer = create(client, headers)
    if refused:
        assert_error(answer, 409, "subscription_exists")
    else:  # past the check, to the gateway, which has no Stripe key in these tests
        assert_error(answer, 503, "stripe_not_configured")
