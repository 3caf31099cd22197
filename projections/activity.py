"""What subscription_status and notifications share: which of a user's
subscriptions is their current one (SQL drawn from the status vocabulary), when
the first payment failed, and the invoice -> subscription table each keeps to
find a failed payment's subscription."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledger.domain.ids import id_text
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


def earlier(held: int | None, t: int) -> int:
    """When the first payment failed: the earlier of what is held and `t`."""
    return t if held is None or held > t else held


def record_invoice(w: Writer, table: str, e: Invoice.Recorded) -> None:
    """The invoice's subscription into `table` (invoice_id, subscription_id; the
    first kept), held for the batch's end (`Writer.insert_later`), and noted for
    the batch, so that a failed payment of it in the same batch finds its
    subscription without naming `table` (which writes what is held first: one
    statement a failure instead of one a batch)."""
    if e.stripe_subscription_id is None:
        return
    row = {
        "invoice_id": id_text(e.originator_id),
        "subscription_id": id_text(Subscription.create_id(e.stripe_subscription_id)),
    }
    w.insert_later(table, row, "ON CONFLICT (invoice_id) DO NOTHING")
    w.memo.setdefault(table, {}).setdefault(row["invoice_id"], row["subscription_id"])


def subscriptions_of(
    w: Writer, table: str, events: Sequence[tuple[int, Any]]
) -> tuple[set[str], dict[str, str]]:
    """The subscriptions a run of events changes: those of its subscription events,
    and those of its failed payments' invoices, found as `failed_subscription`
    finds them (`record_invoice`'s note of the batch, this run's invoices, or
    `table`, asked once for all the invoices recorded before the batch). Returns
    them, and what `table` said (invoice -> subscription)."""
    noted = w.memo.get(table, {})
    subs: set[str] = set()
    recorded: dict[str, str] = {}  # this run's invoices -> their Stripe subscription
    asked: set[str] = set()
    for _, e in events:
        if isinstance(e, Subscription.Event):
            subs.add(id_text(e.originator_id))
        elif type(e) is Invoice.Recorded and e.stripe_subscription_id:
            recorded.setdefault(id_text(e.originator_id), e.stripe_subscription_id)
        elif type(e) is Invoice.PaymentFailed:
            invoice = id_text(e.originator_id)
            if invoice in noted:
                subs.add(noted[invoice])
            elif invoice in recorded:
                subs.add(id_text(Subscription.create_id(recorded[invoice])))
            else:
                asked.add(invoice)
    found: dict[str, str] = {}
    if asked:
        statement = f"SELECT invoice_id, subscription_id FROM {{{table}}} WHERE invoice_id IN (:in)"
        rows = w.query_in(statement, sorted(asked))
        found = {row["invoice_id"]: row["subscription_id"] for row in rows}
        subs.update(found.values())
    return subs, found


def failed_subscription(
    w: Writer, table: str, invoice_id: str, found: dict[str, str]
) -> str | None:
    """The subscription of an invoice whose payment failed: by `record_invoice`'s
    note when this batch recorded it, else as `subscriptions_of` found it in
    `table` (None: no subscription)."""
    return w.memo.get(table, {}).get(invoice_id) or found.get(invoice_id)
