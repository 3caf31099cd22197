"""Per Stripe customer: whose it is, and the email and name Stripe last told us.
Read by the billing API (`GET /api/v1/billing/customer`, `customer_of`) and by
`ledger reconcile` (`registered_customers`: what it compares with Stripe's
customers)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import singledispatchmethod
from typing import Any

from ledger.domain.customer import Customer
from ledger.domain.ids import id_text
from ledger.domain.user import User
from projections.base import Held, SqlProjection, Writer
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

    def apply_all(self, events: Sequence[tuple[int, Any]], w: Writer) -> None:
        """The batch folded in memory: the rows of its customers and of the users
        who created one read in one query each, changed by the handlers, written
        back in one statement each."""
        customers = Held(type(self), "customers", "customer_id")
        users = Held(type(self), "customer_users", "user_uuid")
        w.memo[_HELD] = customers, users
        customers.load(w, {
            id_text(Customer.create_id(e.stripe_customer_id)) if type(e) is User.CustomerCreated
            else id_text(e.originator_id)
            for _, e in events if type(e) is not User.Registered
        })  # fmt: skip
        users.load(w, {id_text(e.originator_id) for _, e in events if isinstance(e, User.Event)})
        super().apply_all(events, w)
        customers.write(w)
        users.write(w)

    @singledispatchmethod
    def apply(self, event: Any, w: Writer) -> None:
        """Events of no interest change nothing."""

    @staticmethod
    def _start(w: Writer, customer_id: str, cus: str, user_id: str | None, registered: int) -> None:
        """The customer's row, or what its start changes in the one there: the
        user kept if known, `registered` once 1."""
        customers, _ = w.memo[_HELD]
        row = customers.rows.get(customer_id)
        if row is None:
            customers.add(
                {"customer_id": customer_id, "stripe_customer_id": cus, "user_id": user_id,
                 "email": None, "name": None, "registered": registered,
                 "linked_user_id": None, "position": w.position}
            )  # fmt: skip
            return
        customers.change(
            customer_id, user_id=row["user_id"] if row["user_id"] is not None else user_id,
            registered=registered or row["registered"], position=w.position,
        )  # fmt: skip

    @apply.register
    def _(self, e: Customer.Registered, w: Writer) -> None:
        self._start(w, id_text(e.originator_id), e.stripe_customer_id, None, 1)

    @apply.register
    def _(self, e: Customer.DetailsChanged, w: Writer) -> None:
        customers, _ = w.memo[_HELD]
        customers.change(id_text(e.originator_id), email=e.email, name=e.name, position=w.position)

    @apply.register
    def _(self, e: Customer.LinkedToUser, w: Writer) -> None:
        customers, _ = w.memo[_HELD]
        u = e.user_id
        customers.change(id_text(e.originator_id), user_id=u, linked_user_id=u, position=w.position)

    @apply.register
    def _(self, e: User.Registered, w: Writer) -> None:
        _, users = w.memo[_HELD]
        if users.rows.get(id_text(e.originator_id)) is None:
            users.add({"user_uuid": id_text(e.originator_id), "user_id": e.user_id})

    @apply.register
    def _(self, e: User.CustomerCreated, w: Writer) -> None:
        _, users = w.memo[_HELD]
        user = users.rows.get(id_text(e.originator_id))
        self._start(
            w, id_text(Customer.create_id(e.stripe_customer_id)), e.stripe_customer_id,
            None if user is None else user["user_id"], 0,
        )  # fmt: skip


_HELD = "customers:held"  # (customers, users), in `Writer.memo`


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
