"""On PostgreSQL the processes that follow the log are woken by the store when
events are committed to it (LISTEN/NOTIFY, ledger/store/listener.py), instead of
reading its head every 10 ms while nothing happens; on SQLite they still read
the head."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.bootstrap import Parts
from ledger.loop import WakeableLoop
from ledger.opening import open_ledger
from ledger.store import listener
from ledger.store.listener import NAME
from projections import read_side
from scripts.cli import main
from tests import stripe_objects as so
from tests.conftest import PG_ADMIN, deliver, eventually, make_settings
from tests.integration.test_ledger import delivery


def _connected(woken: threading.Event) -> None:
    """The wake-up every listener gives once connected (what was committed before
    went unnoticed), then quiet while nothing is committed."""
    assert woken.wait(5)
    time.sleep(0.1)
    woken.clear()
    assert not woken.wait(0.3)


def test_a_commit_to_the_log_wakes_a_listener_whichever_path_wrote_it(database_url: str) -> None:
    parts = Parts(make_settings(database_url))
    woken = threading.Event()
    try:
        listening = parts.wake_on_log(woken.set)
        if not database_url.startswith("postgresql"):
            assert listening is False and parts.listener is None  # the caller polls the head
            return
        assert listening
        _connected(woken)
        parts.ledger.record([delivery("evt_library")])  # the library's insert (stage two's)
        assert woken.wait(5)
        woken.clear()
        with TestClient(create_app(make_settings(database_url))) as api:  # stage one's writer
            deliver(api, "evt_api", "customer.created", so.customer("cus_1"), 100)
        assert woken.wait(5)
    finally:
        parts.close()


def test_a_listener_whose_connection_is_cut_connects_again_and_misses_nothing(
    postgres_url: str,
) -> None:
    parts = Parts(make_settings(postgres_url))
    woken = threading.Event()
    try:
        assert parts.wake_on_log(woken.set)
        _connected(woken)
        database = postgres_url.rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            cut = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s AND datname = %s",
                (NAME, database),
            ).fetchall()
        assert cut == [(True,)]
        # connected again, it wakes its callers: a commit meanwhile went unnoticed
        eventually(woken.is_set, timeout=10)
        assert parts.listener is not None and parts.listener.listening
        woken.clear()
        parts.ledger.record([delivery("evt_after")])
        assert woken.wait(5)
    finally:
        parts.close()


@pytest.mark.parametrize("command", [["process"], ["projections", "run"]])
def test_a_process_of_its_own_reads_the_head_only_where_the_store_cannot_wake_it(
    cli_env: pytest.MonkeyPatch, database_url: str, command: list[str]
) -> None:
    heads, woken = [], threading.Event()
    writer = open_ledger(make_settings(database_url), pool_size=1)

    def foreground(loop: WakeableLoop, head: object = None) -> None:
        heads.append(head)
        if head is None:  # woken by the store: by a commit to the log
            _connected(woken)
            writer.record([delivery("evt_1")])
            assert woken.wait(5)

    cli_env.setattr(WakeableLoop, "run_in_foreground", foreground)
    cli_env.setattr(WakeableLoop, "wake", lambda loop: woken.set())
    try:
        assert main(command) == 0
    finally:
        writer.close()
    assert len(heads) == 1
    assert (heads[0] is None) == database_url.startswith("postgresql")


def _far_off(wakeup: listener.Wakeup) -> None:
    """A watcher's pause that ends only when it is woken."""
    wakeup._event.wait(60)
    wakeup._event.clear()


def _registered(client: TestClient, user: str) -> dict[str, str]:
    """A new user's headers; its subscription read once (and kept: not active)."""
    token = client.post("/api/users", json={"user_id": user}).json()["token"]
    headers = {"X-User-ID": user, "Authorization": f"Bearer {token}"}
    assert client.get("/api/stripe/get-subscription", headers=headers).json() == {"active": False}
    return headers


def _applied_by_another_process(settings: Any, client: TestClient, user: str, name: str) -> None:
    """A subscription delivered through `client` and applied by another process's
    stage two and projections."""
    sub = so.subscription(f"sub_{name}", f"cus_{name}", user_id=user)
    deliver(client, f"evt_{name}", "customer.subscription.created", sub, 100)
    parts = Parts(settings)
    try:
        parts.ledger.process_new()
        assert parts.read.catchup.run_once() > 0
    finally:
        parts.close()


def test_the_api_watchers_are_woken_by_the_store_not_by_their_timers(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the timers of a process's watchers set far off, what another process
    commits still reaches it at once: a revoked token is refused, and a
    subscription the projections applied is answered instead of the cached
    "not active" (both within a second: the store's notification woke the watchers)."""

    monkeypatch.setattr(listener.Wakeup, "pause", _far_off)
    user = "user_1767225600_listenerab"
    settings = make_settings(postgres_url, LEDGER_PROJECTIONS="off")
    with TestClient(create_app(settings)) as a, TestClient(create_app(settings)) as b:
        headers = _registered(a, user)
        time.sleep(0.3)  # the watchers' turns after the registration are over

        _applied_by_another_process(settings, b, user, "listener")
        eventually(
            lambda: a.get("/api/stripe/get-subscription", headers=headers).json()["active"],
            timeout=1,
        )

        revoked = b.delete(
            f"/api/v1/audit/users/{user}/tokens", headers={"Authorization": "Bearer adm_test"}
        )
        assert revoked.status_code == 200
        eventually(
            lambda: a.get("/api/stripe/get-subscription", headers=headers).status_code == 401,
            timeout=1,
        )


def test_a_commit_told_by_the_store_is_seen_through_the_positions_the_watchers_share(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watchers of a process share one read of the projections' positions for
    a moment (`read_side.SHARED`, here an hour). A commit the store tells of
    within it still reaches the cache: the watch's turn reads the positions anew.
    (A turn that took the shared read, made just before the commit, answered
    "not active" until its 0.5 s timer: 3% of the freshness samples.)"""

    monkeypatch.setattr(listener.Wakeup, "pause", _far_off)
    monkeypatch.setattr(read_side, "SHARED", 3600.0)
    user = "user_1767225600_sharedabcd"
    settings = make_settings(postgres_url, LEDGER_PROJECTIONS="off")
    with TestClient(create_app(settings)) as a, TestClient(create_app(settings)) as b:
        headers = _registered(a, user)
        time.sleep(0.3)  # the watch's turns after the registration: positions shared

        _applied_by_another_process(settings, b, user, "shared")
        eventually(
            lambda: a.get("/api/stripe/get-subscription", headers=headers).json()["active"],
            timeout=1,
        )
