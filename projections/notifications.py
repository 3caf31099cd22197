"""Per user: a row for each change the user should be told about, with a
cursor that only grows (from the event's position in the log), and the
provisioning feed (features_granted / features_revoked).

Time passing (a payment grace ending) is read from the log's own clock ticks
(`Tick.Ticked`, recorded by stage two), never from the wall clock: a rebuild
sees the same ticks in the same places and writes the same rows."""

from __future__ import annotations

import json
from functools import singledispatchmethod
from typing import Any

from ledger.domain.clock import Tick
from ledger.domain.customer import Customer
from ledger.domain.invoice import Invoice
from ledger.domain.money import Price
from ledger.domain.status import DAY, Status, is_delinquent, is_live, is_terminal
from ledger.domain.subscription import Subscription
from projections.activity import invoice_subscription, past_due_since_sql, record_invoice
from projections.base import SqlProjection, Writer
from projections.store import Cursor

# An event can tell one subscription's user several things (plan_changed,
# features_granted, features_revoked): the cursor is position * SLOTS + the
# notification's place among them (`Writer.place`; one not written, its condition
# unmet, leaves its place empty), so each has a cursor of its own. This
# projection's places are 0 to ALERT_SLOT - 1 (an event tells a subscription three
# things at most); ALERT_SLOT and above are usage_totals' usage alerts
# (projections/usage_totals.py), which the read side merges into the same feed.
SLOTS = 10
ALERT_SLOT = 5
_sorted_json = json.JSONEncoder(sort_keys=True).encode  # json.dumps(..., sort_keys=True)

KINDS = (
    "activated",
    "renewed",
    "payment_failed",
    "payment_grace_ending",
    "payment_recovered",
    "trial_ending",
    "cancellation_scheduled",
    "cancellation_withdrawn",
    "ended",
    "plan_changed",
    "features_granted",
    "features_revoked",
)


