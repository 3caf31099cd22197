"""`ledger usage report` against localstripe (invoice items), on both stores:
each user's overage of an ended period is reported once, also when the run is
killed between users and started again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from eventsourcing.utils import get_topic

from ledger.application import Ledger
from ledger.domain.usage import Usage
from ledger.domain.usage_report import UsageReport
from ledger.stripe.gateway import StripeGateway
from ledger.stripe.payloads import read_delivery
from ledger.usage_reporting import EXIT_AFTER_USERS
from scripts.cli import main
from tests import stripe_objects as so
from tests.localstripe import TEST_API_KEY, LocalStripe, localstripe_server
from tests.streams import MONTH, T0

ROOT = Path(__file__).resolve().parents[2]
USERS = ["user_1767225600_aaaaaaaaaa", "user_1767225600_bbbbbbbbbb"]


@pytest.fixture(scope="module")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStripe]:
    with localstripe_server(tmp_path_factory.mktemp("localstripe")) as server:
        yield server


def invoice_items(ls: LocalStripe, customer: str) -> list[dict[str, object]]:
    request = urllib.request.Request(  # noqa: S310 (loopback)
        f"{ls.url}/v1/invoiceitems?customer={customer}",
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (loopback)
        return json.load(answer)["data"]


def reports(ledger: Ledger) -> list[UsageReport.Reported]:
    found = ledger.recorder.select_notifications(
        start=1, limit=100, topics=[get_topic(UsageReport.Reported)]
    )
    return [ledger.mapper.to_domain_event(n) for n in found]  # type: ignore[misc]


def test_overage_is_reported_once_across_a_crash_and_a_second_run(
    cli_env: pytest.MonkeyPatch,
    ledger: Ledger,
    localstripe: LocalStripe,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli_env.setenv("STRIPE_SECRET_KEY", TEST_API_KEY)
    cli_env.setenv("STRIPE_API_BASE", localstripe.url)
    cli_env.setenv("STRIPE_MAX_NETWORK_RETRIES", "0")
    gateway = StripeGateway(TEST_API_KEY, localstripe.url, max_network_retries=0)
    customers = [gateway.create_customer(u, f"setup-{u}-{os.getpid()}-{id(ledger)}") for u in USERS]
    gateway.close()
    bodies = []
    for i, (user, cus) in enumerate(zip(USERS, customers, strict=True)):
        sub = so.subscription(
            f"sub_r{i}", cus, price_id="price_lisa_premium_monthly", user_id=user,
            period_start=T0, period_end=T0 + MONTH,
        )  # fmt: skip
        bodies.append(so.event(f"evt_r{i}", "customer.subscription.created", sub, created=T0))
    ledger.record([read_delivery(so.body_of(b)) for b in bodies])
    ledger.process_new()
    ledger.record(
        [
            Usage(USERS[0], "storage_mb", 1500, "a1", T0 + 10),  # 500 MB over: 25.00 USD
            Usage(USERS[0], "ai_requests", 900, "a2", T0 + 10),  # within: nothing due
            Usage(USERS[1], "storage_mb", 1200, "b1", T0 + 20),  # 200 MB over: 10.00 USD
            Usage(
                USERS[1], "storage_mb", 10, "b2", T0 + MONTH + 5
            ),  # after the period: a calendar month, the free plan
        ]
    )

    assert main(["usage", "report", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry_run" in out and "25.00 USD" in out and "10.00 USD" in out
    assert reports(ledger) == [] and invoice_items(localstripe, customers[0]) == []

    # killed after the first user, as a process
    crashed = subprocess.run(
        [sys.executable, "-m", "scripts.cli", "usage", "report"],
        env={**os.environ, EXIT_AFTER_USERS: "1", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert crashed.returncode == 3, crashed.stderr
    assert [(r.user_id, r.amount) for r in reports(ledger)] == [(USERS[0], 2500)]

    assert main(["usage", "report", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    status = {(x["user_id"], x["metric"], x["period_start"]): x["status"] for x in lines}
    assert status[USERS[0], "storage_mb", T0] == "already_reported"
    assert status[USERS[0], "ai_requests", T0] == "nothing_due"
    assert status[USERS[1], "storage_mb", T0] == "reported"
    assert main(["usage", "report", "--json"]) == 0  # and once more: nothing new
    assert {json.loads(x)["status"] for x in capsys.readouterr().out.splitlines()} <= {
        "already_reported", "nothing_due",
    }  # fmt: skip

    for customer, amount in zip(customers, (2500, 1000), strict=True):
        [item] = invoice_items(localstripe, customer)
        assert (item["amount"], item["currency"]) == (amount, "usd")
    recorded = {(r.user_id, r.metric, r.period_start): r for r in reports(ledger)}
    assert len(recorded) == 2
    second = recorded[USERS[1], "storage_mb", T0]
    assert (second.overage, second.amount, second.stripe_object) == (200, 1000, "invoiceitem")
    assert second.stripe_id == invoice_items(localstripe, customers[1])[0]["id"]
