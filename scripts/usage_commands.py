"""`ledger usage report`: overage of ended billing periods, to Stripe, once."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from api.bootstrap import Parts
from ledger.usage_reporting import Line, UsageReporter

LONG_RUN = 20  # lines: show a progress bar from here on


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    usage = sub.add_parser("usage", help="usage metering")
    usub = usage.add_subparsers(dest="usage_command", required=True)
    report = usub.add_parser("report", help="report the overage of ended periods to Stripe")
    report.add_argument(
        "--period-end",
        metavar="DATE",
        help="periods ended on or before this day (YYYY-MM-DD, UTC); default: now",
    )
    report.add_argument("--dry-run", action="store_true", help="compute and show; call nothing")
    report.add_argument("--json", action="store_true", help="one JSON object per line")


def run(args: argparse.Namespace, parts: Parts) -> int:
    now = time.time()
    before = now
    if args.period_end:
        try:
            day = datetime.strptime(args.period_end, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            print("--period-end: expected YYYY-MM-DD", file=sys.stderr)
            return 2
        before = min(now, day.timestamp() + 86_400)
    read = parts.read
    read.catchup.run_once()  # the totals as far as the log goes
    reporter = UsageReporter(parts.ledger, parts.catalog, parts.gateway)
    lines = reporter.lines(read.ended_usage(before))
    if parts.gateway is None and not args.dry_run and any(line.overage for line in lines):
        print("STRIPE_SECRET_KEY is not set: nothing can be reported", file=sys.stderr)
        return 2
    console = Console(stderr=True)
    done: list[Line] = []
    if len(lines) >= LONG_RUN and not args.json:
        with Progress(
            TextColumn("reporting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=console,
        ) as bar:  # fmt: skip
            task = bar.add_task("report", total=len(lines))
            for line in reporter.report(lines, dry_run=args.dry_run):
                done.append(line)
                bar.advance(task)
    else:
        for line in reporter.report(lines, dry_run=args.dry_run):
            done.append(line)
            if args.json:
                print(json.dumps(line.__dict__), flush=True)
    if not args.json:
        _table(done)
    return 1 if any(line.status.startswith("failed") for line in done) else 0


def _table(lines: list[Line]) -> None:
    table = Table(title="usage overage of ended periods")
    for column in ("user", "metric", "period", "used", "included", "overage", "amount", "status"):
        table.add_column(
            column,
            justify="right" if column in ("used", "included", "overage", "amount") else "left",
        )
    for line in lines:
        start = datetime.fromtimestamp(line.period_start, UTC).strftime("%Y-%m-%d")
        end = datetime.fromtimestamp(line.period_end, UTC).strftime("%Y-%m-%d")
        table.add_row(
            line.user_id, line.metric, f"{start}..{end}", f"{line.used:,}", f"{line.included:,}",
            f"{line.overage:,}", f"{line.amount / 100:,.2f} {line.currency.upper()}", line.status,
        )  # fmt: skip
    Console(width=160).print(table)
