"""Per user: each invoice with amount, currency, status, dates and Stripe ids."""

from __future__ import annotations

from collections.abc import Sequence
from functools import singledispatchmethod
from typing import Any

from ledger.domain.customer import Customer
from ledger.domain.ids import id_text
from ledger.domain.invoice import Invoice
from projections.base import Held, SqlProjection, Writer
from projections.store import Cursor


class InvoiceHistoryProjection(SqlProjection):
    name = "invoice_history"
    tables = {
        "invoice_history": (
            "invoice_id TEXT PRIMARY KEY, user_id TEXT, stripe_invoice_id TEXT NOT NULL, "
            "stripe_customer_id TEXT NOT NULL, stripe_subscription_id TEXT, number TEXT, "
            "currency TEXT NOT NULL, amount_due BIGINT NOT NULL, amount_paid BIGINT NOT NULL, "
            "status TEXT NOT NULL, attempt_count INTEGER NOT NULL, period_start BIGINT, "
            "period_end BIGINT, paid_at BIGINT, failed_at BIGINT, hosted_invoice_url TEXT, "
            "position BIGINT NOT NULL, created BIGINT"
        ),
        "invoice_customers": (
            "customer_id TEXT PRIMARY KEY, stripe_customer_id TEXT NOT NULL, user_id TEXT"
        ),
    }
    indexes = {  # (user_id, created) serves reads by user alone too
        "invoice_history_user_created": "{invoice_history} (user_id, created)",
        "invoice_history_customer": "{invoice_history} (stripe_customer_id)",
        "invoice_customers_stripe": "{invoice_customers} (stripe_customer_id)",
    }
    reader_indexes = frozenset({"invoice_history_user_created"})

    def apply_all(self, events: Sequence[tuple[int, Any]], w: Writer) -> None:
        """The batch folded in memory: the rows of its customers (theirs, and those
        its invoices are recorded for) and of its invoices read in one query each,
        changed by the handlers, written back in one statement each."""
        customers = Held(type(self), "invoice_customers", "customer_id")
        invoices = Held(type(self), "invoice_history", "invoice_id")
        by_customer: dict[str, list[str]] = {}  # Stripe customer -> its invoices held
        w.memo[_HELD] = customers, invoices, by_customer
        customers.load(w, {
            id_text(Customer.create_id(e.stripe_customer_id)) if type(e) is Invoice.Recorded
            else id_text(e.originator_id)
            for _, e in events if type(e) in _OF_CUSTOMERS
        })  # fmt: skip
        invoices.load(w, {id_text(e.originator_id) for _, e in events if type(e) in _OF_INVOICES})
        for invoice, row in invoices.rows.items():
            if row is not None:
                by_customer.setdefault(row["stripe_customer_id"], []).append(invoice)
        super().apply_all(events, w)
        customers.write(w)
        invoices.write(w)

    @singledispatchmethod
    def apply(self, event: Any, w: Writer) -> None:
        """Events of no interest change nothing."""

    @apply.register
    def _(self, e: Customer.Registered, w: Writer) -> None:
        customers, _, _ = w.memo[_HELD]
        customers.add(
            {"customer_id": id_text(e.originator_id), "stripe_customer_id": e.stripe_customer_id,
             "user_id": None}
        )  # fmt: skip

    @apply.register
    def _(self, e: Customer.LinkedToUser, w: Writer) -> None:
        """The customer's invoices are the user's: those the batch holds, and those
        written before."""
        customers, invoices, by_customer = w.memo[_HELD]
        customer = customers.change(id_text(e.originator_id), user_id=e.user_id)
        if customer is None:
            return
        cus = customer["stripe_customer_id"]
        for invoice in by_customer.get(cus, ()):
            invoices.change(invoice, user_id=e.user_id, position=w.position)
        w.execute(
            "UPDATE {invoice_history} SET user_id = :user_id, position = :position "
            "WHERE stripe_customer_id = :cus",
            cus=cus,
            user_id=e.user_id,
            position=w.position,
        )

    @apply.register
    def _(self, e: Invoice.Recorded, w: Writer) -> None:
        customers, invoices, by_customer = w.memo[_HELD]
        customer = customers.rows.get(id_text(Customer.create_id(e.stripe_customer_id)))
        by_customer.setdefault(e.stripe_customer_id, []).append(id_text(e.originator_id))
        invoices.add(
            {
                "invoice_id": id_text(e.originator_id),
                "user_id": None if customer is None else customer["user_id"],
                "stripe_invoice_id": e.stripe_invoice_id,
                "stripe_customer_id": e.stripe_customer_id,
                "stripe_subscription_id": e.stripe_subscription_id,
                "number": e.number,
                "currency": e.currency,
                "amount_due": e.amount_due,
                "amount_paid": 0,
                "status": "open",
                "attempt_count": 0,
                "period_start": e.period_start,
                "period_end": e.period_end,
                "paid_at": None,
                "failed_at": None,
                "hosted_invoice_url": e.hosted_invoice_url,
                "position": w.position,
                "created": e.created,
            }
        )

    @apply.register
    def _(self, e: Invoice.Paid, w: Writer) -> None:
        self._set(w, e, status="paid", amount_paid=e.amount_paid, paid_at=e.stripe_created)

    @apply.register
    def _(self, e: Invoice.PaymentFailed, w: Writer) -> None:
        self._set(
            w, e, status="payment_failed", failed_at=e.stripe_created,
            attempt_count=e.attempt_count,
        )  # fmt: skip

    @staticmethod
    def _set(w: Writer, e: Any, **values: Any) -> None:
        _, invoices, _ = w.memo[_HELD]
        invoices.change(id_text(e.originator_id), position=w.position, **values)


