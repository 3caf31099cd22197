"""The `ledger` command: serve, process, and operators' tools."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

from api.bootstrap import Parts
from ledger import collector
from ledger.application import ReceiptNotFound
from ledger.config import load_settings
from ledger.domain.receipt import Receipt
from scripts import audit_commands, projection_commands, reconcile_commands, usage_commands
from scripts.background import Background, yield_to_the_api


def main(argv: Sequence[str] | None = None) -> int:
    yield_to_the_api()  # only in the processes `ledger serve` starts
    parser = argparse.ArgumentParser(prog="ledger", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API under uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--no-access-log", action="store_true")
    serve.add_argument(
        "--workers", type=int, default=1, help="uvicorn worker processes (each runs the whole app)"
    )
    serve.add_argument(
        "--proxy-headers",
        action="store_true",
        help="behind a proxy: take the client's address from X-Forwarded-For (and the scheme "
        "from X-Forwarded-Proto), only from the addresses --forwarded-allow-ips names",
    )
    serve.add_argument(
        "--forwarded-allow-ips",
        default="127.0.0.1",
        metavar="IPS",
        help="comma-separated proxy addresses or networks trusted with --proxy-headers "
        "(default 127.0.0.1; '*' trusts every sender: only when nothing else can connect)",
    )

    sub.add_parser("process", help="run stage two (receipts -> domain events) on its own")

    receipts = sub.add_parser("receipts", help="inspect and retry receipts")
    rsub = receipts.add_subparsers(dest="receipts_command", required=True)
    dead = rsub.add_parser("dead", help="list receipts whose processing gave up")
    dead.add_argument("--json", action="store_true")
    retry = rsub.add_parser("retry", help="retry a failed or dead receipt after a fix")
    retry.add_argument("event_id")

    projections = sub.add_parser("projections", help="run, rebuild and inspect projections")
    psub = projections.add_subparsers(dest="projections_command", required=True)
    run = psub.add_parser("run", help="keep projections up to date (a process of its own)")
    run.add_argument("names", nargs="*", metavar="NAME")
    rebuild = psub.add_parser("rebuild", help="rebuild from position 0, then swap in")
    rebuild.add_argument("names", nargs="*", metavar="NAME")
    rebuild.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="rebuild in up to N processes, sharing the projections out by the events each "
        "applies (default: the number of CPUs)",
    )
    psub.add_parser("status", help="each projection's position, the log's head, the lag")

    replay = sub.add_parser("replay", help="a user's billing as the ledger knew it at a time")
    replay.add_argument("--user", required=True)
    replay.add_argument(
        "--as-of", help="ISO 8601 with a zone, e.g. 2026-01-31T12:00:00Z (default: now)"
    )
    replay.add_argument("--json", action="store_true")

    audit_commands.add_commands(sub)
    usage_commands.add_parser(sub)
    reconcile_commands.add_parsers(sub)

    args = parser.parse_args(argv)
    collector.tune()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "serve":
        return _serve(args)
    parts = Parts(load_settings(announce=False), projections=getattr(args, "names", None) or None)
    try:
        if args.command == "process":
            recorder, processor = parts.ledger.recorder, parts.processor
            woken = parts.wake_on_log(processor.wake)
            processor.run_in_foreground(
                head=None if woken else lambda: recorder.max_notification_id() or 0
            )
            return 0
        if args.command == "projections":
            return projection_commands.run(args, parts)
        if args.command == "replay":
            return projection_commands.replay(args, parts)
        if args.command in ("events", "history", "verify", "erase"):
            return audit_commands.run(args, parts)
        if args.command == "usage":
            return usage_commands.run(args, parts)
        if args.command == "backfill":
            return reconcile_commands.backfill(args, parts)
        if args.command == "reconcile":
            return reconcile_commands.reconcile(args, parts)
        ledger = parts.ledger
        if args.receipts_command == "dead":
            return _print_dead(ledger.dead_receipts(), as_json=args.json)
        try:
            receipt = ledger.retry(args.event_id)
        except ReceiptNotFound:
            print(f"no receipt for {args.event_id}", file=sys.stderr)
            return 2
        print(f"{receipt.stripe_event_id} {receipt.event_type}: {receipt.outcome}")
        return 0 if receipt.is_settled else 1
    finally:
        parts.close()


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    # Create the tables (and check the plans file) once, before the workers start:
    # several workers creating them at the same moment would collide. The settings
    # create and show the development secrets once.
    parts = Parts(load_settings())
    try:
        _ = parts.read
    finally:
        parts.close()
    background = Background.of(parts.settings.processor, parts.settings.projections)
    background.start()
    # uvicorn sends the signal that stopped it again once it has shut down: with the
    # default handlers that would end this process before it stops its own.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit)
    try:
        uvicorn.run(
            "api.app:app",
            host=args.host,
            port=args.port,
            access_log=not args.no_access_log,
            log_level="info",
            workers=args.workers,
            # Notification streams never end by themselves: after this, a stop cancels
            # them (their clients resume by Last-Event-ID) instead of waiting forever.
            timeout_graceful_shutdown=3,
            proxy_headers=args.proxy_headers,
            forwarded_allow_ips=args.forwarded_allow_ips,
        )
    finally:
        background.stop()
    return 0


def _exit(*_: object) -> None:
    raise SystemExit(0)


def _print_dead(receipts: list[Receipt], *, as_json: bool) -> int:
    rows = [
        {
            "event_id": r.stripe_event_id,
            "type": r.event_type,
            "attempts": r.attempts,
            "error": r.last_error,
        }
        for r in receipts
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no dead receipts")
    for row in rows if not as_json else []:
        print(f"{row['event_id']}  {row['type']}  attempts={row['attempts']}  {row['error']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
