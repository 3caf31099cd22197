"""The OpenAPI document: valid 3.1, generated from the models that validate the
requests and build the answers, and exactly the routes that are mounted."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from api import bodies, usage
from api.app import create_app
from api.contract import Endpoint, contract_of, openapi
from api.errors import ERRORS
from api.request_id import RequestId
from api.webhooks import WebhookShortcut
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def app() -> Any:
    return create_app(make_settings("sqlite:///unused.db"))


@pytest.fixture(scope="module")
def document(app: Any) -> dict[str, Any]:
    return openapi(app.routes)


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_every_mounted_route_is_documented_and_every_documented_route_mounted(
    app: Any, document: dict[str, Any]
) -> None:
    mounted: set[tuple[str, str]] = set()
    for route in app.routes:
        assert isinstance(route, Route), f"{route!r}: declare it with api.contract.Endpoint"
        assert contract_of(route) is not None, f"{route.path}: not declared with an Endpoint"
        for method in route.methods or ():
            if method != "HEAD":  # Starlette adds HEAD to GET
                mounted.add((method.lower(), route.path))
    documented = {(m, path) for path, ops in document["paths"].items() for m in ops}
    assert mounted == documented
    for expected in [
        ("get", "/openapi.json"),
        ("post", "/webhooks/stripe"),
        ("get", "/healthz"),
        ("get", "/metrics"),
        ("post", "/api/users/token"),
        ("delete", "/api/v1/audit/users/{user_id}/tokens"),
    ]:
        assert expected in documented


def test_request_schemas_are_the_models_own(document: dict[str, Any]) -> None:
    operation = document["paths"]["/api/stripe/create-subscription"]["post"]
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    own = bodies.CreateSubscription.model_json_schema()
    assert schema["properties"] == own["properties"]
    assert schema["required"] == own["required"]
    payment = document["components"]["schemas"]["UpdatePaymentMethod"]
    assert payment["properties"]["payment_method_id"]["pattern"].startswith("^pm_")


def test_refusals_and_security_are_documented_per_route(app: Any, document: dict[str, Any]) -> None:
    codes = {code for _, code, _ in ERRORS.values()} | {"not_found"}
    answered = {  # answers with a model of their own, not refusals (e.g. the gate's 402)
        (e.method.lower(), e.path, str(status))
        for e in (contract_of(r) for r in app.routes)
        if e is not None
        for status in e.answers
    }
    schemes = document["components"]["securitySchemes"]
    assert schemes["userId"] == {"type": "apiKey", "in": "header", "name": "X-User-ID"}
    assert schemes["userToken"]["scheme"] == schemes["adminToken"]["scheme"] == "bearer"
    assert schemes["stripeSignature"]["name"] == "Stripe-Signature"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) < 400 or (method, path, status) in answered:
                    continue
                schema = response["content"]["application/json"]["schema"]
                assert schema["allOf"][0] == {"$ref": "#/components/schemas/ErrorAnswer"}
                assert set(schema["allOf"][1]["properties"]["error_code"].get("enum", ())) <= codes
            if path.startswith("/api/v1/audit/"):
                assert operation["security"] == [{"adminToken": []}], path
                assert "401" in operation["responses"]
            elif path.startswith(("/api/stripe/", "/api/v1/billing/", "/api/users/token")):
                assert operation["security"] == [{"userToken": [], "userId": []}], path
                assert "401" in operation["responses"] and "429" in operation["responses"]
    webhook = document["paths"]["/webhooks/stripe"]["post"]
    assert webhook["security"] == [{"stripeSignature": []}]
    assert set(webhook["responses"]) >= {"200", "400", "413", "503"}
    register = document["paths"]["/api/users"]["post"]["responses"]
    enum = register["409"]["content"]["application/json"]["schema"]["allOf"][1]
    assert enum["properties"]["error_code"]["enum"] == ["user_exists"]


def test_every_answer_documents_its_request_id(document: dict[str, Any]) -> None:
    """Success or refusal, on every route: a required Request-Id; the headers of
    their own (Retry-After, the raw delivery's Ledger-*) beside it."""
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                header = response["headers"]["Request-Id"]
                assert header["required"] is True, (method, path, status)
                assert header["schema"]["pattern"] == "^[A-Za-z0-9._-]{1,64}$"
                if status in ("429", "503"):
                    assert "Retry-After" in response["headers"], (method, path, status)
    raw = document["paths"]["/api/v1/audit/deliveries/{stripe_event_id}"]["get"]["responses"]
    assert {"Request-Id", "Ledger-Outcome"} <= set(raw["200"]["headers"])


def test_usage_metering_is_documented(document: dict[str, Any]) -> None:
    """One gate for a feature or a metric: its 200 and 402 are either branch's
    model; the batch's body limit is its own."""
    schemas = document["components"]["schemas"]
    gate = document["paths"]["/api/v1/billing/entitlements/check"]["get"]
    assert {p["name"]: p["required"] for p in gate["parameters"]} == {
        "feature": False,
        "metric": False,
        "quantity": False,
    }
    allowed = gate["responses"]["200"]["content"]["application/json"]["schema"]
    assert allowed == {
        "anyOf": [
            {"$ref": "#/components/schemas/Allowed"},
            {"$ref": "#/components/schemas/UsageAllowed"},
        ]
    }
    refused = gate["responses"]["402"]["content"]["application/json"]["schema"]
    assert refused == {
        "anyOf": [
            {"$ref": "#/components/schemas/Refused"},
            {"$ref": "#/components/schemas/UsageLimitReached"},
        ]
    }
    assert schemas["UsageLimitReached"]["properties"]["allowed"]["const"] is False
    assert schemas["Refused"]["properties"]["allowed"]["const"] is False
    assert set(gate["responses"]["400"]["content"]["application/json"]["schema"]["allOf"][1][
        "properties"]["error_code"]["enum"]) == {"bad_request", "unknown_feature"}  # fmt: skip
    stream = document["paths"]["/api/v1/billing/notifications/stream"]["get"]["responses"]
    assert stream["200"]["content"] == {"text/event-stream": {"schema": {"type": "string"}}}
    record = document["paths"]["/api/v1/billing/usage"]["post"]["responses"]
    assert {"200", "201", "400", "401", "413", "429", "503"} <= set(record)
    assert "413" in document["paths"]["/api/v1/billing/usage/batch"]["post"]["responses"]

    batch = next(e for e in usage.ENDPOINTS if e.path.endswith("/batch"))
    assert batch.max_body == 256 * 1024


def test_declaring_a_route_gives_its_route_and_its_operation() -> None:
    """What a new route costs: one Endpoint (the recipe in the README)."""
    from pydantic import BaseModel

    class Ping(BaseModel):
        name: str

    class Pong(BaseModel):
        greeting: str

    async def ping(request: Any) -> Any:
        raise NotImplementedError

    endpoint = Endpoint(
        "POST", "/api/v1/ping", ping, "Ping", security="user", body=Ping, answers={200: Pong}
    )
    operation = openapi([endpoint.route()])["paths"]["/api/v1/ping"]["post"]
    assert operation["operationId"] == "ping"
    assert set(operation["responses"]) == {"200", "400", "401", "413", "429", "503"}


def test_the_admin_token_is_compared_in_one_place_in_constant_time() -> None:
    """By the code's own syntax tree: `admin_token` is read only in api/auth.py (and
    set in ledger/config.py), and there through hmac.compare_digest."""
    readers = []
    for path in [
        *ROOT.glob("api/*.py"),
        *ROOT.glob("ledger/**/*.py"),
        *ROOT.glob("projections/*.py"),
    ]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "admin_token":
                readers.append(path.relative_to(ROOT).as_posix())
    assert set(readers) - {"ledger/config.py"} == {"api/auth.py"}, readers
    auth = ast.parse((ROOT / "api/auth.py").read_text())
    check = next(
        n for n in auth.body if isinstance(n, ast.FunctionDef) and n.name == "require_admin"
    )
    calls = {ast.unparse(n.func) for n in ast.walk(check) if isinstance(n, ast.Call)}
    assert "hmac.compare_digest" in calls


def test_the_raw_delivery_is_documented_as_bytes_with_its_headers_and_refusals(
    document: dict[str, Any],
) -> None:
    """Stripe's body is answered byte for byte: JSON of Stripe's shape, no schema of
    ours; its Ledger-* headers; 404 for an unknown id, 410 once erased."""
    responses = document["paths"]["/api/v1/audit/deliveries/{stripe_event_id}"]["get"]["responses"]
    assert responses["200"]["content"] == {"application/json": {}}
    assert {"Ledger-Outcome", "Ledger-Received-At"} <= set(responses["200"]["headers"])
    for status, code in (("404", "delivery_not_found"), ("410", "erased")):
        codes = responses[status]["content"]["application/json"]["schema"]["allOf"][1]
        assert code in codes["properties"]["error_code"]["enum"]
    erase = document["paths"]["/api/v1/audit/users/{user_id}/erase"]["post"]
    assert erase["security"] == [{"adminToken": []}]


def test_the_webhook_shortcut_serves_only_a_mounted_documented_route(
    app: Any, document: dict[str, Any]
) -> None:
    """`WebhookShortcut` (the first middleware after `RequestId`, which only names
    the request in its answer) answers POST /webhooks/stripe before routing, for
    speed. What it serves is taken from the declared Endpoints, which stay mounted
    (and answer the same, see test_webhook_endpoint) and documented."""
    assert [m.cls for m in app.user_middleware[:2]] == [RequestId, WebhookShortcut]
    served = WebhookShortcut(app).serves
    assert served == {("POST", "/webhooks/stripe")}
    documented = {(m.upper(), path) for path, ops in document["paths"].items() for m in ops}
    mounted = {(m, r.path) for r in app.routes for m in (getattr(r, "methods", None) or ())}
    assert served <= documented and served <= mounted


def test_the_dictionary_of_exact_paths_finds_the_route_the_scan_would(app: Any) -> None:
    """api.contract.Routes: for every method and parameterless path it looks up,
    Starlette's own scan (first full match in order) picks the same route; the hot
    reads are among them."""
    from starlette.routing import Match

    router = app.router
    for (method, path), found in router.exact.items():
        scope = {"type": "http", "method": method, "path": path, "root_path": ""}
        first = next(r for r in router.routes if r.matches(scope)[0] is Match.FULL)
        assert first is found, (method, path)
    assert {("GET", "/api/stripe/get-subscription"), ("GET", "/api/v1/billing/entitlements/check"),
            ("POST", "/api/v1/billing/usage/batch")} <= set(router.exact)  # fmt: skip


def test_exact_paths_still_answer_405_and_parameters_still_route(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    with TestClient(create_app(make_settings(f"sqlite:///{tmp_path}/ledger.db"))) as client:
        wrong = client.put("/api/stripe/get-subscription")
        assert wrong.status_code == 405
        unauthorised = client.get("/api/v1/audit/users/user_1767225600_abcdefghij")
        assert unauthorised.status_code == 401


def test_a_kept_query_parses_as_starlette_does_and_refusals_are_not_kept() -> None:
    from pydantic import BaseModel
    from starlette.datastructures import QueryParams

    from api.contract import Queries
    from api.errors import BadRequest

    queries = Queries(bodies.InvoiceQuery, size=2)
    for raw in (b"limit=5&starting_after=in_1", b"limit=5&limit=7", b"starting_after=a%20b&x"):
        try:
            expected = bodies.InvoiceQuery.model_validate(dict(QueryParams(raw.decode())))
        except ValueError:
            expected = None
        if expected is None:
            with pytest.raises(BadRequest):
                queries.parse(raw)
        else:
            assert queries.parse(raw) == expected
            assert queries.parse(raw) is queries.parse(raw)  # kept
    assert len(queries._kept) <= 2
    with pytest.raises(BadRequest):
        queries.parse(b"limit=0")
    assert b"limit=0" not in queries._kept

    class Mutable(BaseModel):
        limit: int = 1

    with pytest.raises(TypeError, match="frozen"):
        Queries(Mutable)
