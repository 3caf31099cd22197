"""Schemathesis over /openapi.json against the app, with a registered user's and
the admin's credentials, on both stores: never a 500, every answer as documented
(status, content type, schema, headers), and no 2xx for a malformed request."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.config import CheckConfig
from schemathesis.python.asgi import get_client, shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from tests import stripe_objects as so
from tests.conftest import WEBHOOK_SECRET, make_settings

USER = "user_1767225600_abcdefghij"
ADMIN = {"Authorization": "Bearer adm_test"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
# schemathesis's own list of the statuses that reject a malformed request, and 413
REJECTED = [
    *("400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"),
    "5xx",
]
EXAMPLES = int(
    os.environ.get("SCHEMATHESIS_EXAMPLES", "60")
)  # per mode and store: the whole run stays within a few seconds


@pytest.fixture
def api(database_url: str) -> Iterator[tuple[Any, dict[str, str]]]:
    app = create_app(
        make_settings(
            database_url,
            LEDGER_RATE_LIMIT_PER_USER="100000/minute",
            LEDGER_RATE_LIMIT_PER_ADDRESS="100000/minute",
            LEDGER_RATE_LIMIT_FAILED_AUTH="100000/minute",
            LEDGER_RATE_LIMIT_REGISTRATION="100000/minute",
        )
    )
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts its lifespan
        # a malformed body can be too large as well (a string past its maxLength, in
        # escapes): 413 payload_too_large rejects it as surely as a 400
        schema.config.checks.negative_data_rejection = CheckConfig(expected_statuses=REJECTED)
        client = get_client(app)
        answer = client.post("http://localhost/api/users", json={"user_id": USER})
        assert answer.status_code == 201, answer.text
        user = {"X-User-ID": USER, "Authorization": f"Bearer {answer.json()['token']}"}
        yield schema, user
    finally:
        shutdown_lifespans()


def credentials(case: Any, user: dict[str, str]) -> dict[str, str]:
    security = case.operation.definition.raw.get("security") or []
    names = {name for requirement in security for name in requirement}
    if "userToken" in names:
        return user
    if "adminToken" in names:
        return ADMIN
    return {}


SKIPPED = {
    # rotating the token would lock the rest of the run out
    "/api/users/token",
    "/api/v1/audit/users/{user_id}/tokens",
    # a Server-Sent Events stream never ends: a call would wait forever for its body
    # (tests/integration/test_stream.py reads it on a running server; its refusals,
    # 400 and 401, are checked in tests/integration/test_billing_reads.py)
    "/api/v1/billing/notifications/stream",
}


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_the_api_keeps_its_contract(api: tuple[Any, dict[str, str]], mode: str) -> None:
    schema, user = api
    generation = schemathesis.GenerationMode(mode)
    operations = [
        operation.ok()
        for operation in schema.get_all_operations()
        if operation.ok().path not in SKIPPED
    ]
    # the examples are shared out, so that every operation is exercised in every run
    per_operation = max(4, EXAMPLES // len(operations))
    seen: set[tuple[str, str, int]] = set()

    for operation in operations:

        @settings(
            max_examples=per_operation,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy(generation_mode=generation))
        def check(case: Any) -> None:
            answer = case.call_and_validate(headers=credentials(case, user), checks=CHECKS)
            seen.add((case.operation.method.upper(), case.operation.path, answer.status_code))

        try:
            check()
        except Unsatisfiable:  # nothing to malform (no parameters, no body)
            assert mode == "negative", operation.path
    if mode == "positive":  # the credentials work: authenticated reads answered 200
        for path, headers in [
            ("/api/stripe/get-subscription", user),
            ("/api/v1/billing/subscription", user),
            ("/api/v1/audit/webhooks", ADMIN),
        ]:
            answer = schema[path]["GET"].Case(headers=headers).call_and_validate(checks=CHECKS)
            assert answer.status_code == 200, (path, answer.text, sorted(seen))


def test_usage_answers_keep_the_contract(api: tuple[Any, dict[str, str]]) -> None:
    """Metric and feature names come from the plans file, which generated data does
    not guess: the usage routes' answers (201, 200, 402) and the gate's, of a metric
    and of a feature, checked against the document with known names."""
    schema, user = api
    checks = [c for c in CHECKS if c is not negative_data_rejection]

    def call(method: str, path: str, **data: Any) -> Any:
        case = schema[path][method].Case(**data)
        return case.call_and_validate(headers=user, checks=checks)

    record = {"metric": "ai_requests", "quantity": 2, "idempotency_key": "contract-1"}
    json = {"media_type": "application/json"}
    assert call("POST", "/api/v1/billing/usage", body=record, **json).status_code == 201
    assert call("POST", "/api/v1/billing/usage", body=record, **json).status_code == 200
    batch = {"records": [record, {**record, "idempotency_key": "contract-2"}]}
    answer = call("POST", "/api/v1/billing/usage/batch", body=batch, **json)
    assert answer.status_code == 200 and answer.json()["duplicates"] == 1
    assert call("GET", "/api/v1/billing/usage").status_code == 200
    assert call("GET", "/api/v1/billing/usage", query={"at": "2026-01-15"}).status_code == 200
    check = "/api/v1/billing/entitlements/check"
    allowed = call("GET", check, query={"metric": "ai_requests", "quantity": 1})
    assert allowed.status_code == 200 and allowed.json()["allowed"] is True
    refused = call("GET", check, query={"metric": "storage_mb", "quantity": 101})  # free: 100
    assert refused.status_code == 402 and refused.json()["reason"] == "limit_reached"
    allowed = call("GET", check, query={"feature": "status_check"})
    assert allowed.status_code == 200 and allowed.json() == {"allowed": True}
    refused = call("GET", check, query={"feature": "premium_features"})
    assert refused.status_code == 402 and refused.json()["reason"] == "not_in_plan"
    for query, field in (
        ({}, "feature"),
        ({"feature": "sso", "metric": "ai_requests"}, "metric"),
        ({"feature": "sso", "quantity": 2}, "quantity"),
    ):
        answer = call("GET", check, query=query)
        assert answer.status_code == 400 and answer.json()["error"].startswith(f"query {field}:")
    unknown = call("GET", check, query={"feature": "teleportation"})
    assert (unknown.status_code, unknown.json()["error_code"]) == (400, "unknown_feature")


def test_audit_history_answers_keep_the_contract(api: tuple[Any, dict[str, str]]) -> None:
    """A delivery is there only once Stripe sent one, signed, which generated data
    never is: the raw delivery (its bytes as received, its Ledger-* headers), an
    unknown one, a user's events, actions and erasure, and the seal, checked
    against the document with one recorded."""
    schema, _ = api
    checks = [c for c in CHECKS if c is not negative_data_rejection]
    body = so.body_of(
        so.event(
            "evt_contract_1", "customer.created", so.customer("cus_c1", user_id=USER), created=100
        )
    )
    client = get_client(schema.app)
    sent = client.post(
        "/webhooks/stripe", data=body, headers={"Stripe-Signature": so.sign(body, WEBHOOK_SECRET)}
    )
    assert sent.status_code == 200, sent.text

    def call(method: str, path: str, **data: Any) -> Any:
        case = schema[path][method].Case(**data)
        return case.call_and_validate(headers=ADMIN, checks=checks)

    raw = call(
        "GET",
        "/api/v1/audit/deliveries/{stripe_event_id}",
        path_parameters={"stripe_event_id": "evt_contract_1"},
    )
    assert raw.status_code == 200 and raw.content == body
    assert raw.headers["ledger-outcome"][0] in ("received", "applied")  # lowercase keys, lists
    assert raw.headers["cache-control"] == ["no-store"]
    unknown = call(
        "GET",
        "/api/v1/audit/deliveries/{stripe_event_id}",
        path_parameters={"stripe_event_id": "evt_none"},
    )
    assert unknown.status_code == 404 and unknown.json()["error_code"] == "delivery_not_found"
    user = {"user_id": USER}
    assert call("GET", "/api/v1/audit/events", query={"limit": 1}).json()["next"] is not None
    assert call("GET", "/api/v1/audit/events", query=user).status_code == 200
    assert (
        call("GET", "/api/v1/audit/users/{user_id}/actions", path_parameters=user).status_code
        == 200
    )
    assert call("GET", "/api/v1/audit/seal").status_code == 200
    assert (
        call("POST", "/api/v1/audit/users/{user_id}/erase", path_parameters=user).status_code == 200
    )
