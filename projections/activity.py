"""SQL of subscription_status drawn from the status vocabulary: which of a user's
subscriptions is their current one, and when the first payment failed; and the
invoice -> subscription table that subscription_status and notifications each
keep to find a failed payment's subscription."""

from __future__ import annotations

from typing import Any

from ledger.domain.invoice import Invoice
from ledger.domain.status import LAST_RANK, Status, current_rank
from ledger.domain.subscription import Subscription
from projections.base import Writer


def _rank_sql(column: str) -> str:
    """`current_rank` as a CASE over the column: one WHEN for each rank but the last."""
    whens = "".join(
        f"WHEN {column} IN ({', '.join(repr(str(s)) for s in Status if current_rank(s) == rank)})"
        f" THEN {rank} "
        for rank in sorted({current_rank(s) for s in Status} - {LAST_RANK})
    )
    return f"CASE {whens}ELSE {LAST_RANK} END"


# The user's current subscription: the lowest rank, then the latest started.
CURRENT_ORDER = f"ORDER BY {_rank_sql('status')}, started_at DESC, subscription_id"


def past_due_since_sql(column: str = "past_due_since") -> str:
    """The earlier of what is held and :t (the first failed payment)."""
    return f"CASE WHEN {column} IS NULL OR {column} > :t THEN :t ELSE {column} END"


def record_invoice(w: Writer, table: str, e: Invoice.Recorded) -> None:
    """The invoice's subscription into `table` (invoice_id, subscription_id; the
    first kept), held for the batch's end (`Writer.insert_later`), and noted for
    the batch, so that a failed payment of it in the same batch finds its
    subscription without naming `table` (which writes what is held first: one
    statement a failure instead of one a batch)."""
    if e.stripe_subscription_id is None:
        return
    row = {
        "invoice_id": str(e.originator_id),
        "subscription_id": str(Subscription.create_id(e.stripe_subscription_id)),
    }
    w.insert_later(table, row, "ON CONFLICT (invoice_id) DO NOTHING")
    w.memo.setdefault(table, {}).setdefault(row["invoice_id"], row["subscription_id"])


def invoice_subscription(w: Writer, table: str, invoice_id: str) -> tuple[str, dict[str, Any]]:
    """A condition on `subscription_id` naming the invoice's subscription, and its
    parameters: by id when this batch recorded the invoice (`record_invoice`),
    else read from `table` (no row: no subscription)."""
    noted = w.memo.get(table, {}).get(invoice_id)
    if noted is not None:
        return "subscription_id = :subscription_id", {"subscription_id": noted}
    return (
        f"subscription_id = (SELECT subscription_id FROM {{{table}}} WHERE invoice_id = :id)",
        {"id": invoice_id},
    )
