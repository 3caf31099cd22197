"""Whose is what: the aggregates that belong to each user (customers, subscriptions,
checkouts linked to the user, and the invoices of those), with the log position
that made them so. An as-of answer and a user's history read only those."""

from __future__ import annotations

from functools import singledispatchmethod
from typing import Any
from uuid import UUID

from ledger.domain.checkout import Checkout
from ledger.domain.customer import Customer
from ledger.domain.ids import id_text, user_uuid
from ledger.domain.invoice import Invoice
from ledger.domain.subscription import Subscription
from projections.base import SqlProjection, Writer
from projections.store import Cursor


class OwnershipProjection(SqlProjection):
    name = "ownership"
    rebuild_cost = 1.3
    tables = {
        "owners": (
            "aggregate_id TEXT NOT NULL, user_id TEXT NOT NULL, kind TEXT NOT NULL, "
            "position BIGINT NOT NULL, PRIMARY KEY (aggregate_id, user_id)"
        ),
        "invoice_parties": (
            "invoice_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, subscription_id TEXT, "
            "position BIGINT NOT NULL"
        ),
    }
    indexes = {
        "owners_user": "{owners} (user_id)",
        "invoice_parties_customer": "{invoice_parties} (customer_id)",
        "invoice_parties_subscription": "{invoice_parties} (subscription_id)",
    }
    reader_indexes = frozenset(indexes)  # the handlers look rows up by their keys only

    def _own(self, w: Writer, aggregate_id: UUID, user_id: str | None, kind: str) -> None:
        if user_id is None:
            return
        w.insert_later(
            "owners",
            {"aggregate_id": id_text(aggregate_id), "user_id": user_id, "kind": kind,
             "position": w.position},
            "ON CONFLICT DO NOTHING",
        )  # fmt: skip

    @singledispatchmethod
    def apply(self, event: Any, w: Writer) -> None:
        """Events of no interest change nothing."""

    @apply.register
    def _(self, e: Customer.LinkedToUser, w: Writer) -> None:
        self._own(w, e.originator_id, e.user_id, "customer")

    @apply.register
    def _(self, e: Subscription.Started, w: Writer) -> None:
        self._own(w, e.originator_id, e.user_id, "subscription")

    @apply.register
    def _(self, e: Subscription.LinkedToUser, w: Writer) -> None:
        self._own(w, e.originator_id, e.user_id, "subscription")

    @apply.register
    def _(self, e: Checkout.Completed, w: Writer) -> None:
        self._own(w, e.originator_id, e.user_id, "checkout")

    @apply.register
    def _(self, e: Invoice.Recorded, w: Writer) -> None:
        sub = e.stripe_subscription_id
        w.insert_later(
            "invoice_parties",
            {"invoice_id": id_text(e.originator_id),
             "customer_id": id_text(Customer.create_id(e.stripe_customer_id)),
             "subscription_id": id_text(Subscription.create_id(sub)) if sub else None,
             "position": w.position},
            "ON CONFLICT DO NOTHING",
        )  # fmt: skip


def owned_by(c: Cursor, user_id: str) -> set[UUID]:
    """The user's own aggregates as the index holds them, the user's own (API
    actions) included. Two plain index lookups (no subqueries: a planner without
    statistics on freshly built tables may scan them whole)."""
    rows = c.query("SELECT aggregate_id FROM owners WHERE user_id = :user_id", {"user_id": user_id})
    owned = [r["aggregate_id"] for r in rows]
    invoices: list[dict[str, str]] = []
    if owned:
        names = {f"a{i}": a for i, a in enumerate(owned)}
        marks = ", ".join(f":{n}" for n in names)
        invoices = c.query(
            f"SELECT invoice_id FROM invoice_parties WHERE customer_id IN ({marks}) "
            f"UNION SELECT invoice_id FROM invoice_parties WHERE subscription_id IN ({marks})",
            names,
        )
    return (
        {UUID(a) for a in owned} | {UUID(r["invoice_id"]) for r in invoices} | {user_uuid(user_id)}
    )
