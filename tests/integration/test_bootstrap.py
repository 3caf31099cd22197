"""The composition root: one plans file read per start, and everything it built closed."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

import api.bootstrap
from api.app import create_app
from ledger.store.library import datastore_of
from ledger.stripe.gateway import StripeGateway
from tests.conftest import PG_ADMIN, make_settings


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


def test_a_process_opens_no_more_connections_than_its_pool_size_allows(postgres_url: str) -> None:
    """LEDGER_DB_POOL_SIZE=2: of ten threads reading the log at once, at most
    2 + 2 have a connection of the ledger's pool (the others wait their turn), and
    every read is answered."""
    parts = api.bootstrap.Parts(make_settings(postgres_url, LEDGER_DB_POOL_SIZE=2))
    database = postgres_url.rsplit("/", 1)[1]
    seen: list[int] = []
    try:
        datastore = datastore_of(parts.ledger.recorder)

        def read() -> None:
            with datastore.transaction(commit=False) as c:
                c.execute("SELECT pg_sleep(0.3)")

        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            threads = [threading.Thread(target=read) for _ in range(10)]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                (count,) = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                    "AND state = 'active' AND query LIKE 'SELECT pg_sleep%%'",
                    (database,),
                ).fetchone()  # type: ignore[misc]
                seen.append(count)
                time.sleep(0.02)
    finally:
        parts.close()
    assert 2 <= max(seen) <= 4, seen
