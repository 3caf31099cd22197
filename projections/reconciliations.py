"""Each `ledger reconcile` run: when, what it compared, the drift it found by
field, what it fixed. The API reads it at scrape time for /metrics (the command
runs in a process of its own)."""

from __future__ import annotations

from functools import singledispatchmethod
from typing import Any

from ledger.domain.reconciliation import Reconciliation
from projections.base import SqlProjection, Writer
from projections.store import Cursor


class ReconciliationsProjection(SqlProjection):
    name = "reconciliations"
    tables = {
        "reconcile_runs": (
            "run_id TEXT PRIMARY KEY, fetched_at BIGINT NOT NULL, finished_at BIGINT NOT NULL, "
            "subscriptions INTEGER NOT NULL, customers INTEGER NOT NULL, "
            "drift INTEGER NOT NULL, fixed INTEGER NOT NULL, fixing INTEGER NOT NULL, "
            "position BIGINT NOT NULL"
        ),
        "reconcile_drift": (
            "run_id TEXT NOT NULL, field TEXT NOT NULL, found INTEGER NOT NULL, "
            "PRIMARY KEY (run_id, field)"
        ),
    }

    @singledispatchmethod
    def apply(self, event: Any, w: Writer) -> None:
        """Events of no interest change nothing."""

    @apply.register
    def _(self, e: Reconciliation.Ran, w: Writer) -> None:
        w.execute(
            "INSERT INTO {reconcile_runs} (run_id, fetched_at, finished_at, subscriptions, "
            "customers, drift, fixed, fixing, position) VALUES (:run, :fetched_at, "
            ":finished_at, :subscriptions, :customers, :drift, :fixed, :fixing, :position)",
            run=e.run_id,
            fetched_at=e.fetched_at,
            finished_at=e.finished_at,
            subscriptions=e.subscriptions,
            customers=e.customers,
            drift=sum(e.drift.values()),
            fixed=e.fixed,
            fixing=int(e.fixing),
            position=w.position,
        )
        for field, found in sorted(e.drift.items()):
            w.execute(
                "INSERT INTO {reconcile_drift} (run_id, field, found) VALUES (:run, :field, :n)",
                run=e.run_id,
                field=field,
                n=found,
            )


def reconcile_figures(c: Cursor) -> dict[str, Any]:
    """Drift found by field over every run (a counter), and the last run."""
    totals = {
        row["field"]: int(row["n"])
        for row in c.query(
            "SELECT field, SUM(found) AS n FROM reconcile_drift GROUP BY field ORDER BY field"
        )
    }
    last = c.query(
        "SELECT run_id, fetched_at, finished_at, subscriptions, customers, drift, fixed "
        "FROM reconcile_runs ORDER BY finished_at DESC, position DESC LIMIT 1"
    )
    return {"drift_total": totals, "last_run": last[0] if last else None}
