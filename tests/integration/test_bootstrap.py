"""The composition root: one plans file read per start, and everything it built closed."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

import api.bootstrap
from api.app import create_app
from ledger.stripe.gateway import StripeGateway
from tests.conftest import make_settings


def test_the_app_reads_the_plans_file_once_and_closes_what_it_built(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[object] = []
    closed: list[StripeGateway] = []
    load_catalog = api.bootstrap.load_catalog
    monkeypatch.setattr(api.bootstrap, "load_catalog", lambda p: loads.append(p) or load_catalog(p))
    monkeypatch.setattr(StripeGateway, "close", lambda self: closed.append(self))
    settings = make_settings(database_url, STRIPE_SECRET_KEY=SecretStr("sk_test_bootstrap"))
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        assert len(loads) == 1
        assert closed == []
    assert len(loads) == 1
    assert len(closed) == 1
