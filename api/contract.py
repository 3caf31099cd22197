"""Routes declared with their contract: one `Endpoint` gives both the Starlette
route and its OpenAPI operation, from the same pydantic models that validate the
request and build the answer.

Declaring a route::

    Endpoint(
        "POST", "/api/stripe/cancel-subscription", extension.cancel_subscription,
        summary="Cancel the caller's subscription",
        security=USER, body=bodies.Cancel, body_required=False,
        answers={200: answers.Canceled},
        errors=(accounts.NoSubscription, StripeRejected, StripeUnavailable),
    )

`security` is enforced before the handler runs (USER: `request.state.user_id`
is the authenticated caller; ADMIN: the admin token was checked); a declared
`body` is parsed (after authentication) into `request.state.body`, a declared
`query` model into `request.state.query`. The refusals a route can answer are
named by exception class and looked up in `api.errors.ERRORS`, so codes and
statuses have one source as well; the ones every route of its kind can answer
(401 for a secured route, 400/413 for a body, 400 for parameters, 429 on
/api/, 503) are added here. Every answer, success or refusal, is documented with
`COMMON_HEADERS` (the `Request-Id` that `api.request_id.RequestId` adds).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

import pydantic_core
from eventsourcing.persistence import PersistenceError
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, Router
from starlette.types import Receive, Scope, Send

from api import auth, bodies
from api.errors import ERRORS, BadRequest, PayloadTooLarge, RateLimited, Unauthorized
from api.request_id import HEADER, PATTERN
from ledger.stripe.gateway import StripeRejected

Handler = Callable[[Request], Awaitable[Response]]
Security = Literal["user", "admin", "stripe"]
USER: Security = "user"
ADMIN: Security = "admin"
STRIPE: Security = "stripe"

# OpenAPI security requirements per kind (both user headers are needed together)
SECURITY: dict[str, list[dict[str, list[str]]]] = {
    USER: [{"userToken": [], "userId": []}],
    ADMIN: [{"adminToken": []}],
    STRIPE: [{"stripeSignature": []}],
}
SECURITY_SCHEMES = {
    "userToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "the token `POST /api/users` answered (or the last rotation's)",
    },
    "userId": {"type": "apiKey", "in": "header", "name": "X-User-ID"},
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "LEDGER_ADMIN_TOKEN",
    },
    "stripeSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "Stripe-Signature",
        "description": "Stripe's HMAC-SHA256 signature of the body",
    },
}
# Headers every answer carries, success or refusal, on every route.
COMMON_HEADERS: dict[str, dict[str, Any]] = {
    HEADER: {
        "description": "this request's id: the request's own X-Request-ID when well formed "
        f"({PATTERN}), else one made here (req_ and 24 hex digits); the events the call "
        "records carry it (GET /api/v1/audit/events: cause.request_id)",
        "required": True,
        "schema": {"type": "string", "pattern": f"^{PATTERN}$"},
    }
}
# Exception classes whose error code is not fixed (Stripe's own code replaces it).
OPEN_CODES: set[type[Exception]] = {StripeRejected}

Answer = type[BaseModel] | tuple[type[BaseModel], ...] | str | None


@dataclass(frozen=True)
class Endpoint:
    """One route and its contract. `answers` maps a success status to its model (a
    tuple of models: any of them; a string: a media type without a model, e.g.
    Prometheus text, or bytes answered as they were received; None: no body).
    `answer_headers`: headers every success answer carries (name -> description)."""

    method: str
    path: str
    handler: Handler
    summary: str
    answers: dict[int, Answer]
    security: Security | None = None
    body: type[BaseModel] | None = None
    body_required: bool = True
    max_body: int = bodies.MAX_BODY  # bytes; past it, 413
    query: type[BaseModel] | None = None
    path_params: type[BaseModel] | None = None  # else each {name} in the path is any string
    errors: Sequence[type[Exception]] = ()
    tags: Sequence[str] = ()
    private: bool = False  # per-user data: Cache-Control: no-store
    extra_errors: dict[int, tuple[str, ...]] = field(default_factory=dict)
    answer_headers: dict[str, str] = field(default_factory=dict)

    def route(self) -> Route:
        return Route(self.path, self._endpoint(), methods=[self.method], name=self.handler.__name__)

    def _endpoint(self) -> Handler:
        handler, security, body, required, max_body, query, path_params = (
            self.handler,
            self.security,
            self.body,
            self.body_required,
            self.max_body,
            self.query,
            self.path_params,
        )
        private = self.private or security == USER
        queries = Queries(query) if query is not None else None

        async def endpoint(request: Request) -> Response:
            if security == USER:
                await auth.caller(request)  # sets request.state.user_id
            elif security == ADMIN:
                auth.require_admin(request)
            if path_params is not None:
                request.state.path = parse_params(dict(request.path_params), path_params, "path")
            if queries is not None:
                request.state.query = queries.parse(request.scope["query_string"])
            if body is not None:
                request.state.body = await bodies.parse(
                    request, body, empty_ok=not required, max_body=max_body
                )
            response = await handler(request)
            if private:
                no_store(response)
            return response

        endpoint.__name__ = handler.__name__
        endpoint.__doc__ = handler.__doc__
        endpoint.contract = self  # type: ignore[attr-defined]
        return endpoint

    def refusals(self) -> dict[int, tuple[set[str], bool]]:
        """status -> (error codes, whether other codes may appear too)."""
        found: list[type[Exception]] = list(self.errors)
        if self.security in (USER, ADMIN):
            found.append(Unauthorized)
        if self.body is not None:
            found += [BadRequest, PayloadTooLarge]
        elif self.query is not None or self.path_params is not None:
            found.append(BadRequest)
        if self.path.startswith("/api/"):
            found.append(RateLimited)
        found.append(PersistenceError)
        table: dict[int, tuple[set[str], bool]] = {}
        for exc in found:
            status, code, _ = next(ERRORS[c] for c in exc.__mro__ if c in ERRORS)
            codes, open_ = table.get(status, (set(), False))
            table[status] = (codes | {code}, open_ or exc in OPEN_CODES)
        extra_errors = dict(self.extra_errors)
        if "{" in self.path:  # a parameter holding "/" is no such route
            extra_errors[404] = (*extra_errors.get(404, ()), "not_found")
        for status, extra in extra_errors.items():
            codes, open_ = table.get(status, (set(), False))
            table[status] = (codes | set(extra), open_)
        return table


def parse_params(values: dict[str, str], model: type[BaseModel], where: str) -> Any:
    """Path or query parameters through their model; anything else is a 400."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        at = ".".join(str(p) for p in first["loc"])  # none: the model's own rule
        raise BadRequest(
            f"{where} {at}: {first['msg']}" if at else f"{where} {first['msg']}"
        ) from None


