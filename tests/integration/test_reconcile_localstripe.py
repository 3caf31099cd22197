"""Backfill and reconcile against a real localstripe whose webhooks never reach
us (pointed at a closed port): the missed events are fetched, the drift found
and fixed as recorded events, and a second run finds nothing. Both stores."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from eventsourcing.utils import get_topic
from starlette.testclient import TestClient

from api.app import create_app
from ledger.application import Ledger
from ledger.domain.customer import Customer
from ledger.domain.receipt import Receipt, Source
from ledger.domain.reconciliation import Reconciliation
from ledger.domain.subscription import Subscription
from ledger.plans import load_catalog
from ledger.stripe.gateway import StripeGateway
from projections.read_side import ReadSide
from scripts.cli import main
from tests.conftest import eventually, make_settings
from tests.localstripe import (
    TEST_API_KEY,
    LocalStripe,
    create_plan,
    free_port,
    localstripe_server,
    register_webhook,
)

PRICE = "price_lisa_premium_monthly"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def localstripe(tmp_path: Path) -> Iterator[LocalStripe]:
    with localstripe_server(tmp_path / "localstripe") as server:
        create_plan(server.url, PRICE, 999, "month", "Lisa Premium")
        closed = f"http://127.0.0.1:{free_port()}/webhooks/stripe"  # every delivery is missed
        register_webhook(server.url, closed, "whsec_missed")
        yield server


@pytest.fixture
def gateway(localstripe: LocalStripe) -> Iterator[StripeGateway]:
    gateway = StripeGateway(
        TEST_API_KEY,
        localstripe.url,
        max_network_retries=0,
        payment_behavior="allow_incomplete",
        test_payment_method="pm_card_visa",
    )
    yield gateway
    gateway.close()


@pytest.fixture
def env(cli_env: pytest.MonkeyPatch, localstripe: LocalStripe) -> None:
    cli_env.setenv("STRIPE_SECRET_KEY", TEST_API_KEY)
    cli_env.setenv("STRIPE_API_BASE", localstripe.url)
    cli_env.setenv("STRIPE_PAYMENT_BEHAVIOR", "allow_incomplete")
    cli_env.setenv("STRIPE_MAX_NETWORK_RETRIES", "0")


@pytest.fixture
def read(ledger: Ledger, database_url: str) -> Iterator[ReadSide]:
    side = ReadSide(ledger, load_catalog(), database_url)
    yield side
    side.close()


def subscribe(gateway: StripeGateway, n: int) -> tuple[str, str, str]:
    user = f"user_1767225600_{n:0>10}"
    customer = gateway.create_customer(user, uuid.uuid4().hex)
    created = gateway.create_subscription(customer, PRICE, user, uuid.uuid4().hex)
    return user, customer, created.stripe_subscription_id


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().out


def counts(out: str) -> dict[str, int]:
    """The summary line's figures: listed, new, duplicate."""
    return {k: int(v) for k, v in re.findall(r"(listed|new|duplicate) (\d+)", out)}


def receipts_since(ledger: Ledger, skip: int) -> list[str]:
    received = ledger.recorder.select_notifications(
        start=1, limit=10_000, topics=[get_topic(Receipt.Received)]
    )
    return [ledger.mapper.to_domain_event(n).stripe_event_id for n in received][skip:]


def topics(ledger: Ledger) -> list[str]:
    return [n.topic for n in ledger.recorder.select_notifications(start=1, limit=100_000)]