class NotificationsProjection(SqlProjection):
    name = "notifications"
    rebuild_cost = 1.5
    tables = {
        "notifications": (
            "cursor BIGINT NOT NULL, user_id TEXT, subscription_id TEXT NOT NULL, "
            "stripe_subscription_id TEXT NOT NULL, kind TEXT NOT NULL, "
            "occurred_at BIGINT NOT NULL, detail TEXT NOT NULL, "
            "PRIMARY KEY (cursor, subscription_id)"
        ),
        "notification_subscriptions": (
            "subscription_id TEXT PRIMARY KEY, stripe_subscription_id TEXT NOT NULL, "
            "user_id TEXT, current_period_start BIGINT, status TEXT, plan_id TEXT, "
            "features TEXT, grace_days INTEGER, past_due_since BIGINT, granting INTEGER, "
            "grace_warned INTEGER"
        ),
        "notification_invoices": "invoice_id TEXT PRIMARY KEY, subscription_id TEXT NOT NULL",
        "notification_contacts": (
            "customer_id TEXT PRIMARY KEY, user_id TEXT, email TEXT, position BIGINT NOT NULL"
        ),
    }
    indexes = {  # the primary key serves reads by cursor
        "notifications_user": "{notifications} (user_id, cursor)",
        # for linking a subscription's earlier notifications to its user: only the
        # rows still without one are in it, so it costs the other inserts nothing
        "notifications_unlinked": "{notifications} (subscription_id) WHERE user_id IS NULL",
        "notification_subscriptions_grace": (
            "{notification_subscriptions} (status) WHERE granting = 1"
        ),
        "notification_contacts_user": "{notification_contacts} (user_id)",
    }
    reader_indexes = frozenset({"notifications_user", "notification_contacts_user"})

    # --- helpers -------------------------------------------------------------------

    def _notify(
        self, w: Writer, subscription_id: str, kind: str, t: int, only_if: str = "", **detail: Any
    ) -> None:
        """One notification for the subscription's user; `only_if` adds a condition
        on the subscription's row (the notification is not written without it)."""
        self._tell(
            w, subscription_id, kind, t, ":detail", "subscription_id = :id" + only_if,
            detail=_sorted_json(detail), **detail,
        )  # fmt: skip

    def _tell(
        self, w: Writer, subscription_id: str, kind: str, t: int, detail_sql: str, where: str,
        **params: Any,
    ) -> None:  # fmt: skip
        """The notification's row, with the subscription's user, if its row of
        `notification_subscriptions` meets `where`; its detail made by `detail_sql`."""
        w.execute(
            "INSERT INTO {notifications} (cursor, user_id, subscription_id, "
            "stripe_subscription_id, kind, occurred_at, detail) SELECT :cursor, user_id, "
            f"subscription_id, stripe_subscription_id, :kind, :t, {detail_sql} "
            f"FROM {{notification_subscriptions}} WHERE {where}",
            cursor=w.position * SLOTS + w.place(subscription_id),
            id=subscription_id,
            kind=kind,
            t=t,
            **params,
        )

    def _features(self, price: Price | None) -> tuple[str, list[str], int]:
        """(plan id, the features it grants beyond the free plan's, its grace days)"""
        plan, _, _ = self.catalog.resolve(price)
        free = set(self.catalog.free_plan.features)
        return plan.id, [f for f in plan.features if f not in free], plan.grace_days

    def _row(self, w: Writer, subscription_id: str) -> dict[str, Any] | None:
        rows = w.query(
            "SELECT * FROM {notification_subscriptions} WHERE subscription_id = :id",
            id=subscription_id,
        )
        return rows[0] if rows else None

    def _set_granting(
        self,
        w: Writer,
        subscription_id: str,
        granting: bool,
        t: int,
        unless: str = "",
        reason: str | None = None,
    ) -> None:
        """Tell the provisioning feed when the subscription starts or stops granting
        its features (if it has any beyond the free plan's), and hold that it does:
        statements on the subscription's row, not a read of it (`unless`: a
        condition on the row under which nothing changes)."""
        condition = "subscription_id = :id AND granting = :was" + (
            f" AND NOT ({unless})" if unless else ""
        )
        self._tell(
            w, subscription_id, "features_granted" if granting else "features_revoked", t,
            # the detail as json.dumps(..., sort_keys=True) writes it: `features` is the
            # list as json.dumps wrote it
            ":head || features || :tail", f"{condition} AND features <> '[]'",
            was=int(not granting), head='{"features": ',
            tail="}" if reason is None else f', "reason": {json.dumps(reason)}}}',
        )  # fmt: skip
        w.execute(
            f"UPDATE {{notification_subscriptions}} SET granting = :granting WHERE {condition}",
            id=subscription_id,
            was=int(not granting),
            granting=int(granting),
        )

    # --- handlers ------------------------------------------------------------------

    @singledispatchmethod
    def apply(self, event: Any, w: Writer) -> None:
        """Events of no interest change nothing."""

    @apply.register
    def _(self, e: Subscription.Started, w: Writer) -> None:
        plan_id, features, grace_days = self._features(e.price)
        sid = str(e.originator_id)
        grants = is_live(e.status) or (e.status == Status.PAST_DUE and grace_days > 0)
        w.execute(
            "INSERT INTO {notification_subscriptions} (subscription_id, "
            "stripe_subscription_id, user_id, current_period_start, status, plan_id, features, "
            "grace_days, past_due_since, granting, grace_warned) VALUES (:id, :sub, :user_id, "
            ":start, :status, :plan_id, :features, :grace_days, :since, :granting, 0)",
            id=sid,
            sub=e.stripe_subscription_id,
            user_id=e.user_id,
            start=e.current_period_start,
            status=e.status,
            plan_id=plan_id,
            features=json.dumps(features),
            grace_days=grace_days,
            since=e.stripe_created if e.status == Status.PAST_DUE else None,
            granting=int(grants),
        )
        if is_live(e.status):
            self._notify(w, sid, "activated", e.stripe_created, status=e.status)
        if grants and features:
            self._notify(w, sid, "features_granted", e.stripe_created, features=features)

    @apply.register
    def _(self, e: Subscription.StatusChanged, w: Writer) -> None:
        sid, t = str(e.originator_id), e.stripe_created
        if is_live(e.status) and is_delinquent(e.previous_status):
            self._notify(w, sid, "payment_recovered", t, status=e.status)
        elif is_live(e.status) and not is_live(e.previous_status):
            self._notify(w, sid, "activated", t, status=e.status)
        elif is_delinquent(e.status):
            self._notify(w, sid, "payment_failed", t, status=e.status)
        if e.status == Status.PAST_DUE:
            since = past_due_since_sql()
        elif is_live(e.status):
            since = "NULL"
        else:
            since = "past_due_since"
        w.execute(
            f"UPDATE {{notification_subscriptions}} SET status = :status, past_due_since = {since}"
            + (", grace_warned = 0" if is_live(e.status) else "")
            + " WHERE subscription_id = :id",
            id=sid,
            status=e.status,
            t=t,
        )
        if is_live(e.status):
            self._set_granting(w, sid, True, t)
        elif e.status == Status.PAST_DUE:  # still granting within the grace, told by the ticks
            self._set_granting(
                w, sid, False, t, "COALESCE(grace_days, 0) > 0", reason="grace_ended"
            )
        else:
            self._set_granting(w, sid, False, t, reason="inactive")

    @apply.register
    def _(self, e: Subscription.PlanChanged, w: Writer) -> None:
        sid, t = str(e.originator_id), e.stripe_created
        row = self._row(w, sid)
        if row is None:
            return
        plan_id, features, grace_days = self._features(e.price)
        self._notify(
            w, sid, "plan_changed", t, plan_id=plan_id, previous_plan_id=row["plan_id"],
            price_id=e.price.stripe_price_id if e.price else None,
        )  # fmt: skip
        if row["granting"]:
            held = json.loads(row["features"])
            added = [f for f in features if f not in held]
            removed = [f for f in held if f not in features]
            if added:
                self._notify(w, sid, "features_granted", t, features=added)
            if removed:
                self._notify(w, sid, "features_revoked", t, features=removed, reason="plan_changed")
        w.execute(
            "UPDATE {notification_subscriptions} SET plan_id = :plan_id, features = :features, "
            "grace_days = :grace_days WHERE subscription_id = :id",
            id=sid,
            plan_id=plan_id,
            features=json.dumps(features),
            grace_days=grace_days,
        )

    @apply.register
    def _(self, e: Subscription.PeriodChanged, w: Writer) -> None:
        """A renewal is a period that starts later than the one held."""
        if e.current_period_start is None:
            return
        self._notify(
            w,
            str(e.originator_id),
            "renewed",
            e.stripe_created,
            " AND (current_period_start IS NULL OR current_period_start < :current_period_start)",
            current_period_start=e.current_period_start,
            current_period_end=e.current_period_end,
        )
        w.execute(
            "UPDATE {notification_subscriptions} SET current_period_start = :start "
            "WHERE subscription_id = :id",
            id=str(e.originator_id),
            start=e.current_period_start,
        )

    @apply.register
    def _(self, e: Subscription.TrialEndingSoon, w: Writer) -> None:
        sid = str(e.originator_id)
        self._notify(w, sid, "trial_ending", e.stripe_created, trial_end=e.trial_end)

    @apply.register
    def _(self, e: Subscription.CancellationScheduled, w: Writer) -> None:
        self._notify(
            w, str(e.originator_id), "cancellation_scheduled", e.stripe_created,
            at_period_end=e.at_period_end, cancel_at=e.cancel_at,
        )  # fmt: skip

    @apply.register
    def _(self, e: Subscription.CancellationWithdrawn, w: Writer) -> None:
        self._notify(w, str(e.originator_id), "cancellation_withdrawn", e.stripe_created)

    @apply.register
    def _(self, e: Subscription.Ended, w: Writer) -> None:
        sid = str(e.originator_id)
        # Stripe's last word on a subscription also clears its cancellation: that is
        # no withdrawal to tell of.
        w.execute(
            "DELETE FROM {notifications} WHERE cursor >= :since AND cursor < :upto "
            "AND subscription_id = :id AND kind = 'cancellation_withdrawn' AND occurred_at = :t",
            id=sid,
            t=e.stripe_created,
            since=(w.position - 10) * SLOTS,  # one state's events are saved together
            upto=w.position * SLOTS,
        )
        self._notify(w, sid, "ended", e.stripe_created, status=e.status, ended_at=e.ended_at)
        w.execute(
            "UPDATE {notification_subscriptions} SET status = :status WHERE subscription_id = :id",
            id=sid,
            status=e.status,
        )
        if is_terminal(e.status):
            self._set_granting(w, sid, False, e.stripe_created, reason="ended")

    @apply.register
    def _(self, e: Subscription.LinkedToUser, w: Writer) -> None:
        params = {"id": str(e.originator_id), "user_id": e.user_id}
        w.execute(
            "UPDATE {notification_subscriptions} SET user_id = :user_id "
            "WHERE subscription_id = :id",
            **params,
        )
        w.execute(
            "UPDATE {notifications} SET user_id = :user_id "
            "WHERE subscription_id = :id AND user_id IS NULL",
            **params,
        )

    @apply.register
    def _(self, e: Invoice.Recorded, w: Writer) -> None:
        record_invoice(w, "notification_invoices", e)

    @apply.register
    def _(self, e: Invoice.PaymentFailed, w: Writer) -> None:
        """The grace counts from the first failed payment (as subscription_status does)."""
        which, params = invoice_subscription(w, "notification_invoices", str(e.originator_id))
        w.execute(
            "UPDATE {notification_subscriptions} SET past_due_since = "
            + past_due_since_sql()
            + f" WHERE {which}",
            t=e.stripe_created,
            **params,
        )

    @apply.register
    def _(self, e: Tick.Ticked, w: Writer) -> None:
        """The log's clock: warn a day before a payment grace ends; when it has
        ended, revoke the features."""
        due = w.query(
            "SELECT * FROM {notification_subscriptions} WHERE granting = 1 AND status = :past_due "
            "AND past_due_since IS NOT NULL AND past_due_since + grace_days * :day - :day <= :at "
            "ORDER BY user_id, subscription_id",
            past_due=str(Status.PAST_DUE),
            day=DAY,
            at=e.at,
        )
        for row in due:
            ends = row["past_due_since"] + row["grace_days"] * DAY
            if e.at >= ends:
                self._set_granting(w, row["subscription_id"], False, e.at, reason="grace_ended")
            elif not row["grace_warned"]:
                sid = row["subscription_id"]
                self._notify(w, sid, "payment_grace_ending", e.at, grace_ends_at=ends)
                w.execute(
                    "UPDATE {notification_subscriptions} SET grace_warned = 1 "
                    "WHERE subscription_id = :id",
                    id=row["subscription_id"],
                )

    # --- who to write to -----------------------------------------------------------

    @apply.register
    def _(self, e: Customer.Registered, w: Writer) -> None:
        w.execute(
            "INSERT INTO {notification_contacts} (customer_id, position) VALUES (:id, :position)",
            id=str(e.originator_id),
            position=w.position,
        )

    @apply.register
    def _(self, e: Customer.DetailsChanged, w: Writer) -> None:
        w.update(
            "notification_contacts", "customer_id", e.originator_id, "email = :email",
            email=e.email,
        )  # fmt: skip

    @apply.register
    def _(self, e: Customer.LinkedToUser, w: Writer) -> None:
        w.update(
            "notification_contacts", "customer_id", e.originator_id, "user_id = :user_id",
            user_id=e.user_id,
        )  # fmt: skip