def no_store(response: Response) -> None:
    """`Cache-Control: no-store` (in place of any the handler set), added to the
    raw headers: the `headers` view is built anew at each use."""
    raw = [h for h in response.raw_headers if h[0] != b"cache-control"]
    raw.append((b"cache-control", b"no-store"))
    response.raw_headers = raw


class Queries:
    """A route's query strings, parsed through its (frozen) model and kept: the gate
    is asked the same few questions (`?feature=sso`) thousands of times a second,
    and parsing and validating the string took a tenth of its time. Refusals are
    not kept; at most `size` strings are, all forgotten when that is reached."""

    def __init__(self, model: type[BaseModel], size: int = 1024) -> None:
        if not model.model_config.get("frozen"):
            raise TypeError(f"{model.__name__}: a query model is shared, so it must be frozen")
        self.model = model
        self.size = size
        self._kept: dict[bytes, Any] = {}

    def parse(self, raw: bytes) -> Any:
        """What Starlette's `dict(request.query_params)` gives (the last of a repeated
        name), validated by the model; anything else is a 400."""
        found = self._kept.get(raw)
        if found is None:
            values = dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True))
            found = parse_params(values, self.model, "query")
            if len(self._kept) >= self.size:
                self._kept.clear()
            self._kept[raw] = found
        return found


def reply(answer: BaseModel, status: int = 200) -> Response:
    """An answer built from its declared model (so it matches the document),
    serialised by pydantic-core in one step."""
    return Response(answer.model_dump_json(), status, media_type="application/json")


def reply_built(answer: Mapping[str, Any], status: int = 200) -> Response:
    """An answer built by our own code in its declared model's shape (strings, ints
    and bools), serialised at once by pydantic-core, not validated again: for a
    batch of 1,000 usage records the validation alone took 13 ms. Tests hold such
    answers to their model."""
    return Response(pydantic_core.to_json(answer), status, media_type="application/json")


def routes(endpoints: Sequence[Endpoint]) -> list[BaseRoute]:
    return [e.route() for e in endpoints]


class Routes(Router):
    """Starlette's router, except that a path without parameters is found in a
    dictionary: the router tries every route's pattern in turn (about 60 here),
    which cost a tenth of a request on the hot reads. A path goes to the dictionary
    only when no route listed before it takes that method and path too, so the
    route found is the same either way; anything else (a wrong method: 405) is the
    router's own scan."""

    def __init__(self, routes: Sequence[BaseRoute], **kwargs: Any) -> None:
        super().__init__(list(routes), **kwargs)
        self.exact: dict[tuple[str, str], Route] = {}
        for i, route in enumerate(self.routes):
            if not isinstance(route, Route) or route.param_convertors or not route.methods:
                continue
            for method in route.methods:
                shadowed = any(
                    isinstance(r, Route)
                    and (not r.methods or method in r.methods)
                    and r.path_regex.match(route.path)
                    for r in self.routes[:i]
                )
                if not shadowed:
                    self.exact.setdefault((method, route.path), route)

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            route = self.exact.get((scope["method"], scope["path"]))
            if route is not None:
                scope.setdefault("router", self)
                scope["route"] = route
                scope.update(endpoint=route.endpoint, path_params={})
                await route.handle(scope, receive, send)
                return
        await super().app(scope, receive, send)


