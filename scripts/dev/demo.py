"""`make demo`: the extension's whole story against a fake Stripe (localstripe),
on loopback, printing each step. Also the end-to-end test's script."""

from __future__ import annotations

import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.dev.loadgen import start_server
from scripts.dev.localstripe_server import create_plan, localstripe, register_webhook

USER = f"user_{int(time.time())}_demo0user1"
SECRET = "whsec_demo_" + "0" * 24
Say = Callable[[str], None]


@dataclass
class Answer:
    status: int
    body: dict[str, Any]


def call(
    base: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - always http://127.0.0.1
        base + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            return Answer(response.status, json.loads(response.read() or b"{}"))
    except urllib.error.HTTPError as error:
        return Answer(error.code, json.loads(error.read() or b"{}"))


def story(
    base: str, say: Say = print, user_id: str = USER, timeout: float = 20.0
) -> dict[str, Answer]:
    """Register, subscribe, wait for Stripe's webhooks to make the user premium,
    cancel, and see it end. Returns every answer by step name."""
    seen: dict[str, Answer] = {}

    def step(name: str, answer: Answer) -> Answer:
        seen[name] = answer
        say(f"{name:<24} {answer.status} {json.dumps(answer.body)}")
        return answer

    registered = step("register", call(base, "POST", "/api/users", {"user_id": user_id}))
    auth = {"X-User-ID": user_id, "Authorization": f"Bearer {registered.body['token']}"}
    step("get-subscription", call(base, "GET", "/api/stripe/get-subscription", None, auth))
    step(
        "create-subscription",
        call(
            base,
            "POST",
            "/api/stripe/create-subscription",
            {
                "user_id": user_id,
                "price_id": "price_lisa_premium_monthly",
                "billing_cycle": "month",
                "return_url": "chrome-extension://demo/popup.html",
            },
            auth,
        ),
    )
    say("... waiting for the webhooks Stripe (localstripe) delivers")
    step(
        "get-subscription (active)",
        _until(
            lambda: call(base, "GET", "/api/stripe/get-subscription", None, auth),
            lambda a: a.body.get("active") is True,
            timeout,
        ),
    )
    step("verify-subscription", call(base, "POST", "/api/stripe/verify-subscription", {}, auth))
    step(
        "update-payment-method",
        call(
            base,
            "POST",
            "/api/stripe/update-payment-method",
            {"payment_method_id": "pm_card_visa"},
            auth,
        ),
    )
    step(
        "cancel-subscription",
        call(base, "POST", "/api/stripe/cancel-subscription", {"immediate": True}, auth),
    )
    say("... waiting for customer.subscription.deleted")
    step(
        "get-subscription (ended)",
        _until(
            lambda: call(base, "GET", "/api/stripe/get-subscription", None, auth),
            lambda a: a.body.get("active") is False,
            timeout,
        ),
    )
    return seen


def _until(fetch: Callable[[], Answer], done: Callable[[Answer], bool], timeout: float) -> Answer:
    deadline = time.monotonic() + timeout
    while not done(answer := fetch()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return answer


@contextmanager
def stack(database_url: str, workdir: Path) -> Iterator[str]:
    """localstripe with our plan, and the ledger pointed at it: yields the ledger's URL."""
    with localstripe(workdir / "localstripe") as fake:
        create_plan(
            fake.url, "price_lisa_premium_monthly", 999, "month", "LISA Core Premium - Monthly"
        )
        server = start_server(
            database_url,
            env_extra={
                "STRIPE_SECRET_KEY": "sk_test_demo",
                "STRIPE_API_BASE": fake.url,
                "STRIPE_PAYMENT_BEHAVIOR": "allow_incomplete",
                "STRIPE_TEST_PAYMENT_METHOD": "pm_card_visa",
                "LEDGER_PROCESSOR": "inline",
                "LEDGER_PROCESSOR_INTERVAL": "0.1",
            },
            secret=SECRET,
            log_path=workdir / "ledger.log",
        )
        try:
            register_webhook(fake.url, f"{server.base_url}/webhooks/stripe", SECRET)
            yield server.base_url
        finally:
            server.stop()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="ledger-demo-") as tmp:
        workdir = Path(tmp)
        print(f"localstripe and the ledger (SQLite in {workdir}) on 127.0.0.1")
        with stack(f"sqlite:///{workdir}/ledger.db", workdir) as base:
            seen = story(base)
    ok = (
        seen["get-subscription (active)"].body.get("active") is True
        and seen["get-subscription (ended)"].body.get("active") is False
    )
    print("the story holds" if ok else "the story did NOT hold")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