def test_backfill_and_reconcile_bring_the_projections_to_stripes_state(
    env: None,
    gateway: StripeGateway,
    ledger: Ledger,
    read: ReadSide,
    capsys: pytest.CaptureFixture[str],
) -> None:
    user_a, _, sub_a = subscribe(gateway, 1)
    user_b, _, sub_b = subscribe(gateway, 2)

    code, out = run(["backfill"], capsys)
    assert code == 0
    first = counts(out)
    assert first["listed"] == first["new"] >= 4 and first["duplicate"] == 0
    received = [
        e
        for n in ledger.recorder.select_notifications(
            start=1, limit=100, topics=[get_topic(Receipt.Received)]
        )
        if isinstance(e := ledger.mapper.to_domain_event(n), Receipt.Received)
    ]
    assert {e.source for e in received} == {Source.BACKFILL.value}
    assert all(ledger.receipt(e.stripe_event_id).is_settled for e in received)
    read.catchup.run_once()
    assert read.status(user_a)["status"] == "active" and read.status(user_a)["id"] == sub_a
    assert read.status(user_b)["id"] == sub_b

    # Meanwhile, still unheard: one canceled, another customer subscribes.
    gateway.cancel(sub_a, immediate=True, idempotency_key=uuid.uuid4().hex)
    user_c, cus_c, sub_c = subscribe(gateway, 3)

    code, out = run(["reconcile", "--json", "--exit-code"], capsys)
    assert code == 1
    report = json.loads(out)
    drift = {(d["object_id"], d["field"]): (d["ledger"], d["stripe"]) for d in report["drift"]}
    assert drift == {
        (sub_a, "status"): ("active", "canceled"),
        (sub_c, "missing"): (None, "active"),
        (cus_c, "missing"): (None, None),
    }
    assert report["listed"] == {"subscriptions": 3, "customers": 3}
    assert report["fixed"] == []

    code, out = run(["reconcile", "--fix"], capsys)
    assert code == 0
    assert sub_a in out and sub_c in out and cus_c in out  # whole ids
    assert "3 differences (missing 2, status 1)" in out
    assert f"fixed 3 objects: {cus_c} {sub_a} {sub_c}" in out
    read.catchup.run_once()
    assert read.status(user_a)["status"] == "canceled"
    assert read.status(user_c)["status"] == "active" and read.status(user_c)["id"] == sub_c
    assert read.held_customers()[cus_c]["user_id"] == user_c
    names = topics(ledger)
    assert names.count(get_topic(Subscription.ReconciledFromStripe)) == 2
    assert names.count(get_topic(Customer.ReconciledFromStripe)) == 1
    assert names.count(get_topic(Reconciliation.Ran)) == 2

    # The missed webhooks, fetched after the fix, are older than what was fetched:
    # recorded, superseded or unchanged, and the state stays Stripe's.
    code, out = run(["backfill"], capsys)
    second = counts(out)
    assert code == 0 and second["duplicate"] == first["listed"] and second["new"] >= 3
    outcomes = {ledger.receipt(e).outcome for e in receipts_since(ledger, first["listed"])}
    assert "superseded" in outcomes
    read.catchup.run_once()
    assert read.status(user_a)["status"] == "canceled"

    code, out = run(["reconcile", "--exit-code"], capsys)
    assert (code, out.splitlines()[-1]) == (0, "no drift")
    code, out = run(["backfill"], capsys)
    assert counts(out) == {"listed": second["listed"], "new": 0, "duplicate": second["listed"]}


def test_each_runs_counts_reach_the_apis_metrics(
    env: None,
    gateway: StripeGateway,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The command is a process of its own: its runs are events, and the API reads
    them from the `reconciliations` projection at scrape time."""
    subscribe(gateway, 1)
    settings = make_settings(database_url, LEDGER_PROCESSOR_INTERVAL=0.05)
    with TestClient(create_app(settings)) as client:
        assert "ledger_reconcile_last_run" not in client.get("/metrics").text  # no run yet
        assert run(["reconcile", "--exit-code"], capsys)[0] == 1
        assert run(["reconcile"], capsys)[0] == 0  # ran: whatever it found

        def scraped() -> dict[str, float]:
            lines = client.get("/metrics").text.splitlines()
            return {
                k: float(v)
                for k, v in (line.rsplit(" ", 1) for line in lines)
                if k.startswith("ledger_reconcile_")
            }

        missing = 'ledger_reconcile_drift_total{field="missing"}'
        figures = eventually(lambda: (m := scraped()).get(missing) == 4 and m)
    # two runs, each finding the customer and the subscription missing
    assert figures["ledger_reconcile_last_run_drift"] == 2
    assert abs(figures["ledger_reconcile_last_run_timestamp_seconds"] - time.time()) < 60


def test_every_runs_again_until_stopped(
    env: None, gateway: StripeGateway, ledger: Ledger, tmp_path: Path
) -> None:
    subscribe(gateway, 1)
    process = subprocess.Popen(
        [sys.executable, "-m", "scripts.cli", "reconcile", "--every", "1s", "--fix"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        eventually(lambda: topics(ledger).count(get_topic(Reconciliation.Ran)) >= 2, timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out
    assert "fixed 2 objects" in out and "no drift" in out  # fixed in the first run, then none