def contract_of(route: BaseRoute) -> Endpoint | None:
    return getattr(getattr(route, "endpoint", None), "contract", None)


# --- the document ---------------------------------------------------------------------


class ErrorAnswer(BaseModel):
    error: str
    error_code: str


def openapi(
    routes: Sequence[BaseRoute], *, title: str = "Billing ledger", version: str = "0.1.0"
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route declared with an `Endpoint`."""
    endpoints = [e for e in (contract_of(r) for r in routes) if e is not None]
    inputs: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (ErrorAnswer, "serialization")
    ]
    for e in endpoints:
        for model in (e.body, e.query):
            if model is not None:
                inputs.append((model, "validation"))
        for answer in e.answers.values():
            for model in _models(answer):
                inputs.append((model, "serialization"))
    keyed, top = models_json_schema(
        list(dict.fromkeys(inputs)), ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = dict(top.get("$defs", {}))

    def ref(model: type[BaseModel], mode: str) -> dict[str, Any]:
        return keyed[(model, mode)]  # type: ignore[index]

    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        paths.setdefault(e.path, {})[e.method.lower()] = _operation(e, ref, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Every refusal is {error, error_code}; every answer names its "
            "request in Request-Id; see README.md.",
        },
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }


def _models(answer: Answer) -> tuple[type[BaseModel], ...]:
    if answer is None or isinstance(answer, str):
        return ()
    return answer if isinstance(answer, tuple) else (answer,)


def _operation(
    e: Endpoint, ref: Callable[[type[BaseModel], str], dict[str, Any]], schemas: dict[str, Any]
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": e.handler.__name__,
        "summary": e.summary,
        "responses": {},
    }
    if e.handler.__doc__:
        operation["description"] = e.handler.__doc__.strip()
    if e.tags:
        operation["tags"] = list(e.tags)
    operation["security"] = SECURITY[e.security] if e.security else []
    declared = e.path_params.model_json_schema()["properties"] if e.path_params else {}
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": _plain(declared.get(name, {"type": "string"})),
        }
        for name in _path_params(e.path)
    ]
    if e.query is not None:
        schema = e.query.model_json_schema()
        required = set(schema.get("required", ()))
        for name, prop in schema.get("properties", {}).items():
            prop = {k: v for k, v in prop.items() if k != "title"}
            if "anyOf" in prop:  # Optional[str]: a query parameter is a string when present
                prop = {
                    **{k: v for k, v in prop.items() if k != "anyOf"},
                    **next(s for s in prop["anyOf"] if s.get("type") != "null"),
                }
            prop.pop("default", None)
            description = prop.pop("description", None)
            parameter = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if description:
                parameter["description"] = description
            parameters.append(parameter)
    if parameters:
        operation["parameters"] = parameters
    if e.body is not None:
        operation["requestBody"] = {
            "required": e.body_required,
            "content": {"application/json": {"schema": ref(e.body, "validation")}},
        }
    elif e.security == STRIPE:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    for status, answer in sorted(e.answers.items()):
        response: dict[str, Any] = {"description": _REASONS.get(status, "answer")}
        if isinstance(answer, str) and answer.endswith("json"):
            response["content"] = {answer: {}}  # JSON of its own shape (e.g. Stripe's bytes)
        elif isinstance(answer, str):
            response["content"] = {answer: {"schema": {"type": "string"}}}
        elif answer is not None:
            models = _models(answer)
            schema = (
                ref(models[0], "serialization")
                if len(models) == 1
                else {"anyOf": [ref(m, "serialization") for m in models]}
            )
            response["content"] = {"application/json": {"schema": schema}}
        response["headers"] = {
            **COMMON_HEADERS,
            **{
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in e.answer_headers.items()
            },
        }
        operation["responses"][str(status)] = response
    for status, (codes, open_) in sorted(e.refusals().items()):
        code_schema: dict[str, Any] = {"type": "string"}
        if not open_:
            code_schema["enum"] = sorted(codes)
        schema = {
            "allOf": [
                {"$ref": "#/components/schemas/ErrorAnswer"},
                {"type": "object", "properties": {"error_code": code_schema}},
            ]
        }
        response = {
            "description": f"{_REASONS.get(status, 'refused')}: {', '.join(sorted(codes))}",
            "content": {"application/json": {"schema": schema}},
            "headers": dict(COMMON_HEADERS),
        }
        if status in (429, 503):
            response["headers"]["Retry-After"] = {"schema": {"type": "integer"}}
        operation["responses"][str(status)] = response
    return operation


def _plain(prop: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in prop.items() if k not in ("title", "description")}


def _path_params(path: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{")]


_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    410: "Gone",
    413: "Payload Too Large",
    429: "Too Many Requests",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
