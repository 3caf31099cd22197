"""Per Stripe customer: its email and name and the user it is linked to, as the
ledger holds them (what `ledger reconcile` compares with Stripe's customers)."""

from __future__ import annotations

from functools import singledispatchmethod
from typing import Any

from ledger.domain.customer import Customer
from projections.base import SqlProjection, Writer
from projections.store import Cursor


class CustomersProjection(SqlProjection):
    name = "customers"
    tables = {
        "stripe_customers": (
            "customer_id TEXT PRIMARY KEY, stripe_customer_id TEXT NOT NULL, email TEXT, "
            "name TEXT, user_id TEXT, position BIGINT NOT NULL"
        ),
    }

    def _set(self, w: Writer, e: Any, assignments: str, **params: Any) -> None:
        w.update("stripe_customers", "customer_id", e.originator_id, assignments, **params)

    @singledispatchmethod
    def apply(self, event: Any, w: Writer) -> None:
        """Events of no interest change nothing."""

    @apply.register
    def _(self, e: Customer.Registered, w: Writer) -> None:
        w.execute(
            "INSERT INTO {stripe_customers} (customer_id, stripe_customer_id, position) "
            "VALUES (:id, :cus, :position)",
            id=str(e.originator_id),
            cus=e.stripe_customer_id,
            position=w.position,
        )

    @apply.register
    def _(self, e: Customer.DetailsChanged, w: Writer) -> None:
        self._set(w, e, "email = :email, name = :name", email=e.email, name=e.name)

    @apply.register
    def _(self, e: Customer.LinkedToUser, w: Writer) -> None:
        self._set(w, e, "user_id = :user_id", user_id=e.user_id)


def customers(c: Cursor) -> list[dict[str, Any]]:
    return c.query(
        "SELECT stripe_customer_id, email, name, user_id FROM stripe_customers "
        "ORDER BY stripe_customer_id"
    )
