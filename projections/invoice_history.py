"""Per user: each invoice with amount, currency, status, dates and Stripe ids."""

from __future__ import annotations

from functools import singledispatchmethod
from typing import Any

from ledger.domain.customer import Customer
from ledger.domain.invoice import Invoice
from projections.base import SqlProjection, Writer
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

    @singledispatchmethod
    def apply(self, event: Any, w: Writer) -> None:
        """Events of no interest change nothing."""

    @apply.register
    def _(self, e: Customer.Registered, w: Writer) -> None:
        w.execute(
            "INSERT INTO {invoice_customers} (customer_id, stripe_customer_id) VALUES (:id, :cus)",
            id=str(e.originator_id),
            cus=e.stripe_customer_id,
        )

    @apply.register
    def _(self, e: Customer.LinkedToUser, w: Writer) -> None:
        w.execute(
            "UPDATE {invoice_customers} SET user_id = :user_id WHERE customer_id = :id",
            id=str(e.originator_id),
            user_id=e.user_id,
        )
        w.execute(
            "UPDATE {invoice_history} SET user_id = :user_id, position = :position "
            "WHERE stripe_customer_id = (SELECT stripe_customer_id FROM {invoice_customers} "
            "WHERE customer_id = :id)",
            id=str(e.originator_id),
            user_id=e.user_id,
            position=w.position,
        )

    @apply.register
    def _(self, e: Invoice.Recorded, w: Writer) -> None:
        w.execute(
            "INSERT INTO {invoice_history} (invoice_id, user_id, stripe_invoice_id, "
            "stripe_customer_id, stripe_subscription_id, number, currency, amount_due, "
            "amount_paid, status, attempt_count, period_start, period_end, "
            "hosted_invoice_url, position, created) VALUES (:id, (SELECT user_id FROM "
            "{invoice_customers} WHERE stripe_customer_id = :cus), :inv, :cus, :sub, :number, "
            ":currency, :amount_due, 0, 'open', 0, :period_start, :period_end, :url, :position, "
            ":created)",
            id=str(e.originator_id),
            inv=e.stripe_invoice_id,
            cus=e.stripe_customer_id,
            sub=e.stripe_subscription_id,
            number=e.number,
            currency=e.currency,
            amount_due=e.amount_due,
            period_start=e.period_start,
            period_end=e.period_end,
            url=e.hosted_invoice_url,
            position=w.position,
            created=e.created,
        )

    @apply.register
    def _(self, e: Invoice.Paid, w: Writer) -> None:
        self._set(
            w, e, "status = 'paid', amount_paid = :amount, paid_at = :t",
            amount=e.amount_paid, t=e.stripe_created,
        )  # fmt: skip

    @apply.register
    def _(self, e: Invoice.PaymentFailed, w: Writer) -> None:
        self._set(
            w, e, "status = 'payment_failed', failed_at = :t, attempt_count = :attempts",
            t=e.stripe_created, attempts=e.attempt_count,
        )  # fmt: skip

    def _set(self, w: Writer, e: Any, assignments: str, **params: Any) -> None:
        w.update("invoice_history", "invoice_id", e.originator_id, assignments, **params)


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
