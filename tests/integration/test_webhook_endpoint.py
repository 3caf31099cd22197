"""POST /webhooks/stripe through the ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from ledger.application import Ledger
from ledger.config import Settings
from ledger.domain.receipt import Outcome, Receipt
from ledger.domain.subscription import Subscription
from ledger.opening import open_ledger
from tests import stripe_objects as so
from tests.conftest import WEBHOOK_SECRET, eventually, make_settings
from tests.integration.test_extension_api import register


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def post(
    client: TestClient,
    body: bytes,
    *,
    secret: str = WEBHOOK_SECRET,
    timestamp: int | None = None,
    header: str | None = None,
):
    signature = header if header is not None else so.sign(body, secret, timestamp)
    return client.post(
        "/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
    )


def started(evt_id: str = "evt_sub_created", created: int = 1_767_225_600) -> bytes:
    obj = so.subscription("sub_A", "cus_A", user_id="user_1767225600_abcdefghij")
    return so.body_of(so.event(evt_id, "customer.subscription.created", obj, created=created))


def receipts(ledger: Ledger) -> list[Receipt.Received]:
    return [
        e
        for n in ledger.recorder.select_notifications(start=1, limit=1000)
        if isinstance(e := ledger.mapper.to_domain_event(n), Receipt.Received)
    ]


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "lag": 0}


def test_a_signed_delivery_is_recorded_byte_for_byte(client: TestClient, ledger: Ledger) -> None:
    body, signed_at = started(), int(time.time()) - 7
    answer = post(client, body, timestamp=signed_at)
    assert answer.status_code == 200
    assert answer.json() == {"received": True, "duplicate": False}
    [receipt] = receipts(ledger)
    assert receipt.signature_time == signed_at  # its Stripe-Signature's t=
    assert receipt.payload.startswith("pd1:cus_A:")  # about a customer: stored encrypted
    assert ledger.personal.reveal(receipt.payload).encode() == body
    assert (receipt.stripe_event_id, receipt.event_type) == (
        "evt_sub_created",
        "customer.subscription.created",
    )


def test_a_second_delivery_changes_nothing(client: TestClient, ledger: Ledger) -> None:
    body = started()
    assert post(client, body).json() == {"received": True, "duplicate": False}
    answer = post(client, body)
    assert answer.status_code == 200
    assert answer.json() == {"received": True, "duplicate": True}
    assert len(receipts(ledger)) == 1


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("t=abc,v1=00", "unable to extract"),
        ("t=1,v0=deadbeef", "no signatures found"),
    ],
)
def test_a_bad_signature_header_is_rejected(
    client: TestClient, ledger: Ledger, header: str | None, reason: str
) -> None:
    headers = {} if header is None else {"Stripe-Signature": header}
    answer = client.post("/webhooks/stripe", content=started(), headers=headers)
    assert answer.status_code == 400
    assert answer.json()["error_code"] == "invalid_signature"
    assert reason in answer.json()["error"].lower()
    assert receipts(ledger) == []


def test_a_wrong_secret_or_an_old_signature_is_rejected(client: TestClient, ledger: Ledger) -> None:
    body = started()
    wrong = post(client, body, secret="whsec_someone_else")
    expired = post(client, body, timestamp=int(time.time()) - 301)
    for answer in (wrong, expired):
        assert answer.status_code == 400
        assert set(answer.json()) == {"error", "error_code"}
        assert answer.json()["error_code"] == "invalid_signature"
    assert "tolerance" in expired.json()["error"]
    assert receipts(ledger) == []


def test_a_tampered_body_is_rejected(client: TestClient, ledger: Ledger) -> None:
    body = started()
    header = so.sign(body, WEBHOOK_SECRET)
    answer = post(client, body.replace(b"sub_A", b"sub_B"), header=header)
    assert answer.status_code == 400
    assert receipts(ledger) == []


def test_both_secrets_are_accepted_during_a_rotation(database_url: str) -> None:
    from pydantic import SecretStr

    settings = make_settings(
        database_url, STRIPE_WEBHOOK_SECRET=SecretStr(f"whsec_old, {WEBHOOK_SECRET}")
    )
    with TestClient(create_app(settings)) as client:
        assert post(client, started("evt_1"), secret="whsec_old").status_code == 200
        assert post(client, started("evt_2"), secret=WEBHOOK_SECRET).status_code == 200
        assert post(client, started("evt_3"), secret="whsec_other").status_code == 400


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", "not_an_event"),
        (b"[1, 2]", "not_an_event"),
        (b'{"id": "evt_1", "type": "x"}', "not_an_event"),
        (b'{"id": "cus_1", "type": "x", "created": 1, "data": {"object": {}}}', "not_an_event"),
        (b"\xff\xfe", "invalid_signature"),  # not UTF-8: Stripe signs text
    ],
)
def test_a_signed_body_that_is_not_an_event_is_rejected(
    client: TestClient, ledger: Ledger, body: bytes, code: str
) -> None:
    answer = post(client, body)
    assert answer.status_code == 400
    assert answer.json()["error_code"] == code
    assert receipts(ledger) == []


def test_a_body_over_one_mebibyte_is_refused(client: TestClient, ledger: Ledger) -> None:
    envelope = so.event("evt_big", "customer.updated", so.customer("cus_1"), created=1)
    envelope["data"]["object"]["description"] = "x" * (1024 * 1024)
    body = so.body_of(envelope)
    answer = post(client, body)
    assert answer.status_code == 413
    assert answer.json()["error_code"] == "payload_too_large"
    assert receipts(ledger) == []


def test_the_processor_in_the_api_process_applies_what_was_recorded(
    database_url: str, ledger: Ledger
) -> None:
    settings = make_settings(
        database_url, LEDGER_PROCESSOR="inline", LEDGER_PROCESSOR_INTERVAL=0.05
    )
    with TestClient(create_app(settings)) as client:
        assert post(client, started()).status_code == 200
        eventually(lambda: ledger.receipt("evt_sub_created").outcome)
    assert ledger.receipt("evt_sub_created").outcome is Outcome.APPLIED
    subscription = ledger.repository.get(Subscription.create_id("sub_A"))
    assert (subscription.status, subscription.user_id) == ("active", "user_1767225600_abcdefghij")


def test_the_mounted_route_answers_as_the_shortcut_does(settings: Settings, ledger: Ledger) -> None:
    """The shortcut middleware serves the webhook before routing; the declared route
    (mounted, documented) runs the same code when reached through the router."""
    app = create_app(settings)
    body, tampered = started(), started().replace(b"sub_A", b"sub_B")
    answers = {}
    for name, target in (("shortcut", app), ("route", app.router)):
        with TestClient(target, raise_server_exceptions=False) as c:
            answers[name] = [
                (a.status_code, a.json(), a.headers.get("retry-after"), a.headers["content-type"])
                for a in (
                    post(c, body),
                    post(c, tampered, header=so.sign(body, WEBHOOK_SECRET)),
                    post(c, b"x" * (1024 * 1024 + 1)),
                )
            ]
    first = {"received": True, "duplicate": False}
    assert answers["shortcut"][0][:2] == (200, first)
    assert answers["route"][0][:2] == (200, {"received": True, "duplicate": True})
    assert answers["shortcut"][1:] == answers["route"][1:]
    assert [a[1]["error_code"] for a in answers["route"][1:]] == [
        "invalid_signature",
        "payload_too_large",
    ]
    assert len(receipts(ledger)) == 1


def metric(client: TestClient, result: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'ledger_webhook_deliveries_total{{result="{result}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_rejected_and_duplicate_deliveries(client: TestClient) -> None:
    results = ("invalid_signature", "not_an_event", "payload_too_large", "recorded", "duplicate")
    before = {r: metric(client, r) for r in results}
    post(client, started(), secret="whsec_wrong")
    post(client, b"signed, but not an event")
    post(client, b"x" * (1024 * 1024 + 1))
    post(client, started())
    post(client, started())
    after = {r: metric(client, r) for r in results}
    assert {r: after[r] - before[r] for r in results} == dict.fromkeys(results, 1)


def test_a_bad_plans_file_stops_the_service_at_start(database_url: str, tmp_path) -> None:
    from ledger.plans import PlansFileError

    bad = tmp_path / "plans.yaml"
    bad.write_text("fallback_tier: premium\nfree_tier: free\nplans: []\n")
    settings = make_settings(database_url, LEDGER_PLANS_FILE=bad)
    with pytest.raises(PlansFileError, match=r"plans\.yaml:\d+"), TestClient(create_app(settings)):
        pass


def test_an_unreachable_database_answers_503_so_that_stripe_retries(postgres_url: str) -> None:
    """PostgreSQL only: there, connections can be refused while the app runs."""
    import psycopg

    from tests.conftest import PG_ADMIN

    name = postgres_url.rsplit("/", 1)[1]
    settings = make_settings(postgres_url, LEDGER_WEBHOOK_WRITE_TIMEOUT=1.0)
    with TestClient(create_app(settings)) as client:
        assert post(client, started("evt_before")).status_code == 200
        user = register(client)
        known = client.get("/api/stripe/get-subscription", headers=user)
        assert known.status_code == 200
        assert "ledger_receipts{" in client.get("/metrics").text
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            try:
                answer = post(client, started("evt_during"))
                assert client.get("/readyz").status_code == 503
                # A hot read answers within seconds: from memory, the row as it was (the
                # projection cannot move while its database is down), or 503; never a
                # 500, never something else. And /metrics still answers.
                started_at = time.monotonic()
                status = client.get("/api/stripe/get-subscription", headers=user)
                assert (status.status_code, status.json()) == (200, known.json()) or (
                    status.status_code,
                    status.json().get("error_code"),
                ) == (503, "store_unavailable"), status.text
                assert time.monotonic() - started_at < 10  # not the library's ~20 s of retries
                scrape = client.get("/metrics")
                assert scrape.status_code == 200 and "ledger_webhook_deliveries" in scrape.text
                assert "ledger_receipts" not in scrape.text  # no stale figures
            finally:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert answer.status_code == 503
        assert answer.json()["error_code"] == "store_unavailable"
        assert answer.headers["retry-after"] == "5"
        assert metric(client, "store_unavailable") >= 1
        # Stripe's retry, once it is back: recorded now, or a duplicate if the first
        # attempt's write landed after its 503. Either way the log holds it once.
        deadline = time.monotonic() + 60
        while (retried := post(client, started("evt_during"))).status_code == 503:
            assert time.monotonic() < deadline, "the service did not recover"
            time.sleep(0.5)
        assert retried.status_code == 200
    with open_ledger(settings) as ledger:
        assert ledger.receipt("evt_during").stripe_event_id == "evt_during"
