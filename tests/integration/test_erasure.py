"""Erasure by crypto-shredding, on both stores: personal data is stored
encrypted; after `erase` every read shows "[erased]", the deliveries about that
customer answer 410, statuses and amounts stay, the seal still verifies, and a
rebuild leaves the email in no projection table. A delivery recorded before the
key table existed still reads."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import psycopg
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from ledger.config import Settings
from ledger.opening import open_ledger
from ledger.personal import Plain
from ledger.plans import load_catalog
from ledger.store.url import Store
from ledger.stripe.payloads import read_delivery
from projections.read_side import ReadSide
from projections.rebuild import rebuild
from scripts.cli import main
from tests import stripe_objects as so
from tests.conftest import deliver, eventually, make_settings

USER = "user_1767225600_abcdefghij"
OTHER = "user_1767225600_zzzzzzzzzz"
ADMIN = {"Authorization": "Bearer adm_test"}
EMAIL = "ada.lovelace@example.com"
NAME = "Ada Lovelace"
T = 1_767_225_600


@pytest.fixture
def live(database_url: str) -> Settings:
    return make_settings(database_url, LEDGER_PROCESSOR="inline", LEDGER_PROCESSOR_INTERVAL=0.05)


@pytest.fixture
def client(live: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(live)) as c:
        yield c


def story(client: TestClient) -> None:
    deliver(
        client,
        "evt_1",
        "customer.created",
        so.customer("cus_1", user_id=USER, email=EMAIL, name=NAME),
        T,
    )
    deliver(
        client,
        "evt_2",
        "customer.created",
        so.customer("cus_2", user_id=OTHER, email="bob@example.com"),
        T + 1,
    )
    deliver(
        client, "evt_3", "customer.subscription.created", so.subscription("sub_1", "cus_1"), T + 2
    )
    deliver(
        client, "evt_4", "invoice.paid", so.invoice("in_1", "cus_1", "sub_1", amount=999), T + 3
    )
    eventually(
        lambda: (
            (v := client.get(f"/api/v1/audit/users/{USER}", headers=ADMIN).json())["invoices"]
            and v["subscription"].get("plan_name")
            and v["entitlements"]["tier"] == "premium"
        )
    )


def events_of(client: TestClient, user: str) -> list[dict]:
    return client.get("/api/v1/audit/events", params={"user_id": user}, headers=ADMIN).json()[
        "data"
    ]


def raw_text(database_url: str) -> str:
    """Every stored row of the log, as text: what someone reading the disk sees."""
    store = Store(database_url)
    if store.is_postgres:
        with psycopg.connect(database_url) as conn:
            rows = conn.execute("SELECT convert_from(state, 'UTF8') FROM ledger_events").fetchall()
    else:
        with sqlite3.connect(store.sqlite_path) as conn:
            rows = conn.execute("SELECT CAST(state AS TEXT) FROM stored_events").fetchall()
    return "\n".join(r[0] for r in rows)


def test_personal_data_is_stored_encrypted_and_shown_to_auditors(
    client: TestClient, live: Settings
) -> None:
    story(client)
    assert EMAIL not in raw_text(live.database_url) and NAME not in raw_text(live.database_url)
    details = next(e for e in events_of(client, USER) if e["type"] == "DetailsChanged")
    assert (details["data"]["email"], details["data"]["name"]) == (EMAIL, NAME)
    body = client.get("/api/v1/audit/deliveries/evt_1", headers=ADMIN)
    assert body.status_code == 200 and EMAIL.encode() in body.content


def test_erasure_shreds_a_users_personal_data_and_nothing_else(
    client: TestClient, live: Settings, cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    story(client)
    eventually(  # every projection has applied the whole story (each follows at its own pace)
        lambda: all(
            p["lag"] == 0 for p in client.get("/api/v1/audit/projections", headers=ADMIN).json()
        )
    )
    before = client.get(f"/api/v1/audit/users/{USER}", headers=ADMIN).json()
    assert client.post(f"/api/v1/audit/users/{USER}/erase").status_code == 401
    head = client.get("/api/v1/audit/seal", headers=ADMIN).json()["log_head"]
    bad = client.post("/api/v1/audit/users/not-a-user/erase", headers=ADMIN)
    assert bad.status_code == 400 and bad.json()["error_code"] == "bad_request"  # the path's model
    assert client.get("/api/v1/audit/seal", headers=ADMIN).json()["log_head"] == head
    answer = client.post(f"/api/v1/audit/users/{USER}/erase", headers=ADMIN)
    assert answer.status_code == 200
    assert answer.json()["stripe_customer_ids"] == ["cus_1"]

    mine = events_of(client, USER)
    details = next(e for e in mine if e["type"] == "DetailsChanged")
    assert (details["data"]["email"], details["data"]["name"]) == ("[erased]", "[erased]")
    erased = next(e for e in mine if e["type"] == "PersonalDataErased")
    assert erased["aggregate"] == "Erasure" and erased["cause"]["kind"] == "admin"
    assert erased["data"] == {"stripe_customer_ids": ["cus_1"], "keys_deleted": 1}
    assert next(e for e in mine if e["type"] == "Paid")["data"]["amount_paid"] == 999
    for evt in ("evt_1", "evt_3", "evt_4"):  # every delivery about cus_1
        gone = client.get(f"/api/v1/audit/deliveries/{evt}", headers=ADMIN)
        assert gone.status_code == 410 and gone.json()["error_code"] == "erased"
    assert client.get("/api/v1/audit/deliveries/evt_2", headers=ADMIN).status_code == 200
    theirs = next(e for e in events_of(client, OTHER) if e["type"] == "DetailsChanged")
    assert theirs["data"]["email"] == "bob@example.com"
    after = client.get(f"/api/v1/audit/users/{USER}", headers=ADMIN).json()
    assert after == before  # statuses, amounts, dates stay

    assert main(["events", "export"]) == 0
    exported = capsys.readouterr().out
    assert EMAIL not in exported and NAME not in exported and "[erased]" in exported
    assert "bob@example.com" in exported
    lines = [json.loads(line) for line in exported.splitlines()]
    assert all(line["stored"]["state"] for line in lines)  # the ciphertext travels
    assert main(["verify"]) == 0
    assert capsys.readouterr().out.startswith("verified ")


def test_a_full_rebuild_after_erasure_leaves_the_email_in_no_projection_table(
    client: TestClient, live: Settings, cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    story(client)
    assert main(["erase", "--user", USER]) == 0
    assert "personal data erased (cus_1)" in capsys.readouterr().out
    ledger = open_ledger(live)
    read = ReadSide(ledger, load_catalog(), live.database_url)
    try:
        for projection in read.projections:
            rebuild(read.catchup, projection)
        with read.store.transaction(commit=False) as c:
            for projection in read.projections:
                for table in projection.tables:
                    for row in c.query(f"SELECT * FROM {table}"):
                        text = " ".join(str(v) for v in row.values())
                        assert EMAIL not in text and NAME not in text, table
    finally:
        read.close()
        ledger.close()


def test_a_delivery_recorded_before_the_key_table_existed_still_reads(
    live: Settings,
) -> None:
    body = so.body_of(
        so.event("evt_old", "customer.created", so.customer("cus_9", email=EMAIL), created=T)
    )
    old = open_ledger(live)
    old.personal = Plain()  # a ledger of before: bodies stored as they came
    old.record([read_delivery(body)])
    old.close()
    with TestClient(create_app(live)) as client:
        answer = client.get("/api/v1/audit/deliveries/evt_old", headers=ADMIN)
        assert answer.status_code == 200 and answer.content == body
        outcome = eventually(
            lambda: (
                client.get("/api/v1/audit/deliveries/evt_old", headers=ADMIN).headers[
                    "Ledger-Outcome"
                ]
                != "received"
                and client.get("/api/v1/audit/deliveries/evt_old", headers=ADMIN)
            )
        )
        assert outcome.headers["Ledger-Outcome"] == "applied"
