"""The bare floor of webhook ingest in Python, for the `peer` section: a raw ASGI
app under the same uvicorn as ours that verifies the Stripe signature and does
one autocommit INSERT per request (no log, no receipt, no group commit, no
encryption). What per-request Python and PostgreSQL cost with nothing else.

    DATABASE_URL=postgresql://... python -m scripts.dev.bare_floor --port 8031
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import time
from typing import Any

import uvicorn
from psycopg_pool import AsyncConnectionPool

SECRET = os.environ.get("STRIPE_WEBHOOK_SECRET", "").encode()
TOLERANCE = 300
INSERT = "INSERT INTO floor_events (id, body) VALUES (%s, %s) ON CONFLICT DO NOTHING"
pool: AsyncConnectionPool | None = None


def verified(header: str, body: bytes) -> bool:
    """Stripe's scheme: t=<unix time>,v1=<HMAC-SHA256 of "t.body">, within 5 minutes."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = hmac.new(SECRET, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - timestamp) <= TOLERANCE
    return fresh and hmac.compare_digest(expected, parts.get("v1", ""))


async def _answer(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global pool
    if scope["type"] == "lifespan":
        await receive()  # lifespan.startup
        pool = AsyncConnectionPool(
            os.environ["DATABASE_URL"], min_size=10, max_size=10, open=False,
            kwargs={"autocommit": True},
        )  # fmt: skip
        await pool.open(wait=True)
        async with pool.connection() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS floor_events (id TEXT PRIMARY KEY, body BYTEA)"
            )
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await pool.close()
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/healthz":
        await _answer(send, 200, b'{"ok":true}')
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    header = dict(scope["headers"]).get(b"stripe-signature", b"").decode()
    if not verified(header, body):
        await _answer(send, 400, b'{"error":"bad signature"}')
        return
    assert pool is not None
    async with pool.connection() as conn:
        await conn.execute(INSERT, (json.loads(body)["id"], body))
    await _answer(send, 200, b'{"received":true}')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
