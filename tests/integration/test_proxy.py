"""Behind a proxy (`ledger serve --proxy-headers --forwarded-allow-ips ...`): the
per-address limits see the client that X-Forwarded-For names when the proxy is
trusted, and the proxy's own address when it is not. A real uvicorn on 127.0.0.1;
the untrusted proxy connects from 127.0.0.2 (loopback too)."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from scripts.dev import loadgen
from tests.conftest import WEBHOOK_SECRET

pytestmark = pytest.mark.slow
VICTIM = "user_1767225600_abcdefghij"
WRONG = {"X-User-ID": VICTIM, "Authorization": "Bearer wrong"}


def test_forwarded_client_addresses_are_taken_only_from_the_allowed_proxy(
    database_url: str, tmp_path: Path
) -> None:
    server = loadgen.start_server(
        database_url,
        env_extra={"LEDGER_RATE_LIMIT_FAILED_AUTH": "2/minute"},
        secret=WEBHOOK_SECRET,
        log_path=tmp_path / "serve.log",
        extra_args=["--proxy-headers", "--forwarded-allow-ips", "127.0.0.1"],
    )
    url = f"{server.base_url}/api/stripe/get-subscription"
    try:
        with (
            httpx2.Client(transport=httpx2.HTTPTransport(local_address="127.0.0.1")) as allowed,
            httpx2.Client(transport=httpx2.HTTPTransport(local_address="127.0.0.2")) as other,
        ):

            def failures(client: httpx2.Client, forwarded_for: str, n: int) -> list[int]:
                headers = {**WRONG, "X-Forwarded-For": forwarded_for}
                return [client.get(url, headers=headers).status_code for _ in range(n)]

            # the allowed proxy: each forwarded client has its own count
            assert failures(allowed, "203.0.113.7", 3) == [401, 401, 429]
            assert failures(allowed, "203.0.113.8", 1) == [401]
            # a proxy not allowed: its X-Forwarded-For is ignored, all are 127.0.0.2
            assert failures(other, "198.51.100.1", 2) == [401, 401]
            assert failures(other, "198.51.100.2", 1) == [429]
            # and a client cannot pose as another by sending the header itself
            assert failures(other, "203.0.113.9", 1) == [429]
    finally:
        server.stop()
