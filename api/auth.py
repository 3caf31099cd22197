"""Who is calling: X-User-ID and Authorization: Bearer <token>, checked by the ledger."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ledger.accounts import Accounts


async def caller(request: Request) -> str:
    accounts: Accounts = request.state.accounts
    user_id = request.headers.get("x-user-id")
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    return await run_in_threadpool(accounts.authenticate, user_id, token)
