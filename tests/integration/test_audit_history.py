"""The auditors' history on both stores: the events endpoint (all, one user's,
paged), a delivery byte for byte, a user's API actions, `ledger history`,
`ledger events export|import`, and an export replayed into an empty store."""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from api.app import create_app
from ledger.config import Settings
from ledger.opening import open_ledger
from ledger.plans import load_catalog
from ledger.stripe.payloads import read_delivery
from projections.history import History, import_lines
from projections.read_side import ReadSide
from scripts.cli import main
from tests import stripe_objects as so
from tests.conftest import WEBHOOK_SECRET, eventually, fresh_postgres_url, make_settings
from tests.integration.test_projections import snapshot
from tests.streams import webhook_streams

USER = "user_1767225600_abcdefghij"
OTHER = "user_1767225600_zzzzzzzzzz"
ADMIN = {"Authorization": "Bearer adm_test"}
T = 1_767_225_600
_prefixes = itertools.count()


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    live = make_settings(database_url, LEDGER_PROCESSOR="inline", LEDGER_PROCESSOR_INTERVAL=0.05)
    with TestClient(create_app(live)) as c:
        yield c


def post(client: TestClient, body: bytes, timestamp: int | None = None) -> None:
    signature = so.sign(body, WEBHOOK_SECRET, timestamp)
    answer = client.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": signature})
    assert answer.status_code == 200, answer.text


def story(client: TestClient) -> None:
    """Two users: USER's customer, subscription and invoice; OTHER's customer."""
    for evt, kind, obj, created in (
        (
            "evt_1",
            "customer.created",
            so.customer("cus_1", user_id=USER, email="ada@example.com"),
            T,
        ),
        ("evt_2", "customer.created", so.customer("cus_2", user_id=OTHER), T + 1),
        ("evt_3", "customer.subscription.created", so.subscription("sub_1", "cus_1"), T + 2),
        ("evt_4", "invoice.paid", so.invoice("in_1", "cus_1", "sub_1", amount=999), T + 3),
    ):
        post(client, so.body_of(so.event(evt, kind, obj, created=created)))
    eventually(lambda: events(client, user_id=USER)["data"][-1:] and _settled(client))


def _settled(client: TestClient) -> bool:
    types = [e["type"] for e in events(client, limit=1000)["data"]]
    return types.count("Processed") == 4


def events(client: TestClient, **params: object) -> dict:
    answer = client.get("/api/v1/audit/events", params=params, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_history_endpoints_need_the_admin_token(client: TestClient) -> None:
    for path in (
        "/api/v1/audit/events",
        "/api/v1/audit/deliveries/evt_1",
        f"/api/v1/audit/users/{USER}/actions",
    ):
        for headers in ({}, {"Authorization": "Bearer nope"}):
            answer = client.get(path, headers=headers)
            assert answer.status_code == 401
            assert answer.json()["error_code"] == "unauthorized"


def test_events_in_log_order_with_their_cause_and_one_users_only(client: TestClient) -> None:
    story(client)
    everything = events(client, limit=1000)["data"]
    positions = [e["position"] for e in everything]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    mine = events(client, user_id=USER)["data"]
    assert {(e["aggregate"], e["type"]) for e in mine} >= {
        ("Customer", "Registered"),
        ("Customer", "DetailsChanged"),
        ("Customer", "LinkedToUser"),
        ("Subscription", "Started"),
        ("Invoice", "Recorded"),
        ("Invoice", "Paid"),
    }
    assert {e["cause"]["stripe_event_id"] for e in mine if e["type"] == "Paid"} == {"evt_4"}
    assert all(e["aggregate"] != "Receipt" for e in mine)
    recorded = next(e for e in mine if e["type"] == "Recorded")  # names no Stripe event itself
    assert recorded["cause"]["stripe_event_id"] == "evt_4"
    assert not any(e["data"].get("user_id") == OTHER for e in mine)
    details = next(e for e in mine if e["type"] == "DetailsChanged")
    assert details["data"]["email"] == "ada@example.com" and details["cause"] == {
        "kind": "stripe",
        "stripe_event_id": "evt_1",
        "action": None,
        "request_id": None,
    }
    theirs = events(client, user_id=OTHER)["data"]
    assert {e["aggregate"] for e in theirs} == {"Customer"}


def test_events_are_paged_by_position(client: TestClient) -> None:
    story(client)
    everything = events(client, limit=1000)["data"]
    seen, after = [], 0
    while True:
        page = events(client, after=after, limit=3)
        seen += page["data"]
        if page["next"] is None:
            break
        assert len(page["data"]) == 3
        after = page["next"]
    assert seen == everything


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "limit=1001", "after=-1"])
def test_a_bad_page_is_refused(client: TestClient, query: str) -> None:
    answer = client.get(f"/api/v1/audit/events?{query}", headers=ADMIN)
    assert answer.status_code == 400
    assert answer.json()["error_code"] == "bad_request"


