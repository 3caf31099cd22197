"""Per Stripe customer: whose it is, and the email and name Stripe last told us."""

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
    (`User.CustomerCreated`); email and name come from webhooks only, so the
    row says what Stripe has confirmed."""

    name = "customers"
    tables = {
        "customers": (
            "customer_id TEXT PRIMARY KEY, stripe_customer_id TEXT NOT NULL, user_id TEXT, "
            "email TEXT, name TEXT, position BIGINT NOT NULL"
        ),
        "customer_users": "user_uuid TEXT PRIMARY KEY, user_id TEXT NOT NULL",
    }
    indexes = {"customers_user": "{customers} (user_id)"}

    @singledispatchmethod
    def apply(self, event: Any, w: Writer) -> None:
        """Events of no interest change nothing."""

    def _upsert(self, w: Writer, customer_id: object, cus: str, user_id_sql: str, **p: Any) -> None:
        w.execute(
            "INSERT INTO {customers} (customer_id, stripe_customer_id, user_id, position) "
            f"VALUES (:id, :cus, {user_id_sql}, :position) ON CONFLICT (customer_id) DO UPDATE "
            "SET user_id = COALESCE({customers}.user_id, excluded.user_id), "
            "position = excluded.position",
            id=str(customer_id),
            cus=cus,
            position=w.position,
            **p,
        )

    @apply.register
    def _(self, e: Customer.Registered, w: Writer) -> None:
        self._upsert(w, e.originator_id, e.stripe_customer_id, "NULL")

    @apply.register
    def _(self, e: Customer.DetailsChanged, w: Writer) -> None:
        w.update(
            "customers", "customer_id", e.originator_id, "email = :email, name = :name",
            email=e.email, name=e.name,
        )  # fmt: skip

    @apply.register
    def _(self, e: Customer.LinkedToUser, w: Writer) -> None:
        w.update("customers", "customer_id", e.originator_id, "user_id = :u", u=e.user_id)

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
