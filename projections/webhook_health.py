"""Webhook health: deliveries by event type and outcome, the last one received,
and the dead ones. (Duplicate deliveries are never recorded, by design: they are
counted by the API's /metrics, not here.)"""

from __future__ import annotations

from functools import singledispatchmethod
from typing import Any

from ledger.domain.receipt import Outcome, Receipt
from projections.base import SqlProjection, Writer
from projections.store import Cursor


class WebhookHealthProjection(SqlProjection):
    name = "webhook_health"
    tables = {
        "webhook_receipts": (
            "receipt_id TEXT PRIMARY KEY, stripe_event_id TEXT NOT NULL, "
            "event_type TEXT NOT NULL, received_at DOUBLE PRECISION NOT NULL, "
            "outcome TEXT NOT NULL, attempts INTEGER NOT NULL, last_error TEXT, "
            "position BIGINT NOT NULL"
        ),
    }
    indexes = {"webhook_receipts_outcome": "{webhook_receipts} (outcome, event_type)"}

    def _set(self, w: Writer, e: Any, assignments: str, **params: Any) -> None:
        w.update("webhook_receipts", "receipt_id", e.originator_id, assignments, **params)

    @singledispatchmethod
    def apply(self, event: Any, w: Writer) -> None:
        """Events of no interest change nothing."""

    @apply.register
    def _(self, e: Receipt.Received, w: Writer) -> None:
        w.execute(
            "INSERT INTO {webhook_receipts} (receipt_id, stripe_event_id, event_type, "
            "received_at, outcome, attempts, position) VALUES (:id, :evt, :type, :at, "
            "'received', 0, :position)",
            id=str(e.originator_id),
            evt=e.stripe_event_id,
            type=e.event_type,
            at=e.timestamp.timestamp(),
            position=w.position,
        )

    @apply.register
    def _(self, e: Receipt.Processed, w: Writer) -> None:
        self._set(w, e, "outcome = :outcome", outcome=e.outcome)

    @apply.register
    def _(self, e: Receipt.AttemptFailed, w: Writer) -> None:
        self._set(
            w,
            e,
            "outcome = 'failed', attempts = :attempts, last_error = :error",
            attempts=e.attempt,
            error=e.error,
        )

    @apply.register
    def _(self, e: Receipt.DeadLettered, w: Writer) -> None:
        self._set(w, e, "outcome = 'dead'")


def health(c: Cursor) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = {}
    for row in c.query(
        "SELECT event_type, outcome, COUNT(*) AS n FROM webhook_receipts "
        "GROUP BY event_type, outcome ORDER BY event_type, outcome"
    ):
        counts.setdefault(row["event_type"], {})[row["outcome"]] = int(row["n"])
    last = c.query("SELECT MAX(received_at) AS at FROM webhook_receipts")[0]["at"]
    dead = c.query(
        "SELECT stripe_event_id, event_type, attempts, last_error FROM "
        "webhook_receipts WHERE outcome = 'dead' ORDER BY position LIMIT 100"
    )
    return {"by_type": counts, "last_received_at": last, "dead": dead}


def outcomes(c: Cursor) -> dict[str, int]:
    """Receipts by outcome, every outcome named even at zero; "received" ones wait
    for stage two."""
    counts = dict.fromkeys(["received", *Outcome], 0)
    for row in c.query("SELECT outcome, COUNT(*) AS n FROM webhook_receipts GROUP BY outcome"):
        counts[row["outcome"]] = int(row["n"])
    return counts
