from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from pydantic import SecretStr

from ledger.application import Ledger
from ledger.config import Settings
from ledger.opening import open_ledger
from ledger.stripe.translator import TRANSLATORS
from scripts.dev.loadgen import MASTER_KEY

WEBHOOK_SECRET = "whsec_test_" + "a" * 32
# Two test processes (make test) share one PostgreSQL of 100 connections, with the
# servers and background processes their tests start (which inherit this): pools of
# 4, not the default 8. Tests that need another size set it themselves.
os.environ.setdefault("LEDGER_DB_POOL_SIZE", "4")
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"

# Timing is the machine's business, not the property's: no deadline, no "too slow".
_RELAXED = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
hypothesis_settings.register_profile("default", deadline=None, suppress_health_check=_RELAXED)
# CI explores the same examples every run (and still replays any saved failure).
hypothesis_settings.register_profile(
    "ci", deadline=None, suppress_health_check=_RELAXED, derandomize=True, print_blob=True
)
hypothesis_settings.load_profile("ci" if os.environ.get("CI", "").lower() == "true" else "default")


@pytest.fixture(autouse=True)
def _alone_or_together(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """A test marked `alone` (e.g. six processes on one PostgreSQL) runs while no
    other test does; the others run side by side. A lock file the test processes
    share: exclusive for the one, shared for the others."""
    root = tmp_path_factory.getbasetemp().parent  # the same for every xdist worker
    mode = fcntl.LOCK_EX if request.node.get_closest_marker("alone") else fcntl.LOCK_SH
    with open(root / "alone.lock", "a") as lock:
        fcntl.flock(lock, mode)
        yield


def postgres_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN):
            return True
    except psycopg.OperationalError:
        return False


def require_postgres() -> None:
    """Fail, not skip, under CI: a suite green without PostgreSQL would be a lie."""
    if postgres_available():
        return
    message = "PostgreSQL is not answering on 127.0.0.1:5432 (run scripts/ensure-postgres.sh)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def create_pg_database() -> str:
    name = f"ledger_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_postgres_url() -> Iterator[str]:
    require_postgres()
    name = create_pg_database()
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        drop_pg_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every storage test runs on both stores; PostgreSQL ones get a database of their own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.db"
        return
    with fresh_postgres_url() as url:
        yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """For the few tests that only PostgreSQL can show (e.g. refusing connections)."""
    with fresh_postgres_url() as url:
        yield url


def make_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "DATABASE_URL": database_url,
        "STRIPE_WEBHOOK_SECRET": SecretStr(WEBHOOK_SECRET),
        "LEDGER_ADMIN_TOKEN": SecretStr("adm_test"),
        "LEDGER_PROCESSOR": "off",
        "LEDGER_RETRY_BASE_SECONDS": 0.0,
        "LEDGER_RETRY_ATTEMPTS": 3,
        "LEDGER_MASTER_KEY": SecretStr(MASTER_KEY),  # the servers tests start use it too
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
def ledger(settings: Settings) -> Iterator[Ledger]:
    app = open_ledger(settings)
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def poisoned(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """Makes processing of event ids named in the dict raise while their value is True."""
    broken: dict[str, bool] = {}
    original = TRANSLATORS["customer.subscription.created"]

    def translator(uow, envelope):  # type: ignore[no-untyped-def]
        if broken.get(envelope.id):
            raise RuntimeError(f"bug while handling {envelope.id}")
        return original(uow, envelope)

    monkeypatch.setitem(TRANSLATORS, "customer.subscription.created", translator)
    return broken


def stored_events(ledger: Ledger, originator_id: object) -> list[object]:
    """The events of one aggregate, as stored."""
    return list(ledger.repository.event_store.get(originator_id))  # type: ignore[arg-type]


def deliver(client: Any, evt: str, event_type: str, obj: dict[str, Any], created: int) -> None:
    """POST a signed Stripe event to the app; it must be answered 200."""
    from tests import stripe_objects as so

    body = so.body_of(so.event(evt, event_type, obj, created=created))
    answer = client.post(
        "/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": so.sign(body, WEBHOOK_SECRET)},
    )
    assert answer.status_code == 200, answer.text


@pytest.fixture
def cli_env(
    monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path
) -> pytest.MonkeyPatch:
    """The environment a `ledger ...` command would run in, on the test's store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("LEDGER_ADMIN_TOKEN", "adm_test")
    monkeypatch.setenv("LEDGER_MASTER_KEY", MASTER_KEY)
    return monkeypatch


def eventually(check: Any, timeout: float = 15.0) -> Any:
    """Poll `check` until it returns something true (what a reader of an eventually
    consistent projection does); fail after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "not reflected in time"
        time.sleep(0.02)
    return result