def notifications_of(
    c: Cursor, user_id: str, after: int = 0, limit: int = 100
) -> list[dict[str, Any]]:
    rows = c.query(
        "SELECT cursor, kind, stripe_subscription_id, occurred_at, detail FROM notifications "
        "WHERE user_id = :user_id AND cursor > :after ORDER BY cursor LIMIT :limit",
        {"user_id": user_id, "after": after, "limit": limit},
    )
    return [{**row, "detail": json.loads(row["detail"])} for row in rows]


def notifications_after(c: Cursor, after: int, limit: int = 500) -> list[dict[str, Any]]:
    """Every user's notifications after a cursor, in cursor order (what the stream's
    fan-out and the email outbox follow), with the user's email where one is known.
    About `limit` of them, but never part of a cursor's: a clock tick gives many
    users a notification at the same cursor, and a follower moves cursor by cursor."""
    params = {"after": after, "skip": limit - 1}
    bound = c.query(
        "SELECT cursor FROM notifications WHERE cursor > :after AND user_id IS NOT NULL "
        "ORDER BY cursor LIMIT 1 OFFSET :skip",
        params,
    )
    upto = "AND n.cursor <= :upto " if bound else ""
    rows = c.query(
        "SELECT n.cursor, n.user_id, n.kind, n.stripe_subscription_id, n.occurred_at, n.detail, "
        "(SELECT email FROM notification_contacts k WHERE k.user_id = n.user_id AND "
        "k.email IS NOT NULL ORDER BY k.position DESC LIMIT 1) AS email "
        f"FROM notifications n WHERE n.cursor > :after AND n.user_id IS NOT NULL {upto}"
        "ORDER BY n.cursor, n.subscription_id",
        {**params, "upto": bound[0]["cursor"] if bound else None},
    )
    return [{**row, "detail": json.loads(row["detail"])} for row in rows]


def last_cursor(c: Cursor) -> int:
    rows = c.query("SELECT MAX(cursor) AS last FROM notifications", {})
    return rows[0]["last"] or 0


def emails_of(c: Cursor, user_ids: list[str]) -> dict[str, str]:
    """The email address last known of each of these users (those with one)."""
    found: dict[str, str] = {}
    for user_id in dict.fromkeys(user_ids):
        rows = c.query(
            "SELECT email FROM notification_contacts WHERE user_id = :user_id AND "
            "email IS NOT NULL ORDER BY position DESC LIMIT 1",
            {"user_id": user_id},
        )
        if rows:
            found[user_id] = rows[0]["email"]
    return found
