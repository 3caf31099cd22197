"""The operator commands, run as `ledger ...` would run them (in-process)."""

from __future__ import annotations

import json

import pytest

from ledger.application import Ledger
from ledger.config import load_settings
from ledger.domain.receipt import Outcome
from scripts.cli import main
from tests.integration.test_ledger import delivery


@pytest.fixture
def env(cli_env: pytest.MonkeyPatch) -> None:
    cli_env.setenv("LEDGER_RETRY_ATTEMPTS", "1")


def test_dead_receipts_are_listed_and_retried_after_a_fix(
    env: None,
    ledger: Ledger,
    poisoned: dict[str, bool],
    capsys: pytest.CaptureFixture[str],
) -> None:
    ledger.retry_attempts = 1
    poisoned["evt_bad"] = True
    ledger.record([delivery("evt_bad", sub="sub_bad"), delivery("evt_ok", sub="sub_ok")])
    ledger.process_new()

    assert main(["receipts", "dead", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["event_id"] == "evt_bad"
    assert row["type"] == "customer.subscription.created"
    assert "bug while handling evt_bad" in row["error"]

    assert main(["receipts", "retry", "evt_bad"]) == 1  # still broken: stays dead
    capsys.readouterr()
    poisoned["evt_bad"] = False
    assert main(["receipts", "retry", "evt_bad"]) == 0
    assert "evt_bad customer.subscription.created: applied" in capsys.readouterr().out
    assert ledger.receipt("evt_bad").outcome is Outcome.APPLIED
    assert main(["receipts", "dead"]) == 0
    assert "no dead receipts" in capsys.readouterr().out


def test_retry_of_an_unknown_event_says_so(env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["receipts", "retry", "evt_nope"]) == 2
    assert "no receipt for evt_nope" in capsys.readouterr().err


def test_development_secrets_are_generated_once(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("LEDGER_ADMIN_TOKEN", raising=False)
    first = load_settings(tmp_path)
    second = load_settings(tmp_path, announce=False)
    assert first.webhook_secrets == second.webhook_secrets
    assert first.webhook_secrets[0].startswith("whsec_")
    assert first.admin_token.get_secret_value() == second.admin_token.get_secret_value()  # type: ignore[union-attr]
    assert "STRIPE_WEBHOOK_SECRET is unset" in capsys.readouterr().out


def test_production_secrets_are_never_shown(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_production_value")
    monkeypatch.setenv("LEDGER_ADMIN_TOKEN", "adm_production_value")
    monkeypatch.setenv("LEDGER_MASTER_KEY", "mk_production_value_" + "p" * 32)
    settings = load_settings(tmp_path)
    assert settings.webhook_secrets == ["whsec_production_value"]
    assert "production_value" not in capsys.readouterr().out + repr(settings)
    assert not list(tmp_path.iterdir())
