"""Webhook health: deliveries by event type and outcome, the last one received,
and the dead ones. (Duplicate deliveries are never recorded, by design: they are
counted by the API's /metrics, not here.)"""

from __future__ import annotations

from collections.abc import Sequence
from functools import singledispatchmethod
from typing import Any

from ledger.domain.ids import id_text
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
    reader_indexes = frozenset({"webhook_receipts_outcome"})

    @singledispatchmethod
    def apply(self, event: Any, w: Writer) -> None:
        """Events of no interest change nothing."""

    @apply.register
    def _(self, e: Receipt.Received, w: Writer) -> None:
        w.insert_rows("webhook_receipts", [self._received(e, w.position)])

    @apply.register
    def _(self, e: Receipt.Processed, w: Writer) -> None:
        self._change(w, e)

    @apply.register
    def _(self, e: Receipt.AttemptFailed, w: Writer) -> None:
        self._change(w, e)

    @apply.register
    def _(self, e: Receipt.DeadLettered, w: Writer) -> None:
        self._change(w, e)

    def apply_all(self, events: Sequence[tuple[int, Any]], w: Writer) -> None:
        """The receipts received in a batch are inserted together at its end, with
        what stage two did to them meanwhile; those received earlier are changed
        together too, each by what the batch did to it (its last outcome, and its
        last failure's attempts and error): two statements a batch, not one or two
        a delivery. The rows are those of the events applied one by one."""
        received: dict[str, dict[str, Any]] = {}
        earlier: dict[str, dict[str, Any]] = {}
        for position, e in events:
            key = id_text(e.originator_id)
            if isinstance(e, Receipt.Received):
                received[key] = self._received(e, position)
            elif changes := _changes(e):
                row = received.get(key) or earlier.setdefault(key, _unchanged(key))
                row.update(changes, position=position)
        w.insert_rows("webhook_receipts", list(received.values()))
        self._change_all(w, list(earlier.values()))

    @staticmethod
    def _change_all(w: Writer, rows: list[dict[str, Any]]) -> None:
        """Rows of receipts received in an earlier batch: attempts None leaves the
        row's attempts and error as they are."""
        if not rows:
            return
        if not w.postgres:
            w.execute_many(_CHANGE, rows)
            return
        w.execute(
            f"UPDATE {{webhook_receipts}} AS t SET {_SET.format(v='v.', t='t.')} "
            f"FROM {w.unnest('webhook_receipts', _CHANGED)} AS v({', '.join(_CHANGED)}) "
            # ANY as well: the rows found by the key, not a join over the whole table
            "WHERE t.receipt_id = ANY(%(receipt_id)b::text[]) AND t.receipt_id = v.receipt_id",
            **w.arrays("webhook_receipts", _CHANGED, rows),
        )

    @staticmethod
    def _received(e: Receipt.Received, position: int) -> dict[str, Any]:
        return {
            "receipt_id": id_text(e.originator_id), "stripe_event_id": e.stripe_event_id,
            "event_type": e.event_type, "received_at": e.timestamp.timestamp(),
            "outcome": "received", "attempts": 0, "last_error": None, "position": position,
        }  # fmt: skip

    def _change(self, w: Writer, e: Any) -> None:
        changes = _changes(e)
        assignments = ", ".join(f"{column} = :{column}" for column in changes)
        w.update("webhook_receipts", "receipt_id", e.originator_id, assignments, **changes)


_CHANGED = ("receipt_id", "outcome", "attempts", "last_error", "position")  # what changes
_SET = (
    "outcome = {v}outcome, attempts = COALESCE({v}attempts, {t}attempts), "
    "last_error = CASE WHEN {v}attempts IS NULL THEN {t}last_error ELSE {v}last_error END, "
    "position = {v}position"
)
_CHANGE = (
    "UPDATE {webhook_receipts} SET " + _SET.format(v=":", t="") + " WHERE receipt_id = :receipt_id"
)


def _unchanged(receipt_id: str) -> dict[str, Any]:
    """A receipt's row of changes before any: None leaves a column as it is."""
    return {**dict.fromkeys(_CHANGED), "receipt_id": receipt_id}


def _changes(e: Any) -> dict[str, Any]:
    """What a receipt's event changes in its row."""
    if isinstance(e, Receipt.Processed):
        return {"outcome": e.outcome}
    if isinstance(e, Receipt.AttemptFailed):
        return {"outcome": "failed", "attempts": e.attempt, "last_error": e.error}
    if isinstance(e, Receipt.DeadLettered):
        return {"outcome": "dead"}
    return {}


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
