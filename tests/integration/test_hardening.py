"""Rate limits that cannot lock a user out, token rotation and revocation across
API processes, per-user answers never cached, one admin check."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from starlette.testclient import TestClient
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api.app import create_app
from ledger.application import Ledger
from ledger.config import Settings
from ledger.domain.usage import Usage
from ledger.domain.user import User, hash_token
from ledger.opening import open_ledger
from ledger.tokens import TokenWatch
from tests.conftest import make_settings, stored_events

VICTIM = "user_1767225600_abcdefghij"
OTHER = "user_1767225601_zyxwvutsrq"
ADMIN = {"Authorization": "Bearer adm_test"}


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(
        database_url,
        LEDGER_RATE_LIMIT_PER_USER="20/minute",
        LEDGER_RATE_LIMIT_FAILED_AUTH="10/minute",
        LEDGER_RATE_LIMIT_REGISTRATION="3/minute",
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """Behind a trusting proxy, so each request names its client address."""
    with TestClient(ProxyHeadersMiddleware(create_app(settings), trusted_hosts="*")) as c:
        yield c


def at(address: str, **headers: str) -> dict[str, str]:
    return {"X-Forwarded-For": address, **headers}


def register(client: TestClient, user_id: str, address: str = "10.0.0.1") -> dict[str, str]:
    answer = client.post("/api/users", json={"user_id": user_id}, headers=at(address))
    assert answer.status_code == 201, answer.text
    return {"X-User-ID": user_id, "Authorization": f"Bearer {answer.json()['token']}"}


def get(client: TestClient, headers: dict[str, str], address: str = "10.0.0.1") -> Any:
    return client.get("/api/stripe/get-subscription", headers=at(address, **headers))


def test_wrong_tokens_naming_a_victim_never_lock_the_victim_out(client: TestClient) -> None:
    victim = register(client, VICTIM, "10.0.0.1")
    forged = {"X-User-ID": VICTIM, "Authorization": "Bearer wrong"}
    codes = [get(client, forged, "10.6.6.6").status_code for _ in range(500)]
    assert codes[:11] == [401] * 10 + [429] and set(codes) == {401, 429}  # the sender is slowed
    assert codes.count(401) < 20  # (a sliding window lets a few more through past a minute)
    answer = get(client, victim, "10.0.0.1")
    assert answer.status_code == 200 and answer.json() == {"active": False}


def test_failed_attempts_past_their_limit_do_not_stop_the_addresses_valid_requests(
    client: TestClient,
) -> None:
    mine = register(client, VICTIM, "10.0.0.2")
    wrong = {"X-User-ID": VICTIM, "Authorization": "Bearer nope"}
    for _ in range(10):
        assert get(client, wrong, "10.0.0.2").status_code == 401
    refused = get(client, wrong, "10.0.0.2")
    assert refused.status_code == 429 and refused.json()["error_code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert get(client, mine, "10.0.0.2").status_code == 200
    assert get(client, wrong, "10.0.0.3").status_code == 401  # another address: its own count


def test_the_per_user_limit_counts_only_valid_requests(client: TestClient) -> None:
    mine = register(client, VICTIM)
    codes = [get(client, mine, f"10.1.0.{n}").status_code for n in range(21)]
    assert codes == [200] * 20 + [429]  # whatever the addresses: the user's own window


def test_registrations_are_limited_per_address(client: TestClient) -> None:
    codes = [
        client.post(
            "/api/users",
            json={"user_id": f"user_1767225600_abcdefgh{n:02d}"},
            headers=at("10.2.0.1"),
        ).status_code
        for n in range(4)
    ]
    assert codes == [201, 201, 201, 429]
    other = client.post("/api/users", json={"user_id": OTHER}, headers=at("10.2.0.2"))
    assert other.status_code == 201


def test_per_user_answers_are_not_cached(client: TestClient) -> None:
    answer = client.post("/api/users", json={"user_id": VICTIM}, headers=at("10.3.0.1"))
    assert answer.headers["cache-control"] == "no-store"
    headers = {"X-User-ID": VICTIM, "Authorization": f"Bearer {answer.json()['token']}"}
    assert get(client, headers).headers["cache-control"] == "no-store"
    verify = client.post("/api/stripe/verify-subscription", headers=headers)
    assert verify.headers["cache-control"] == "no-store"
    audit = client.get(f"/api/v1/audit/users/{VICTIM}", headers=ADMIN)
    assert audit.headers["cache-control"] == "no-store"
    assert "cache-control" not in client.get("/healthz").headers


def test_every_admin_call_goes_through_one_constant_time_check(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import api.auth

    compared: list[bytes] = []
    original = api.auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append(a)
        return original(a, b)

    monkeypatch.setattr(api.auth.hmac, "compare_digest", spy)
    calls = [
        ("GET", f"/api/v1/audit/users/{VICTIM}"),
        ("GET", "/api/v1/audit/webhooks"),
        ("GET", "/api/v1/audit/projections"),
        ("DELETE", f"/api/v1/audit/users/{VICTIM}/tokens"),
    ]
    for method, path in calls:
        wrong = client.request(method, path, headers={"Authorization": "Bearer adm_tesT"})
        assert wrong.status_code == 401 and wrong.json()["error_code"] == "unauthorized"
    assert compared == [b"Bearer adm_tesT"] * len(calls)


# --- tokens ----------------------------------------------------------------------------


@pytest.fixture
def two_processes(settings: Settings) -> Iterator[tuple[TestClient, TestClient]]:
    """Two API processes' apps on one database."""
    with TestClient(create_app(settings)) as a, TestClient(create_app(settings)) as b:
        yield a, b


