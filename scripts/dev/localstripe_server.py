"""Run localstripe (a fake Stripe API for tests and the demo) on 127.0.0.1.

Why this wrapper exists: localstripe's own CLI only has ``--port`` and
``--from-scratch``; it listens on every interface (``[::]``) and always keeps its
data in ``/tmp/localstripe.pickle``, so two instances overwrite each other's data.
This wrapper binds 127.0.0.1 only and keeps the pickle file in ``--data-dir``:

    python -m scripts.dev.localstripe_server --port 8420 --data-dir var/localstripe [--from-scratch]

It prints ``======== Running on http://127.0.0.1:PORT ========`` once it listens.
Without ``--from-scratch`` it reloads the data an earlier run saved in ``--data-dir``.

From Python (tests, ``make demo``), run it as a subprocess on a free port:

    with localstripe(tmp_dir) as fake:            # fake.url == "http://127.0.0.1:PORT"
        create_plan(fake.url, "price_lisa_premium_monthly", 999, "month", "Premium")
        register_webhook(fake.url, "http://127.0.0.1:8000/webhooks/stripe", "whsec_x")

localstripe speaks the 2017 API, ignores Idempotency-Key and sends webhooks about
1 s after the call, in no fixed order, without retries (docs/localstripe-notes.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import pickle
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
# localstripe accepts any key that starts with "sk_" and is longer than 5 characters.
TEST_API_KEY = "sk_test_localstripe"
START_TIMEOUT_SECONDS = 15.0


# --- the server (this process) ------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.dev.localstripe_server", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--from-scratch", action="store_true", help="ignore saved data")
    parser.add_argument(
        "--plans", action="store_true", help="create a plan for every price of the plans file"
    )
    parser.add_argument("--webhook", metavar="URL", help="register our endpoint for its events")
    parser.add_argument("--webhook-secret", default="", help="the secret it signs them with")
    args = parser.parse_args(argv)
    if args.plans or args.webhook:
        threading.Thread(target=_set_up, args=(args,), daemon=True).start()

    from aiohttp import web
    from localstripe import resources, server

    args.data_dir.mkdir(parents=True, exist_ok=True)
    data_file = args.data_dir / "localstripe.pickle"

    def load(store: resources.Store) -> None:
        try:
            with data_file.open("rb") as f:
                saved = pickle.load(f)  # noqa: S301 - our own file, written by dump()
        except FileNotFoundError:
            return
        store.clear()
        store.update(saved)

    def dump(store: resources.Store) -> None:  # localstripe calls it after every write
        with data_file.open("wb") as f:
            pickle.dump(store, f, protocol=pickle.HIGHEST_PROTOCOL)

    resources.Store.try_load_from_disk = load
    resources.Store.dump_to_disk = dump
    if not args.from_scratch:
        resources.store.try_load_from_disk()

    access_log = logging.getLogger("aiohttp.access")
    access_log.setLevel(logging.INFO)
    access_log.addHandler(logging.StreamHandler())
    web.run_app(
        server.app,
        host=HOST,
        port=args.port,
        access_log=access_log,
        print=lambda *a: print(*a, flush=True),
    )


def _set_up(args: argparse.Namespace) -> None:
    """Once the server listens: the plans file's prices as plans, and our webhook."""
    from ledger.plans import load_catalog

    url = f"http://{HOST}:{args.port}"
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, args.port), 0.5):
            break
        time.sleep(0.1)
    if args.plans:
        for plan in load_catalog().plans:
            for price in plan.prices:
                create_plan(url, price.id, price.amount, price.interval, price.name)
        print("plans created for every price of the plans file", flush=True)
    if args.webhook:
        register_webhook(url, args.webhook, args.webhook_secret)
        print(f"webhook registered: {args.webhook}", flush=True)


# --- running it from Python -----------------------------------------------------------


@dataclass
class LocalStripe:
    url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen[bytes]
    log_path: Path  # the server's output

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start(data_dir: Path, timeout: float = START_TIMEOUT_SECONDS) -> LocalStripe:
    """Start the server as a subprocess (this interpreter) on a free port, with fresh
    data in `data_dir`, and wait until it answers HTTP; a new port if one was taken."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    last_log = ""
    for attempt in range(3):
        port = free_port()
        log_path = data_dir / f"localstripe-{attempt}.log"
        command = [sys.executable, "-m", "scripts.dev.localstripe_server", "--port", str(port)]
        command += ["--data-dir", str(data_dir), "--from-scratch"]
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        server = LocalStripe(f"http://{HOST}:{port}", process, log_path)
        if _answers_within(server, timeout):
            return server
        server.stop()
        last_log = server.log()[-2000:]
    raise RuntimeError(f"localstripe did not start on {HOST}; its last output:\n{last_log}")


def _answers_within(server: LocalStripe, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False  # exited: e.g. the port was taken in the meantime
        try:
            urllib.request.urlopen(server.url + "/v1/customers", timeout=1)  # noqa: S310
            return True
        except urllib.error.HTTPError:
            return True  # 401 without a key: it is up
        except OSError:
            time.sleep(0.05)
    return False


@contextlib.contextmanager
def localstripe(data_dir: Path) -> Iterator[LocalStripe]:
    """A running localstripe for the duration of the block; always stopped after."""
    server = start(data_dir)
    try:
        yield server
    finally:
        server.stop()


def register_webhook(
    localstripe_url: str,
    endpoint_url: str,
    secret: str,
    *,
    webhook_id: str = "ledger",
    events: list[str] | None = None,
) -> None:
    """POST /_config/webhooks/<id>: localstripe then sends every event (or `events`)
    to `endpoint_url`, signed with `secret`. The same id again replaces it."""
    body: dict[str, object] = {"url": endpoint_url, "secret": secret}
    if events is not None:
        body["events"] = events
    request = urllib.request.Request(  # noqa: S310 - a loopback http URL
        f"{localstripe_url}/_config/webhooks/{urllib.parse.quote(webhook_id)}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5):  # noqa: S310 - raises unless 2xx
        pass


def create_plan(
    localstripe_url: str,
    plan_id: str,
    amount: int,
    interval: str,
    product_name: str,
    *,
    currency: str = "usd",
) -> str:
    """Create a product and a plan whose id is OUR price id: localstripe has no Prices
    API, and the gateway in localstripe mode subscribes to a plan of that id."""
    product = _create(localstripe_url, "products", {"name": product_name})
    plan = _create(
        localstripe_url,
        "plans",
        {
            "id": plan_id,
            "product": product["id"],
            "amount": amount,
            "currency": currency,
            "interval": interval,
        },
    )
    return plan["id"]


def _create(localstripe_url: str, resource: str, params: dict[str, object]) -> dict[str, Any]:
    """POST /v1/<resource>, form-encoded, as Stripe's clients send it; once (localstripe
    has no idempotency: a retry could duplicate)."""
    request = urllib.request.Request(  # noqa: S310 - a loopback http URL
        f"{localstripe_url}/v1/{resource}",
        data=urllib.parse.urlencode(params).encode(),
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - raises unless 2xx
        return json.loads(answer.read())


if __name__ == "__main__":
    main()
