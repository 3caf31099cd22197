"""`ledger backfill` and `ledger reconcile`: catching up with Stripe."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from api.bootstrap import Parts
from ledger.accounts import StripeNotConfigured
from ledger.backfill import UnhandledTypes
from ledger.intake import StoreUnavailable
from ledger.loop import WakeableLoop
from ledger.reconcile import Report
from ledger.stripe.gateway import StripeError

log = logging.getLogger("ledger.reconcile")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def add_parsers(sub: Any) -> None:
    backfill = sub.add_parser("backfill", help="record the Stripe events the webhook missed")
    backfill.add_argument(
        "--since", help="a date or time (ISO 8601, UTC unless zoned); default and oldest: 30 days"
    )
    backfill.add_argument("--types", nargs="+", metavar="TYPE", help="default: every handled type")
    reconcile = sub.add_parser("reconcile", help="compare Stripe's objects with the ledger's")
    reconcile.add_argument(
        "--fix", action="store_true", help="record Stripe's state where it differs"
    )
    reconcile.add_argument("--json", action="store_true")
    reconcile.add_argument("--exit-code", action="store_true", help="exit 1 when drift was found")
    reconcile.add_argument(
        "--every", type=duration, help="run again every e.g. 1h, 30m (until stopped)"
    )


def duration(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not match or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration such as 90s, 30m, 1h or 1d")
    return float(match[1]) * _UNITS[match[2]]


def parse_since(text: str | None) -> int | None:
    if text is None:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def backfill(args: argparse.Namespace, parts: Parts) -> int:
    try:
        since = parse_since(args.since)
        service = parts.backfill
        console = Console(stderr=True)
        with _spinner(console) as bar:
            task = bar.add_task("backfill", counts="listed 0, new 0")
            totals = [0, 0]

            def page(listed: int, new: int) -> None:
                totals[0] += listed
                totals[1] += new
                bar.update(task, counts=f"listed {totals[0]:,}, new {totals[1]:,}")

            summary = service.run(since, args.types, on_page=page)
    except (ValueError, UnhandledTypes, StripeNotConfigured) as exc:  # a bad date, ...
        print(f"ledger backfill: {exc}", file=sys.stderr)
        return 2
    except (StripeError, StoreUnavailable) as exc:
        print(f"ledger backfill: {exc} (run it again: what was recorded stays)", file=sys.stderr)
        return 2
    if summary.clamped:
        print(f"warning: Stripe keeps events for 30 days; started at {_iso(summary.since)}")
    print(
        f"since {_iso(summary.since)}: listed {summary.listed}, new {summary.new}, "
        f"duplicate {summary.duplicate}"
    )
    return 0


def reconcile(args: argparse.Namespace, parts: Parts) -> int:
    try:
        _ = parts.reconciler  # refuses without STRIPE_SECRET_KEY
    except StripeNotConfigured as exc:
        print(f"ledger reconcile: {exc}", file=sys.stderr)
        return 2
    if args.every is not None:
        loop = WakeableLoop("reconcile", lambda: _reconcile_once(args, parts), args.every)
        loop.wake()  # the first run now, then every interval
        loop.run_in_foreground()
        return 0
    try:
        report = _reconcile_once(args, parts)
    except (StripeError, StoreUnavailable) as exc:
        print(f"ledger reconcile: {exc}", file=sys.stderr)
        return 2
    return 1 if args.exit_code and report.drift else 0


def _reconcile_once(args: argparse.Namespace, parts: Parts) -> Report:
    console = Console(stderr=True)
    with _spinner(console) as bar:
        task = bar.add_task("reconcile", counts="listed 0 customers, 0 subscriptions")
        listed = {"customers": 0, "subscriptions": 0}

        def page(kind: str, n: int) -> None:
            listed[kind] += n
            bar.update(
                task,
                counts=f"listed {listed['customers']:,} customers, "
                f"{listed['subscriptions']:,} subscriptions",
            )

        report = parts.reconciler.run(fix=args.fix, on_page=page)
    if args.json:
        print(json.dumps(report.as_json(), indent=2, default=str))
    else:
        _print_report(report, fixing=args.fix)
    sys.stdout.flush()
    return report


def _print_report(report: Report, *, fixing: bool) -> None:
    print(
        f"reconcile {report.run_id} at {_iso(report.fetched_at)}: listed "
        f"{report.customers} customers, {report.subscriptions} subscriptions at Stripe"
    )
    if not report.drift:
        print("no drift")
        return
    rows = [("OBJECT", "FIELD", "LEDGER", "STRIPE")]
    rows += [(d.object_id, d.field, _shown(d.ledger), _shown(d.stripe)) for d in report.drift]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]  # ids are never cut
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r[:3], widths, strict=True)) + "  " + r[3])
    by_field = ", ".join(f"{f} {n}" for f, n in sorted(report.by_field().items()))
    print(f"{len(report.drift)} differences ({by_field})")
    if fixing:
        print(f"fixed {len(report.fixed)} objects: {' '.join(report.fixed) or '-'}")
        for object_id, why in sorted(report.not_fixed.items()):
            print(f"not fixed {object_id}: {why}")


def _shown(value: Any) -> str:
    return "-" if value is None else str(value)


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spinner(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