def refused_on(client: TestClient, headers: dict[str, str], within: float = 2.0) -> float:
    """Seconds until `client` refuses `headers`; fails past `within`."""
    started = time.monotonic()
    while client.get("/api/stripe/get-subscription", headers=headers).status_code != 401:
        assert time.monotonic() - started < within, "the old token is still accepted"
        time.sleep(0.005)
    return time.monotonic() - started


def test_a_rotated_token_is_refused_by_every_process(
    two_processes: tuple[TestClient, TestClient], settings: Settings
) -> None:
    a, b = two_processes
    old = {"X-User-ID": VICTIM, "Authorization": "Bearer " + a.post(
        "/api/users", json={"user_id": VICTIM}).json()["token"]}  # fmt: skip
    assert b.get("/api/stripe/get-subscription", headers=old).status_code == 200  # b keeps it
    assert a.post("/api/users/token", headers={"X-User-ID": VICTIM}).status_code == 401
    rotated = a.post("/api/users/token", headers=old)
    assert rotated.status_code == 201 and rotated.headers["cache-control"] == "no-store"
    assert rotated.json()["user_id"] == VICTIM
    new = {"X-User-ID": VICTIM, "Authorization": f"Bearer {rotated.json()['token']}"}
    assert a.get("/api/stripe/get-subscription", headers=old).status_code == 401  # at once
    assert refused_on(b, old) < 0.5  # within the watch's reads (every 20 ms)
    for client in (a, b):
        assert client.get("/api/stripe/get-subscription", headers=new).status_code == 200
    with open_ledger(settings) as ledger:
        events = stored_events(ledger, User.create_id(VICTIM))
    assert [type(e).__qualname__ for e in events] == ["User.Registered", "User.TokenRotated"]
    assert rotated.json()["token"] not in repr(events[1].__dict__)


def test_revoked_tokens_are_refused_by_every_process(
    two_processes: tuple[TestClient, TestClient], settings: Settings
) -> None:
    a, b = two_processes
    token = a.post("/api/users", json={"user_id": VICTIM}).json()["token"]
    headers = {"X-User-ID": VICTIM, "Authorization": f"Bearer {token}"}
    assert a.get("/api/stripe/get-subscription", headers=headers).status_code == 200
    assert b.get("/api/stripe/get-subscription", headers=headers).status_code == 200
    revoked = b.delete(f"/api/v1/audit/users/{VICTIM}/tokens", headers=ADMIN)
    assert revoked.status_code == 200 and revoked.json() == {"user_id": VICTIM, "revoked": True}
    assert b.get("/api/stripe/get-subscription", headers=headers).status_code == 401
    assert refused_on(a, headers) < 0.5
    assert a.post("/api/users/token", headers=headers).status_code == 401  # cannot rotate back
    unknown = b.delete(f"/api/v1/audit/users/{OTHER}/tokens", headers=ADMIN)
    assert unknown.status_code == 404 and unknown.json()["error_code"] == "user_not_found"
    with open_ledger(settings) as ledger:
        events = stored_events(ledger, User.create_id(VICTIM))
    assert [type(e).__qualname__ for e in events] == ["User.Registered", "User.TokensRevoked"]


def test_the_token_watch_reads_only_what_is_new(ledger: Ledger) -> None:
    """Each poll moves the watch's cursor to the head it read, token events or not
    (it read everything since the last token event before: a growing scan once
    usage records pour in), and a token event after it is still seen."""
    forgotten: list[UUID] = []
    watch = TokenWatch(ledger, forgotten.extend)
    user = User(user_id=VICTIM, token_hash=hash_token("t" * 40))
    ledger.save(user)
    ledger.record([Usage(VICTIM, "ai_requests", 1, f"k{i}", int(time.time())) for i in range(50)])
    watch.poll()
    assert watch._cursor == ledger.recorder.max_notification_id()
    assert forgotten == []
    user.rotate_token(hash_token("u" * 40))
    ledger.save(user)
    watch.poll()
    assert forgotten == [user.id]
    assert watch._cursor == ledger.recorder.max_notification_id()


def test_the_token_watch_woken_by_every_commit_reads_once_an_interval(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL every commit to the log wakes the watch (in a burst, every
    group of deliveries); it reads the log at most once an interval all the same,
    and the reads go on while the wake-ups do."""
    watch = TokenWatch(ledger, lambda ids: None, interval=0.1)
    watch.wakeup.notified = lambda: True  # as while the store's listener listens
    polls: list[float] = []
    monkeypatch.setattr(watch, "poll", lambda: polls.append(time.monotonic()))
    watch.start()
    try:
        until = time.monotonic() + 0.55
        while time.monotonic() < until:
            watch.wakeup.wake()  # a commit every millisecond
            time.sleep(0.001)
    finally:
        watch.stop()
    assert 3 <= len(polls) <= 7, len(polls)  # about one every 0.1 s, not hundreds
