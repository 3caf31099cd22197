"""The auditors' API and the projection commands, end to end through the app."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from ledger.config import Settings
from projections.registry import PROJECTIONS
from scripts.cli import main
from tests import stripe_objects as so
from tests.conftest import deliver, eventually, make_settings

USER = "user_1767225600_abcdefghij"
ADMIN = {"Authorization": "Bearer adm_test"}


@pytest.fixture
def live_settings(database_url: str) -> Settings:
    return make_settings(database_url, LEDGER_PROCESSOR="inline", LEDGER_PROCESSOR_INTERVAL=0.05)


@pytest.fixture
def client(live_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(live_settings)) as c:
        yield c


def user_view(client: TestClient) -> dict:
    return client.get(f"/api/v1/audit/users/{USER}", headers=ADMIN).json()


def projection_positions(client: TestClient) -> list[dict]:
    return client.get("/api/v1/audit/projections", headers=ADMIN).json()


def test_the_audit_api_needs_the_admin_token(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "adm_test"}):
        answer = client.get(f"/api/v1/audit/users/{USER}", headers=headers)
        assert answer.status_code == 401
        assert answer.json()["error_code"] == "unauthorized"
    assert client.get("/api/v1/audit/webhooks").status_code == 401
    assert client.get("/api/v1/audit/projections").status_code == 401


def test_a_delivery_is_reflected_in_the_users_view(client: TestClient) -> None:
    assert user_view(client)["subscription"] == {"active": False, "tier": "free"}
    deliver(client, "evt_1", "customer.created", so.customer("cus_1", user_id=USER), 100)
    deliver(
        client,
        "evt_2",
        "customer.subscription.created",
        so.subscription(
            "sub_1", "cus_1", price_id="price_lisa_premium_annual", amount=9990, interval="year"
        ),
        101,
    )
    deliver(client, "evt_3", "invoice.paid", so.invoice("in_1", "cus_1", "sub_1", amount=9990), 102)
    # Each projection follows the log on its own: wait until all of them have the invoice.
    view = eventually(
        lambda: (
            (v := user_view(client))["invoices"]
            and v["notifications"]
            and v["entitlements"]["tier"] == "premium"
            and "plan_name" in v["subscription"]
            and v
        )
    )
    assert view["subscription"]["plan_name"] == "LISA Premium - Annual"
    assert view["subscription"]["active"] is True
    assert view["entitlements"]["tier"] == "premium"
    assert [n["kind"] for n in view["notifications"]] == ["activated", "features_granted"]
    assert view["invoices"][0]["amount_paid"] == 9990
    health = eventually(
        lambda: (
            # Each projection follows the log at its own pace: webhook_health may
            # still show the receipt as received while the invoice is listed.
            (h := client.get("/api/v1/audit/webhooks", headers=ADMIN).json())["by_type"]
            .get("invoice.paid", {})
            .keys()
            - {"received"}
            and h
        )
    )
    assert health["by_type"]["invoice.paid"] == {"applied": 1}
    assert (
        {p["name"] for p in projection_positions(client)}
        == set(PROJECTIONS)
        >= {
            "subscription_status",
            "entitlements",
            "invoice_history",
            "notifications",
            "webhook_health",
            "customers",
            "reconciliations",
            "pending_changes",
        }
    )


def test_as_of_through_the_api(client: TestClient) -> None:
    deliver(
        client,
        "evt_1",
        "customer.subscription.created",
        so.subscription("sub_1", "cus_1", user_id=USER),
        100,
    )
    eventually(lambda: user_view(client)["subscription"]["active"])
    moment = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    deliver(
        client,
        "evt_2",
        "customer.subscription.deleted",
        so.subscription("sub_1", "cus_1", status="canceled", user_id=USER),
        200,
    )
    eventually(lambda: not user_view(client)["subscription"]["active"])
    then = client.get(f"/api/v1/audit/users/{USER}", params={"as_of": moment}, headers=ADMIN)
    assert then.json()["subscription"]["status"] == "active"
    bad = client.get(f"/api/v1/audit/users/{USER}", params={"as_of": "yesterday"}, headers=ADMIN)
    assert bad.status_code == 400 and bad.json()["error_code"] == "bad_request"


def test_projection_commands(
    cli_env: pytest.MonkeyPatch, client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    deliver(
        client,
        "evt_1",
        "customer.subscription.created",
        so.subscription("sub_1", "cus_1", user_id=USER),
        100,
    )
    eventually(lambda: user_view(client)["notifications"])
    eventually(lambda: all(p["lag"] == 0 for p in projection_positions(client)))
    before = user_view(client)

    assert main(["projections", "rebuild", "subscription_status", "notifications"]) == 0
    out = capsys.readouterr()
    assert "subscription_status:" in out.err and "swapped in" in out.err
    assert user_view(client) == before

    assert main(["projections", "status"]) == 0
    status = capsys.readouterr().out
    assert "subscription_status" in status and "webhook_health" in status

    assert main(["replay", "--user", USER, "--as-of", "2999-01-01T00:00:00Z", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["subscription"]["id"] == "sub_1" and answer["subscription"]["active"]

    assert main(["replay", "--user", USER, "--as-of", "2999-01-01T00:00:00Z"]) == 0
    assert "subscription sub_1: active" in capsys.readouterr().out

    assert main(["replay", "--user", USER, "--json"]) == 0  # without --as-of: now
    now = json.loads(capsys.readouterr().out)
    assert now["subscription"] == answer["subscription"]
    assert abs(datetime.fromisoformat(now["as_of"]).timestamp() - time.time()) < 60

    assert main(["projections", "rebuild", "nonsense"]) == 2
    assert "no projection named nonsense" in capsys.readouterr().err
    assert main(["replay", "--user", USER, "--as-of", "2026-01-31"]) == 2


def test_stage_two_and_projections_as_processes_of_their_own(
    cli_env: pytest.MonkeyPatch, database_url: str
) -> None:
    """The split deployment the README describes: the API only records, `ledger
    process` and `ledger projections run` do the rest, and SIGTERM stops them cleanly."""
    settings = make_settings(database_url, LEDGER_PROCESSOR="off", LEDGER_PROJECTIONS="off")
    cli_env.setenv("LEDGER_PROCESSOR_INTERVAL", "0.05")
    with TestClient(create_app(settings)) as api:
        deliver(
            api,
            "evt_1",
            "customer.subscription.created",
            so.subscription("sub_1", "cus_1", user_id=USER),
            100,
        )
        time.sleep(0.3)
        assert user_view(api)["subscription"] == {
            "active": False,
            "tier": "free",
        }  # nobody applies it

        commands = [["process"], ["projections", "run"]]
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "scripts.cli", *c], stderr=subprocess.PIPE, text=True
            )
            for c in commands
        ]
        try:
            eventually(lambda: user_view(api)["subscription"]["active"])
            eventually(lambda: user_view(api)["entitlements"]["tier"] == "premium")
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            logs = [w.communicate(timeout=15)[1] for w in workers]
        assert [w.returncode for w in workers] == [0, 0], logs
        assert all("stopped" in log and "Traceback" not in log for log in logs), logs


def test_metrics_carry_receipts_by_outcome_and_projection_lag(client: TestClient) -> None:
    deliver(client, "evt_1", "customer.created", so.customer("cus_1", user_id=USER), 100)
    deliver(client, "evt_2", "payout.paid", {"id": "po_1", "object": "payout"}, 101)

    def gauges() -> dict[str, float]:
        lines = client.get("/metrics").text.splitlines()
        return {
            key: float(value)
            for key, value in (line.rsplit(" ", 1) for line in lines if line.startswith("ledger_"))
            if key.startswith(("ledger_receipts{", "ledger_projection_lag_events{"))
        }

    seen = eventually(lambda: (g := gauges())['ledger_receipts{outcome="ignored"}'] == 1 and g)
    assert seen['ledger_receipts{outcome="applied"}'] == 1
    assert seen['ledger_receipts{outcome="dead"}'] == 0  # named at zero: alerts need the series
    lags = {k for k in seen if k.startswith("ledger_projection_lag_events")}
    assert len(lags) == len(PROJECTIONS)
    eventually(lambda: all(v == 0 for k, v in gauges().items() if k in lags))