def test_a_delivery_byte_for_byte_with_its_details_in_headers(client: TestClient) -> None:
    envelope = so.event(
        "evt_raw", "customer.created", so.customer("cus_9", user_id=USER), created=T
    )
    body = (json.dumps(envelope, indent=3, ensure_ascii=False) + "  \n").encode()
    signed_at = int(time.time()) - 7
    post(client, body, timestamp=signed_at)
    answer = eventually(
        lambda: (
            (a := client.get("/api/v1/audit/deliveries/evt_raw", headers=ADMIN)).headers.get(
                "Ledger-Outcome"
            )
            == "applied"
            and a
        )
    )
    assert answer.status_code == 200
    assert answer.content == body
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["Ledger-Signature-Time"] == str(signed_at)
    assert answer.headers["Ledger-Attempts"] == "0"
    assert answer.headers["Ledger-Last-Error"] == ""
    assert answer.headers["Ledger-Received-At"].startswith("20")
    missing = client.get("/api/v1/audit/deliveries/evt_nope", headers=ADMIN)
    assert missing.status_code == 404
    assert missing.json()["error_code"] == "delivery_not_found"


def test_a_users_api_actions(client: TestClient) -> None:
    assert client.post("/api/users", json={"user_id": USER}).status_code == 201
    answer = client.get(f"/api/v1/audit/users/{USER}/actions", headers=ADMIN)
    assert answer.status_code == 200
    actions = answer.json()
    assert actions["user_id"] == USER
    assert [a["action"] for a in actions["data"]] == ["Registered"]
    assert actions["data"][0]["asked"]["user_id"] == USER
    empty = client.get(f"/api/v1/audit/users/{OTHER}/actions", headers=ADMIN).json()
    assert empty["data"] == []
    mine = events(client, user_id=USER)["data"]
    assert [(e["aggregate"], e["cause"]["kind"]) for e in mine] == [("User", "api")]


def test_history_and_export_commands(
    client: TestClient, cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    story(client)
    assert main(["history", "--user", USER]) == 0
    table = capsys.readouterr().out
    assert "Invoice.Recorded in_1" in table and "Invoice.Paid 999 usd" in table
    assert "evt_4" in table and "Subscription.Started" in table
    assert "cus_2" not in table
    assert main(["events", "export"]) == 0
    out = capsys.readouterr()
    lines = [json.loads(line) for line in out.out.splitlines()]
    assert [line["position"] for line in lines] == [
        e["position"] for e in events(client, limit=1000)["data"]
    ]
    assert {"stored", "data", "cause", "time", "type"} <= set(lines[0])
    assert main(["events", "export", "--user", USER, "--since", "2000-01-01T00:00:00Z"]) == 0
    mine = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [m["position"] for m in mine] == [
        e["position"] for e in events(client, user_id=USER)["data"]
    ]
    assert main(["events", "export", "--until", "2000-01-01T00:00:00Z"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["events", "export", "--since", "yesterday"]) == 2


@contextlib.contextmanager
def empty_store(database_url: str, tmp_path: Path, n: int) -> Iterator[str]:
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path}/replayed-{n}.db"
        return
    with fresh_postgres_url() as url:
        yield url


@settings(max_examples=5)
@given(st.data())
def test_an_export_replayed_into_an_empty_store_yields_the_same_projections(
    settings_: Settings, tmp_path: Path, data: st.DataObject
) -> None:
    n = next(_prefixes)
    stream = data.draw(webhook_streams(prefix=f"x{n}_"))
    ledger = open_ledger(settings_)
    read = ReadSide(ledger, load_catalog(), settings_.database_url)
    try:
        for delivery in stream:
            ledger.record([read_delivery(delivery.body)])
        ledger.process_new()
        read.catchup.run_once()
        exported = [line.model_dump_json() for line in History(ledger).export()]
        expected = snapshot(read)
    finally:
        read.close()
        ledger.close()
    with empty_store(settings_.database_url, tmp_path, n) as url:
        target = open_ledger(make_settings(url))
        replayed = ReadSide(target, load_catalog(), url)
        try:
            assert import_lines(target, exported) == len(exported)
            replayed.catchup.run_once()
            assert snapshot(replayed) == expected
        finally:
            replayed.close()
            target.close()


@pytest.fixture
def settings_(database_url: str, tmp_path: Path) -> Settings:
    """A store of its own for each test (hypothesis examples share it)."""
    return make_settings(database_url)
