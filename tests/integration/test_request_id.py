"""Request ids, on both stores: every answer names its request in `Request-Id` (the
caller's well-formed X-Request-ID, else one made here), refusals, 429s and 500s
too; and the events an API call records carry it, shown as their cause by the
audit endpoints and by `ledger history`. Stripe's side of the extension's actions
is the recording transport (see tests/stripe_transport.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from api.app import create_app
from ledger.config import Settings
from ledger.domain.user import User
from ledger.opening import open_ledger
from ledger.stripe.gateway import StripeGateway
from projections.history import History
from scripts.cli import main
from tests import stripe_objects as so
from tests.conftest import make_settings, stored_events
from tests.stripe_transport import RecordingTransport

USER = "user_1767225600_abcdefghij"
OTHER = "user_1767225600_zzzzzzzzzz"
ADMIN = {"Authorization": "Bearer adm_test"}
MADE = re.compile(r"req_[0-9a-f]{24}")


@pytest.fixture
def transport() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
def live_settings(database_url: str) -> Settings:
    return make_settings(database_url, STRIPE_SECRET_KEY=SecretStr("sk_test_51RequestIds0000"))


@pytest.fixture
def client(
    live_settings: Settings, transport: RecordingTransport, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.setattr(
        "api.bootstrap.StripeGateway", partial(StripeGateway, http_client=transport)
    )
    with TestClient(create_app(live_settings)) as c:
        yield c


def register(client: TestClient, user_id: str = USER, **headers: str) -> tuple[Any, dict]:
    answer = client.post("/api/users", json={"user_id": user_id}, headers=headers)
    assert answer.status_code == 201, answer.text
    token = answer.json()["token"]
    return answer, {"X-User-ID": user_id, "Authorization": f"Bearer {token}"}


def events(client: TestClient, user_id: str = USER) -> list[dict[str, Any]]:
    answer = client.get("/api/v1/audit/events", params={"user_id": user_id}, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def causes(client: TestClient, user_id: str = USER) -> list[tuple[str, str, dict[str, Any]]]:
    return [(e["aggregate"], e["type"], e["cause"]) for e in events(client, user_id)]


def api(action: str, request_id: str | None) -> dict[str, Any]:
    return {"kind": "api", "stripe_event_id": None, "action": action, "request_id": request_id}


def test_a_given_request_id_is_answered_and_is_the_cause_of_what_the_call_recorded(
    client: TestClient,
) -> None:
    answer, _ = register(client, **{"X-Request-ID": "abc-123"})
    assert answer.headers["Request-Id"] == "abc-123"
    [(aggregate, kind, cause)] = causes(client)
    assert (aggregate, kind, cause) == ("User", "Registered", api("Registered", "abc-123"))
    [registered] = events(client)
    assert "request_id" not in registered["data"]  # the cause says it, not the data
    actions = client.get(f"/api/v1/audit/users/{USER}/actions", headers=ADMIN)
    assert MADE.fullmatch(actions.headers["Request-Id"])  # the audit call's own
    [action] = actions.json()["data"]
    assert (action["action"], action["request_id"]) == ("Registered", "abc-123")


@pytest.mark.parametrize(
    "given",
    ["", "a" * 65, "abc 123", "abc/123", "abc-123,def", "<script>", "abc\t123", "caf%C3%A9"],
)
def test_a_malformed_request_id_is_replaced_by_one_made_here(
    client: TestClient, given: str
) -> None:
    _, headers = register(client)
    answer = client.post("/api/users/token", headers={**headers, "X-Request-ID": given})
    assert answer.status_code == 201, answer.text
    made = answer.headers["Request-Id"]
    assert MADE.fullmatch(made) and made != given
    assert causes(client)[-1] == ("User", "TokenRotated", api("TokenRotated", made))


def test_without_a_request_id_each_request_gets_one_of_its_own_recorded_with_its_events(
    client: TestClient,
) -> None:
    first, headers = register(client)
    second = client.post("/api/users/token", headers=headers)
    made = [first.headers["Request-Id"], second.headers["Request-Id"]]
    assert all(MADE.fullmatch(m) for m in made) and made[0] != made[1]
    assert [c for _, _, c in causes(client)] == [
        api("Registered", made[0]),
        api("TokenRotated", made[1]),
    ]


def test_the_longest_well_formed_request_id_is_kept(client: TestClient) -> None:
    given = "A.b_" + "9-" * 30
    assert len(given) == 64
    answer, _ = register(client, **{"X-Request-ID": given})
    assert answer.headers["Request-Id"] == given
    assert causes(client)[0][2]["request_id"] == given


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("POST", "/api/users", {"json": {"user_id": "nobody"}}, 400),
        ("POST", "/api/users", {"content": b"{"}, 400),
        ("GET", "/api/stripe/get-subscription", {}, 401),
        ("GET", "/api/v1/audit/events", {}, 401),
        ("GET", "/api/v1/audit/deliveries/evt_none", {"headers": ADMIN}, 404),
        ("DELETE", f"/api/v1/audit/users/{OTHER}/tokens", {"headers": ADMIN}, 404),
        ("GET", "/no/such/route", {}, 404),
        ("POST", "/webhooks/stripe", {"content": b"{}"}, 400),
    ],
)
def test_refusals_name_their_request_too(
    client: TestClient, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    kwargs = dict(kwargs)  # the parameters are shared by both stores' runs
    headers = {**kwargs.pop("headers", {}), "X-Request-ID": "err-1"}
    answer = client.request(method, path, headers=headers, **kwargs)
    assert answer.status_code == status, answer.text
    assert answer.headers["Request-Id"] == "err-1"
    assert set(answer.json()) == {"error", "error_code"}
    bare = client.request(method, path, headers=headers | {"X-Request-ID": "no good"}, **kwargs)
    assert bare.status_code == status and MADE.fullmatch(bare.headers["Request-Id"])


def test_a_429_names_its_request(database_url: str) -> None:
    settings = make_settings(database_url, LEDGER_RATE_LIMIT_PER_ADDRESS="1/minute")
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/v1/audit/events", headers=ADMIN).status_code == 200
        answer = client.get("/api/v1/audit/events", headers={**ADMIN, "X-Request-ID": "slow.1"})
        assert answer.status_code == 429
        assert answer.headers["Request-Id"] == "slow.1" and "Retry-After" in answer.headers


def test_a_500_names_its_request(live_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: History, user_id: str) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(History, "actions", broken)
    with TestClient(create_app(live_settings), raise_server_exceptions=False) as client:
        answer = client.get(
            f"/api/v1/audit/users/{USER}/actions", headers={**ADMIN, "X-Request-ID": "bug-1"}
        )
    assert (answer.status_code, answer.json()["error_code"]) == (500, "internal_error")
    assert answer.headers["Request-Id"] == "bug-1"


def test_the_extensions_stripe_actions_and_their_failures_record_their_request_ids(
    client: TestClient, transport: RecordingTransport, live_settings: Settings
) -> None:
    _, headers = register(client, **{"X-Request-ID": "ext-register"})

    def call(path: str, request_id: str, body: dict[str, Any]) -> Any:
        answer = client.post(
            f"/api/stripe/{path}", headers={**headers, "X-Request-ID": request_id}, json=body
        )
        assert answer.headers["Request-Id"] == request_id
        return answer

    transport.answer(200, so.customer("cus_1", user_id=USER))
    transport.answer(200, so.subscription("sub_1", "cus_1", user_id=USER))
    create = {"user_id": USER, "price_id": "price_lisa_premium_monthly", "billing_cycle": "month"}
    assert call("create-subscription", "ext-create", create).status_code == 200
    declined = {"type": "card_error", "code": "card_declined", "message": "declined"}
    transport.answer(402, {"error": declined})
    pay = {"payment_method_id": "pm_1"}
    assert call("update-payment-method", "ext-pay-1", pay).status_code == 400
    transport.answer(200, {"id": "pm_1", "object": "payment_method", "customer": "cus_1"})
    transport.answer(200, so.customer("cus_1", user_id=USER))
    transport.answer(200, so.subscription("sub_1", "cus_1", user_id=USER))
    assert call("update-payment-method", "ext-pay-2", pay).status_code == 200
    transport.answer(200, so.subscription("sub_1", "cus_1", user_id=USER, status="canceled"))
    assert call("cancel-subscription", "ext-cancel", {"immediate": True}).status_code == 200
    revoke = client.delete(
        f"/api/v1/audit/users/{USER}/tokens", headers={**ADMIN, "X-Request-ID": "op-revoke"}
    )
    assert revoke.status_code == 200

    with open_ledger(live_settings) as ledger:
        recorded = [
            (type(e).__name__, e.request_id)  # type: ignore[attr-defined]
            for e in stored_events(ledger, User.create_id(USER))
        ]
    assert recorded == [
        ("Registered", "ext-register"),
        ("CustomerCreated", "ext-create"),
        ("SubscriptionCreated", "ext-create"),
        ("StripeCallFailed", "ext-pay-1"),
        ("PaymentMethodUpdated", "ext-pay-2"),
        ("CancellationRequested", "ext-cancel"),
        ("TokensRevoked", "op-revoke"),
    ]
    assert [(kind, cause["request_id"]) for _, kind, cause in causes(client)] == recorded


def test_an_erasure_records_the_operators_request_id(
    client: TestClient, cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    register(client, **{"X-Request-ID": "reg-1"})
    answer = client.post(
        f"/api/v1/audit/users/{USER}/erase", headers={**ADMIN, "X-Request-ID": "op-erase"}
    )
    assert answer.status_code == 200 and answer.headers["Request-Id"] == "op-erase"
    admin = {"kind": "admin", "stripe_event_id": None, "request_id": "op-erase"}
    assert causes(client) == [
        ("User", "Registered", api("Registered", "reg-1")),
        ("Erasure", "Requested", {**admin, "action": "Requested"}),
        ("Erasure", "PersonalDataErased", {**admin, "action": "PersonalDataErased"}),
    ]
    assert main(["erase", "--user", USER]) == 0  # a command: no API call, no request id
    assert causes(client)[-1][2]["request_id"] is None
    capsys.readouterr()
    assert main(["history", "--user", USER]) == 0
    table = capsys.readouterr().out
    assert "api reg-1" in table and "admin op-erase" in table