_HELD = "invoice_history:held"  # (customers, invoices, by_customer), in `Writer.memo`
_OF_CUSTOMERS = (Customer.Registered, Customer.LinkedToUser, Invoice.Recorded)
_OF_INVOICES = (Invoice.Paid, Invoice.PaymentFailed)


def invoices_of(c: Cursor, user_id: str) -> list[dict[str, Any]]:
    return c.query(
        "SELECT stripe_invoice_id, stripe_subscription_id, number, status, amount_due, "
        "amount_paid, currency, period_start, period_end, paid_at, failed_at, attempt_count, "
        "hosted_invoice_url FROM invoice_history WHERE user_id = :user_id "
        "ORDER BY period_start DESC, stripe_invoice_id",
        {"user_id": user_id},
    )


class UnknownInvoice(LookupError):
    """A page was asked for after an invoice the user does not have."""


# Newest first by Stripe's `created` (an invoice recorded before that was kept sorts
# by its period's start), then by id: a total order, so pages never overlap.
_NEWEST_FIRST = "COALESCE(created, period_start, 0)"


def invoice_page(
    c: Cursor, user_id: str, limit: int, starting_after: str | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """One page of the user's invoices, newest first, after the invoice
    `starting_after` (a Stripe invoice id of this user's, else UnknownInvoice);
    and whether more follow."""
    params: dict[str, Any] = {"user_id": user_id, "limit": limit + 1}
    after = ""
    if starting_after is not None:
        found = c.query(
            f"SELECT {_NEWEST_FIRST} AS k FROM invoice_history "
            "WHERE user_id = :user_id AND stripe_invoice_id = :id",
            {"user_id": user_id, "id": starting_after},
        )
        if not found:
            raise UnknownInvoice(starting_after)
        after = f"AND ({_NEWEST_FIRST} < :k OR ({_NEWEST_FIRST} = :k AND stripe_invoice_id < :id)) "
        params.update(k=found[0]["k"], id=starting_after)
    rows = c.query(
        "SELECT stripe_invoice_id AS id, number, status, amount_due, amount_paid, currency, "
        "period_start, period_end, paid_at, hosted_invoice_url, created FROM invoice_history "
        f"WHERE user_id = :user_id {after}"
        f"ORDER BY {_NEWEST_FIRST} DESC, stripe_invoice_id DESC LIMIT :limit",
        params,
    )
    return rows[:limit], len(rows) > limit
