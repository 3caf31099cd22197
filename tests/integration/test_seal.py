"""The seal on both stores: it follows the log, `GET /api/v1/audit/seal` gives
its head, and `ledger verify` names the position of a row edited, deleted or
inserted directly in the database."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from ledger.application import Ledger
from ledger.config import Settings
from ledger.plans import load_catalog
from ledger.store.url import Store
from ledger.stripe.payloads import read_delivery
from projections.read_side import ReadSide
from scripts.cli import main
from tests import stripe_objects as so
from tests.conftest import deliver, eventually, make_settings

USER = "user_1767225600_abcdefghij"
ADMIN = {"Authorization": "Bearer adm_test"}
T = 1_767_225_600


def fill(ledger: Ledger, count: int = 6, start: int = 0) -> None:
    for i in range(start, start + count):
        obj = so.customer(f"cus_{i}", user_id=USER, email=f"{i}@example.com")
        body = so.body_of(so.event(f"evt_{i}", "customer.created", obj, created=T + i))
        ledger.record([read_delivery(body)])
    ledger.process_new()


@contextmanager
def raw_log(database_url: str) -> Iterator[tuple[Any, str, str]]:
    """A connection straight to the log's table, as an intruder would have it:
    (connection, table, position column)."""
    store = Store(database_url)
    if store.is_postgres:
        with psycopg.connect(database_url, autocommit=True) as conn:
            yield conn, "ledger_events", "notification_id"
        return
    conn = sqlite3.connect(store.sqlite_path, isolation_level=None)
    try:
        yield conn, "stored_events", "rowid"
    finally:
        conn.close()


def tamper(database_url: str, statement: str, *params: object) -> None:
    with raw_log(database_url) as (conn, table, position):
        sql = statement.format(table=table, position=position)
        if isinstance(conn, sqlite3.Connection):
            conn.execute(sql.replace("%s", "?"), params)
        else:
            conn.execute(sql, params)


@pytest.fixture
def read(ledger: Ledger, settings: Settings) -> Iterator[ReadSide]:
    side = ReadSide(ledger, load_catalog(), settings.database_url)
    try:
        yield side
    finally:
        side.close()


def verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["verify", *args])
    return code, capsys.readouterr().out.strip()


def test_an_untouched_log_verifies(
    ledger: Ledger, read: ReadSide, cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    fill(ledger)
    code, out = verify(capsys)
    head = read.seal.head()
    assert code == 0
    assert out == f"verified {head.events:,} events, head {head.hash}"
    assert head.position == head.log_head and head.lag == 0 and len(head.hash) == 64
    assert verify(capsys, "--recorded", f"{head.position}:{head.hash}")[0] == 0
    assert verify(capsys, "--recorded", f"{head.position}:{'0' * 64}") == (
        1,
        f"position {head.position}: differs from the recorded head "
        f"(after {head.events - 1:,} verified events)",
    )
    assert verify(capsys, "--recorded", "nonsense")[0] == 2


def test_an_edited_row_is_named(
    ledger: Ledger, read: ReadSide, settings: Settings, cli_env, capsys
) -> None:
    fill(ledger)
    read.seal.run_once()
    edit = (  # one character of the stored state (the ciphertext of the email)
        "overlay(state placing '0' from 40 for 1)"
        if settings.database_url.startswith("postgres")
        else "CAST(substr(state, 1, 39) || '0' || substr(state, 41) AS BLOB)"
    )
    target = _position_of_email(settings.database_url, "0@example.com")
    tamper(
        settings.database_url,
        f"UPDATE {{table}} SET state = {edit} WHERE {{position}} = %s",
        target,
    )
    code, out = verify(capsys)
    assert code == 1
    assert out.startswith(f"position {target}: edited")


def _position_of_email(database_url: str, email: str) -> int:
    """The position of the customer's DetailsChanged (customer n has email n@...)."""
    n = int(email.split("@")[0].replace("x", "0"))
    with raw_log(database_url) as (conn, table, position):
        marker = "?" if isinstance(conn, sqlite3.Connection) else "%s"
        rows = conn.execute(
            f"SELECT {position} FROM {table} WHERE topic LIKE {marker} ORDER BY {position}",
            ("%DetailsChanged",),
        ).fetchall()
    return rows[n][0]


def test_a_deleted_row_is_named(
    ledger: Ledger, read: ReadSide, settings: Settings, cli_env, capsys
) -> None:
    fill(ledger)
    read.seal.run_once()
    target = _position_of_email(settings.database_url, "3@example.com")
    tamper(settings.database_url, "DELETE FROM {table} WHERE {position} = %s", target)
    code, out = verify(capsys)
    assert code == 1
    assert out.startswith(f"position {target}: deleted")


def test_the_last_rows_deleted_are_named(
    ledger: Ledger, read: ReadSide, settings: Settings, cli_env, capsys
) -> None:
    fill(ledger)
    head = read.seal.run_once()
    tamper(settings.database_url, "DELETE FROM {table} WHERE {position} >= %s", head - 1)
    code, out = verify(capsys)
    assert code == 1
    assert out.startswith(f"position {head - 1}: deleted")


def test_an_inserted_row_is_named(
    ledger: Ledger, read: ReadSide, settings: Settings, cli_env, capsys
) -> None:
    """The log has a gap (as PostgreSQL's sequence leaves after a rolled-back
    insert); the seal passes it; an intruder then writes a row into it."""
    fill(ledger, 3)
    gap = _position_of_email(settings.database_url, "1@example.com")
    with raw_log(settings.database_url) as (conn, table, position):
        marker = "?" if isinstance(conn, sqlite3.Connection) else "%s"
        row = conn.execute(
            f"SELECT originator_id, originator_version, topic, state FROM {table} "
            f"WHERE {position} = {marker}",
            (gap,),
        ).fetchone()
    tamper(settings.database_url, "DELETE FROM {table} WHERE {position} = %s", gap)
    fill(ledger, 5, start=3)  # more after the gap
    read.seal.run_once()
    assert verify(capsys)[0] == 0
    columns = "originator_id, originator_version, topic, state"
    with raw_log(settings.database_url) as (conn, table, position):
        if isinstance(conn, sqlite3.Connection):
            conn.execute(
                f"INSERT INTO {table} (rowid, {columns}) VALUES (?, ?, ?, ?, ?)",
                (gap, *row),
            )
        else:
            conn.execute(
                f"INSERT INTO {table} ({position}, {columns}) VALUES (%s, %s, %s, %s, %s)",
                (gap, *row),
            )
    code, out = verify(capsys)
    assert code == 1
    assert out.startswith(f"position {gap}: inserted")


def test_the_seal_follows_the_log_and_its_head_is_served(database_url: str) -> None:
    live = make_settings(database_url, LEDGER_PROCESSOR="inline", LEDGER_PROCESSOR_INTERVAL=0.05)
    with TestClient(create_app(live)) as client:
        assert client.get("/api/v1/audit/seal").status_code == 401
        deliver(client, "evt_1", "customer.created", so.customer("cus_1", user_id=USER), T)
        head = eventually(
            lambda: (
                (h := client.get("/api/v1/audit/seal", headers=ADMIN).json())["position"] >= 3
                and h["lag"] == 0
                and h
            )
        )
        assert head["events"] == head["position"] and len(head["hash"]) == 64
