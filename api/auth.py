"""Who is calling: X-User-ID and Authorization: Bearer <token>, checked by the ledger."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ledger.accounts import Accounts


async def caller(request: Request) -> str:
    """The caller's user id. Known users are checked in memory; the first call of a
    user reads the log (in the thread pool)."""
    accounts: Accounts = request.state.accounts
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    user_id = request.headers.get("x-user-id")
    known = accounts.authenticated_from_memory(user_id, token)
    if known is not None:
        return known
    return await run_in_threadpool(accounts.authenticate, user_id, token)
