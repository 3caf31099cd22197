"""`ledger projections run|rebuild|status` and `ledger replay`."""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import queue
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

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
from ledger import collector
from ledger.config import load_settings
from ledger.plans import PlansFileError
from projections.as_of import parse_instant, replay_user
from projections.base import SqlProjection
from projections.read_side import ReadSide
from projections.rebuild import rebuild_all, share


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
        woken = parts.wake_on_log(read.follower.wake)
        read.follower.run_in_foreground(head=None if woken else read.catchup.head)
    elif args.projections_command == "rebuild":
        return _rebuild(read, args.jobs)
    else:
        _status(read)
    return 0


def _rebuild(read: ReadSide, jobs: int) -> int:
    """The named projections (all by default) in one pass over the log each, in up
    to `jobs` processes that share them out by the events they will apply, with
    one progress bar: the log position every process has reached, log events
    read, events/s, time left."""
    console = Console(stderr=True)
    head = read.catchup.head()
    groups = [list(read.projections)]
    if jobs > 1 and len(read.projections) > 1:
        groups = share(read.projections, read.catchup.ledger.recorder.topic_counts(), jobs)
    names = ", ".join(p.name for p in read.projections)
    started, events = time.monotonic(), 0
    reached = [0] * len(groups)
    forked = read.store.is_postgres
    workers = _start(groups, forked) if len(groups) > 1 else None  # before the bar's thread
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

        def advance(group: int, n: int, position: int) -> None:
            nonlocal events
            events += n
            reached[group] = position
            rate = events / max(time.monotonic() - started, 1e-6)
            bar.update(task, completed=min(min(reached), head), events=events, rate=rate)

        if workers is None:
            applied = rebuild_all(
                read.catchup, read.projections, progress=lambda n, at: advance(0, n, at)
            )
        else:
            applied, failures = _follow(workers, groups, advance)
            if failures:
                for failure in failures:
                    console.print(f"[red]rebuild failed[/red]: {failure}")
                console.print("the projections of the other processes were swapped in")
                return 1
        bar.update(task, completed=head)
    elapsed = time.monotonic() - started
    for projection in read.projections:
        console.print(f"{projection.name}: {applied[projection.name]:,} events, swapped in")
    shared = f"; {len(groups)} processes read {events:,}" if len(groups) > 1 else ""
    console.print(
        f"rebuilt: {head:,} log events in {elapsed:.1f} s "
        f"({head / max(elapsed, 1e-6):,.0f} events/s{shared})"
    )
    return 0


Workers = tuple[list[Any], Any]  # the processes, and the queue of their reports


def _start(groups: Sequence[Sequence[SqlProjection]], forked: bool) -> Workers:
    """A process for each group, which reports its progress and its end on a queue.

    On PostgreSQL (`forked`) each is forked: it starts with the modules this one
    loaded, where a spawned one imports them again (0.45 s before it reads the
    log). It opens connections of its own and never uses this one's; it is
    started before the progress bar's thread, so no thread of this process can
    hold a lock the child will need. On SQLite each is spawned: SQLite's locks
    on a file are kept per process, and a child forked from a process with the
    file open would start with a copy of them."""
    context = multiprocessing.get_context("fork" if forked else "spawn")
    reports = context.Queue()
    workers = [
        context.Process(target=_rebuild_group, args=(i, [p.name for p in g], reports))
        for i, g in enumerate(groups)
    ]
    for worker in workers:
        worker.start()
    return workers, reports


def _follow(
    started: Workers,
    groups: Sequence[Sequence[SqlProjection]],
    advance: Callable[[int, int, int], None],
) -> tuple[dict[str, int], list[str]]:
    """The processes' reports until each has ended: the events applied per
    projection, and what failed."""
    workers, reports = started
    applied: dict[str, int] = {}
    failures: list[str] = []
    waiting = set(range(len(workers)))
    while waiting:
        try:
            kind, group, *rest = reports.get(timeout=1.0)
        except queue.Empty:
            for i in list(waiting):  # died without a word (killed, out of memory)
                if workers[i].exitcode not in (None, 0):
                    held = ", ".join(p.name for p in groups[i])
                    failures.append(f"{held}: the process exited with {workers[i].exitcode}")
                    waiting.discard(i)
            continue
        if kind == "progress":
            advance(group, *rest)
        else:
            waiting.discard(group)
            if kind == "done":
                applied.update(rest[0])
            else:
                failures.append(rest[0])
    for worker in workers:
        worker.join()
    return applied, failures


def _rebuild_group(group: int, names: list[str], reports: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """A rebuilding process: the store and plans from the environment, as the
    command's own (and its collector's threshold, which a spawned process did not
    set: it runs no `main`); its log lines (what it folded, how long) go to
    stderr too."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    collector.tune()
    try:
        parts = Parts(load_settings(announce=False), projections=names)
        try:
            read = parts.read
            applied = rebuild_all(
                read.catchup,
                read.projections,
                progress=lambda n, at: reports.put(("progress", group, n, at)),
            )
        finally:
            parts.close()
    except BaseException as exc:
        reports.put(("failed", group, f"{', '.join(names)}: {type(exc).__name__}: {exc}"))
        raise SystemExit(1) from None
    reports.put(("done", group, applied))


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
