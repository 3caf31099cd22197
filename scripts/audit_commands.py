"""`ledger events export|import`, `ledger history --user U`: the auditors' commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.bootstrap import Parts
from projections.as_of import parse_instant
from projections.history import Cause, History, HistoryEvent, import_lines
from projections.seal import Seal


def add_commands(sub: Any) -> None:
    events = sub.add_parser("events", help="export the log as JSON Lines, or import an export")
    esub = events.add_subparsers(dest="events_command", required=True)
    export = esub.add_parser("export", help="JSON Lines on stdout, a progress bar on stderr")
    export.add_argument("--user", help="only this user's events")
    export.add_argument("--since", help="ISO 8601 with a zone: events at or after it")
    export.add_argument("--until", help="ISO 8601 with a zone: events at or before it")
    imp = esub.add_parser("import", help="append an export to an empty store (stdin or FILE)")
    imp.add_argument("file", nargs="?", default="-")
    history = sub.add_parser("history", help="a user's story: a readable table of its events")
    history.add_argument("--user", required=True)
    erase = sub.add_parser("erase", help="erase a user's personal data (deletes its keys)")
    erase.add_argument("--user", required=True)
    verify = sub.add_parser("verify", help="seal what is not sealed yet, then check log vs seal")
    verify.add_argument(
        "--recorded", metavar="POSITION:HASH", help="a seal head recorded earlier, to check too"
    )


def history_of(parts: Parts) -> History:
    return History(parts.ledger, parts.read.owners)


def run(args: argparse.Namespace, parts: Parts) -> int:
    if args.command == "history":
        return _history(history_of(parts), args.user)
    if args.command == "erase":
        erased = history_of(parts).erase(args.user)
        customers = ", ".join(erased.stripe_customer_ids) or "no Stripe customer"
        print(f"{args.user}: personal data erased ({customers})")
        return 0
    if args.command == "verify":
        return _verify(parts.read.seal, args.recorded)
    if args.events_command == "import":
        stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
        with stream:
            count = import_lines(parts.ledger, stream)
        print(f"imported {count:,} events", file=sys.stderr)
        return 0
    try:
        since, until = (parse_instant(t) if t else None for t in (args.since, args.until))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    return _export(history_of(parts), args.user, since, until)


def progress_bar(label: str, total: int) -> tuple[Progress, Callable[[int], None]]:
    """A bar on stderr: log position reached of `total`."""
    bar = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
    task = bar.add_task(label, total=max(total, 1))
    return bar, lambda position: bar.update(task, completed=min(position, total))


def _export(
    history: History, user: str | None, since: datetime | None, until: datetime | None
) -> int:
    bar, advance = progress_bar("export", history.head())
    out = sys.stdout
    with bar:
        for n, line in enumerate(history.export(user, since, until)):
            out.write(line.model_dump_json() + "\n")
            if n % 1000 == 0:
                advance(line.position)
        advance(history.head())
    out.flush()
    return 0


def _history(history: History, user: str) -> int:
    table = Table("position", "time (UTC)", "what happened", "cause", "status", title=user)
    after = 0
    while True:
        page = history.page(user, after, 500)
        for event in page.data:
            table.add_row(
                str(event.position),
                event.time.strftime("%Y-%m-%d %H:%M:%S"),
                f"{event.aggregate}.{event.type}{_detail(event)}",
                _cause(event.cause),
                str(event.data.get("status") or event.data.get("stripe_status") or ""),
            )
        if page.next is None:
            break
        after = page.next
    Console(width=160).print(table)
    return 0


def _cause(cause: Cause) -> str:
    """The Stripe event; or the API call's request id ("api req_..."), when it was
    recorded; or what kind of cause."""
    if cause.stripe_event_id:
        return cause.stripe_event_id
    if cause.request_id:
        return f"{cause.kind} {cause.request_id}"
    return cause.action or cause.kind


def _detail(event: HistoryEvent) -> str:
    """A few words on what the event says, beyond its name."""
    data = event.data
    words = [
        str(data[key])
        for key in ("stripe_invoice_id", "stripe_subscription_id", "stripe_customer_id", "user_id")
        if data.get(key)
    ][:1]
    for amount in ("amount_paid", "amount_due"):
        if data.get(amount) is not None and data.get("currency"):
            words.append(f"{data[amount]} {data['currency']}")
            break
    return "".join(f" {w}" for w in words)


def _verify(seal: Seal, recorded_text: str | None) -> int:
    recorded = None
    if recorded_text:
        position, _, digest = recorded_text.partition(":")
        if not position.isdigit() or len(digest) != 64:
            print("--recorded takes POSITION:HASH (the hash in hex)", file=sys.stderr)
            return 2
        recorded = (int(position), digest.lower())
    sealed = seal.run_once()
    print(f"sealed {sealed:,} new events", file=sys.stderr)
    bar, advance = progress_bar("verify", seal.position())
    with bar:
        verdict = seal.verify(advance, recorded)
        advance(seal.position())
    print(verdict)
    return 0 if verdict.ok else 1
