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
from hypothesis import strategies as st
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
from tests.conftest import make_settings

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


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_the_api_keeps_its_contract(api: tuple[Any, dict[str, str]], mode: str) -> None:
    schema, user = api
    generation = schemathesis.GenerationMode(mode)
    operations = [
        operation.ok()
        for operation in schema.get_all_operations()
        # rotating the token would lock the rest of the run out
        if operation.ok().path != "/api/users/token"
        and operation.ok().path != "/api/v1/audit/users/{user_id}/tokens"
    ]
    strategy = st.one_of([o.as_strategy(generation_mode=generation) for o in operations])

    @settings(
        # a few examples per operation at least, however many routes there are
        max_examples=max(EXAMPLES, 4 * len(operations)),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=strategy)
    def check(case: Any) -> None:
        answer = case.call_and_validate(headers=credentials(case, user), checks=CHECKS)
        seen.add((case.operation.method.upper(), case.operation.path, answer.status_code))

    seen: set[tuple[str, str, int]] = set()
    check()
    if mode == "positive":  # the credentials work: authenticated reads answered 200
        for path, headers in [
            ("/api/stripe/get-subscription", user),
            ("/api/v1/billing/subscription", user),
            ("/api/v1/audit/webhooks", ADMIN),
        ]:
            answer = schema[path]["GET"].Case(headers=headers).call_and_validate(checks=CHECKS)
            assert answer.status_code == 200, (path, answer.text, sorted(seen))
