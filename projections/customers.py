"""Per Stripe customer: whose it is, and the email and name Stripe last told us.
Read by the billing API (`GET /api/v1/billing/customer`, `customer_of`) and by
`ledger reconcile` (`registered_customers`: what it compares with Stripe's
customers)."""

from __future__ import annotations

from functools import singledispatchmethod
from typing import Any

from ledger.domain.customer import Customer
from ledger.domain.user import User
from projections.base import SqlProjection, Writer
from projections.store import Cursor


class CustomersProjection(SqlProjection):
    """A customer's row starts with whichever comes first: its webhook
    (`Customer.Registered`) or the user's own record of creating it
    (`User.CustomerCreated`); email and name come from webhooks only (or from
    `ledger reconcile --fix`), so the row says what Stripe has confirmed.

    `user_id` is whose customer it is for the billing API: the user's own record
    or the customer's link, whichever is known. `registered` and `linked_user_id`
    are the `Customer` aggregate as the log holds it (registered at all, and the
    user it is linked to), which is what reconcile compares: a customer only the
    user's record knows is still `missing` to it. `Customer.ReconciledFromStripe`
    needs no handler: the `DetailsChanged` / `LinkedToUser` it decided follow it."""

    name = "customers"
    tables = {
        "customers": (
            "customer_id TEXT PRIMARY KEY, stripe_customer_id TEXT NOT NULL, user_id TEXT, "
            "email TEXT, name TEXT, registered INTEGER NOT NULL DEFAULT 0, "
            "linked_user_id TEXT, position BIGINT NOT NULL"
        ),
        "customer_users": "user_uuid TEXT PRIMARY KEY, user_id TEXT NOT NULL",
    }
    indexes = {"customers_user": "{customers} (user_id)"}
    reader_indexes = frozenset({"customers_user"})

    @singledispatchmethod
    def apply(self, event: Any, w: Writer) -> None:
        """Events of no interest change nothing."""

    def _upsert(
        self,
        w: Writer,
        customer_id: object,
        cus: str,
        user_id_sql: str,
        registered: int,
        **p: Any,
    ) -> None:
        w.execute(
            "INSERT INTO {customers} (customer_id, stripe_customer_id, user_id, registered, "
            f"position) VALUES (:id, :cus, {user_id_sql}, :registered, :position) "
            "ON CONFLICT (customer_id) DO UPDATE "
            "SET user_id = COALESCE({customers}.user_id, excluded.user_id), "
            "registered = CASE WHEN excluded.registered = 1 THEN 1 "
            "ELSE {customers}.registered END, "
            "position = excluded.position",
            id=str(customer_id),
            cus=cus,
            registered=registered,
            position=w.position,
            **p,
        )

    @apply.register
    def _(self, e: Customer.Registered, w: Writer) -> None:
        self._upsert(w, e.originator_id, e.stripe_customer_id, "NULL", 1)

    @apply.register
    def _(self, e: Customer.DetailsChanged, w: Writer) -> None:
        w.update(
            "customers", "customer_id", e.originator_id, "email = :email, name = :name",
            email=e.email, name=e.name,
        )  # fmt: skip

    @apply.register
    def _(self, e: Customer.LinkedToUser, w: Writer) -> None:
        w.update(
            "customers", "customer_id", e.originator_id, "user_id = :u, linked_user_id = :u",
            u=e.user_id,
        )  # fmt: skip

    @apply.register
    def _(self, e: User.Registered, w: Writer) -> None:
        w.execute(
            "INSERT INTO {customer_users} (user_uuid, user_id) VALUES (:uuid, :user_id) "
            "ON CONFLICT (user_uuid) DO NOTHING",
            uuid=str(e.originator_id),
            user_id=e.user_id,
        )

    @apply.register
    def _(self, e: User.CustomerCreated, w: Writer) -> None:
        self._upsert(
            w,
            Customer.create_id(e.stripe_customer_id),
            e.stripe_customer_id,
            "(SELECT user_id FROM {customer_users} WHERE user_uuid = :uuid)",
            0,
            uuid=str(e.originator_id),
        )


def customer_of(c: Cursor, user_id: str) -> dict[str, Any] | None:
    """The user's Stripe customer (the one changed last, should there be several)."""
    rows = c.query(
        "SELECT stripe_customer_id, email, name FROM customers WHERE user_id = :user_id "
        "ORDER BY position DESC LIMIT 1",
        {"user_id": user_id},
    )
    return rows[0] if rows else None


def registered_customers(c: Cursor) -> list[dict[str, Any]]:
    """Every customer the log holds as a `Customer`: its email, name and the user
    it is linked to (what `ledger reconcile` compares with Stripe's customers)."""
    return c.query(
        "SELECT stripe_customer_id, email, name, linked_user_id AS user_id FROM customers "
        "WHERE registered = 1 ORDER BY stripe_customer_id"
    )
