"""Who is calling: per user (X-User-ID and Authorization: Bearer <token>, checked
by the ledger, then counted against that user's rate limit), or an operator (the
admin token, compared in constant time here and nowhere else)."""

from __future__ import annotations

import hmac

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from api.errors import Unauthorized
from api.ratelimit import Limits, client_address
from ledger.accounts import Accounts, NotAuthenticated


async def caller(request: Request) -> str:
    """The caller's user id (once per request). Known users are checked in memory;
    the first call of a user reads the log (in the thread pool). Only a valid token
    counts against the user's limit; a failed attempt counts against the sender's
    address, whose failed attempts past their own limit get 429."""
    known = request.scope.get("state", {}).get("user_id")  # no AttributeError raised per request
    if known is not None:
        return known
    accounts: Accounts = request.state.accounts
    limits: Limits = request.state.limits
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    user_id = request.headers.get("x-user-id")
    try:
        found = accounts.authenticated_from_memory(user_id, token)
        if found is None:
            found = await run_in_threadpool(accounts.authenticate, user_id, token)
    except NotAuthenticated:
        limits.failed_authentication(client_address(request.scope))
        raise
    limits.user(found)
    request.state.user_id = found
    return found


def require_admin(request: Request) -> None:
    """The one check of the admin token: constant time, over the whole header."""
    token = request.state.settings.admin_token.get_secret_value()
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise Unauthorized("an admin token is required: Authorization: Bearer <token>")
