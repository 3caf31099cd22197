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
    strategy = st.one_of(
        [
            operation.ok().as_strategy(generation_mode=generation)
            for operation in schema.get_all_operations()
            # rotating the token would lock the rest of the run out
            if operation.ok().path != "/api/users/token"
            and operation.ok().path != "/api/v1/audit/users/{user_id}/tokens"
        ]
    )

    @settings(
        max_examples=EXAMPLES,
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
        assert ("GET", "/api/stripe/get-subscription", 200) in seen, sorted(seen)
        assert ("GET", "/api/v1/audit/webhooks", 200) in seen, sorted(seen)
