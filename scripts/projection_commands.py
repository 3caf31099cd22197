"""`ledger projections run|rebuild|status` and `ledger replay`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from api.bootstrap import Parts
from ledger.plans import PlansFileError
from projections.as_of import parse_instant, replay_user
from projections.read_side import ReadSide
from projections.rebuild import rebuild_all


def run(args: argparse.Namespace, parts: Parts) -> int:
    """The read side of `parts` holds the projections named on the command line."""
    try:
        read = parts.read
    except (KeyError, PlansFileError) as exc:
        print(str(exc).strip("'\""), file=sys.stderr)
        return 2
    if args.projections_command == "run":
        if parts.outbox is not None:  # LEDGER_SMTP_URL: mail what notifications tells
            parts.outbox.start()
        read.follower.run_in_foreground()
    elif args.projections_command == "rebuild":
        _rebuild(read)
    else:
        _status(read)
    return 0


def _rebuild(read: ReadSide) -> None:
    """All the named projections in one pass over the log, with a progress bar:
    log position reached, log events read, events/s, time left."""
    console = Console(stderr=True)
    head = read.catchup.head()
    names = ", ".join(p.name for p in read.projections)
    started, events = time.monotonic(), 0
    with Progress(
        TextColumn(f"[bold]{names}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[events]:,} events, {task.fields[rate]:,.0f}/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(names, total=head, events=0, rate=0.0)

        def advance(n: int, position: int) -> None:
            nonlocal events
            events += n
            rate = events / max(time.monotonic() - started, 1e-6)
            bar.update(task, completed=min(position, head), events=events, rate=rate)

        applied = rebuild_all(read.catchup, read.projections, progress=advance)
        bar.update(task, completed=head)
    elapsed = time.monotonic() - started
    for projection in read.projections:
        console.print(f"{projection.name}: {applied[projection.name]:,} events, swapped in")
    console.print(
        f"rebuilt: {events:,} log events in {elapsed:.1f} s "
        f"({events / max(elapsed, 1e-6):,.0f} events/s)"
    )


def _status(read: ReadSide) -> None:
    table = Table("projection", "generation", "position", "head", "lag")
    for row in read.positions():
        table.add_row(
            row["name"],
            str(row["generation"]),
            str(row["position"]),
            str(row["head"]),
            str(row["lag"]),
        )
    Console().print(table)


def replay(args: argparse.Namespace, parts: Parts) -> int:
    try:
        moment = parse_instant(args.as_of) if args.as_of else datetime.now(UTC)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    answer = replay_user(parts.ledger, parts.catalog, args.user, moment, parts.read.owners)
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
        return 0
    sub = answer["subscription"]
    print(f"{args.user} as of {answer['as_of']} (log position {answer['position']})")
    if "id" in sub:
        print(
            f"  subscription {sub['id']}: {sub['status']}, active={sub['active']}, "
            f"tier={sub['tier']}, plan={sub['plan_name']} "
            f"({sub['amount']} {sub['currency']}/{sub['interval']}), "
            f"cancel_at_period_end={sub['cancel_at_period_end']}"
        )
    else:
        print(f"  no subscription; tier={sub['tier']}")
    print(f"  entitlements: {', '.join(answer['entitlements']['features']) or 'none'}")
    for invoice in answer["invoices"]:
        print(
            f"  invoice {invoice['stripe_invoice_id']}: {invoice['status']}, "
            f"{invoice['amount_due']} {invoice['currency']}"
        )
    return 0
