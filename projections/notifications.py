"""Per user: a row for each change the user should be told about, with a
cursor that only grows (from the event's position in the log), and the
provisioning feed (features_granted / features_revoked).

Time passing (a payment grace ending) is read from the log's own clock ticks
(`Tick.Ticked`, recorded by stage two), never from the wall clock: a rebuild
sees the same ticks in the same places and writes the same rows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import singledispatchmethod
from typing import Any

from ledger.domain.clock import Tick
from ledger.domain.customer import Customer
from ledger.domain.ids import id_text
from ledger.domain.invoice import Invoice
from ledger.domain.money import Price
from ledger.domain.status import DAY, Status, is_delinquent, is_live, is_terminal
from ledger.domain.subscription import Subscription
from projections.activity import earlier, failed_subscription, record_invoice, subscriptions_of
from projections.base import Held, SqlProjection, Writer
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
_HELD = "notifications:held"  # the run's rows, in `Writer.memo`

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

    def apply_all(self, events: Sequence[tuple[int, Any]], w: Writer) -> None:
        """The batch folded in memory (`_fold`), in runs each starting at a clock
        tick: a tick asks which rows are due, so what came before it is written
        first."""
        start = 0
        for i in range(1, len(events) + 1):
            if i == len(events) or type(events[i][1]) is Tick.Ticked:
                self._fold(events[start:i], w)
                start = i

    def _fold(self, events: Sequence[tuple[int, Any]], w: Writer) -> None:
        """The rows of the run's subscriptions and customers' contacts read in one
        query each (and, for failed payments of invoices recorded before the
        batch, their subscriptions in another: `subscriptions_of`), changed in
        memory by the handlers, and written back with the notifications in one
        statement a table: a handful of statements a run instead of several an
        event, with the rows they would write one by one."""
        if not events:
            return
        held = w.memo[_HELD] = _Held(type(self))
        subs, held.invoices = subscriptions_of(w, "notification_invoices", events)
        held.subs.load(w, subs)
        changed = (Customer.DetailsChanged, Customer.LinkedToUser)
        held.contacts.load(w, {id_text(e.originator_id) for _, e in events if type(e) in changed})
        for position, event in events:
            w.position = position
            self.handler(type(event))(self, event, w)
        held.subs.write(w)
        w.insert_rows("notifications", held.told)
        held.contacts.write(w)
        del w.memo[_HELD]

    # --- helpers -------------------------------------------------------------------

    def _notify(
        self, w: Writer, subscription_id: str, kind: str, t: int, when: bool = True,
        **detail: Any,
    ) -> None:  # fmt: skip
        """One notification for the subscription's user, if it has a row (and
        `when`)."""
        self._tell(w, subscription_id, kind, t, when and _sorted_json(detail))

    def _tell(
        self, w: Writer, subscription_id: str, kind: str, t: int, detail: str | bool | None
    ) -> None:
        """The notification's row, with the subscription's user, if it has a row
        and a `detail`: its place among the event's is taken either way."""
        cursor = w.position * SLOTS + w.place(subscription_id)
        held: _Held = w.memo[_HELD]
        row = held.subs.rows.get(subscription_id)
        if row is None or not detail:
            return
        held.told.append(
            {
                "cursor": cursor,
                "user_id": row["user_id"],
                "subscription_id": subscription_id,
                "stripe_subscription_id": row["stripe_subscription_id"],
                "kind": kind,
                "occurred_at": t,
                "detail": detail,
            }
        )

    def _features(self, price: Price | None) -> tuple[str, list[str], int]:
        """(plan id, the features it grants beyond the free plan's, its grace days)"""
        plan, _, _ = self.catalog.resolve(price)
        free = set(self.catalog.free_plan.features)
        return plan.id, [f for f in plan.features if f not in free], plan.grace_days

    @staticmethod
    def _row(w: Writer, subscription_id: str, **values: Any) -> dict[str, Any] | None:
        """The subscription's row as the run holds it, `values` set, to be written."""
        return w.memo[_HELD].subs.change(subscription_id, **values)  # type: ignore[no-any-return]

    def _set_granting(
        self,
        w: Writer,
        subscription_id: str,
        granting: bool,
        t: int,
        unless: bool = False,
        reason: str | None = None,
    ) -> None:
        """Tell the provisioning feed when the subscription starts or stops granting
        its features (if it has any beyond the free plan's), and hold that it does
        (`unless`: nothing changes)."""
        row = w.memo[_HELD].subs.rows.get(subscription_id)
        turns = row is not None and row["granting"] == int(not granting) and not unless
        detail = None
        if turns and row["features"] != "[]":
            # as json.dumps(..., sort_keys=True) writes it: `features` is the list as
            # json.dumps wrote it
            tail = "}" if reason is None else f', "reason": {json.dumps(reason)}}}'
            detail = '{"features": ' + row["features"] + tail
        kind = "features_granted" if granting else "features_revoked"
        self._tell(w, subscription_id, kind, t, detail)
        if turns:
            self._row(w, subscription_id, granting=int(granting))

    # --- handlers ------------------------------------------------------------------

    @singledispatchmethod
    def apply(self, event: Any, w: Writer) -> None:
        """Events of no interest change nothing."""

    @apply.register
    def _(self, e: Subscription.Started, w: Writer) -> None:
        plan_id, features, grace_days = self._features(e.price)
        sid = id_text(e.originator_id)
        grants = is_live(e.status) or (e.status == Status.PAST_DUE and grace_days > 0)
        held: _Held = w.memo[_HELD]
        held.subs.add(
            {
                "subscription_id": sid,
                "stripe_subscription_id": e.stripe_subscription_id,
                "user_id": e.user_id,
                "current_period_start": e.current_period_start,
                "status": str(e.status),
                "plan_id": plan_id,
                "features": json.dumps(features),
                "grace_days": grace_days,
                "past_due_since": e.stripe_created if e.status == Status.PAST_DUE else None,
                "granting": int(grants),
                "grace_warned": 0,
            }
        )
        held.started.add(sid)
        if is_live(e.status):
            self._notify(w, sid, "activated", e.stripe_created, status=e.status)
        if grants and features:
            self._notify(w, sid, "features_granted", e.stripe_created, features=features)

    @apply.register
    def _(self, e: Subscription.StatusChanged, w: Writer) -> None:
        sid, t = id_text(e.originator_id), e.stripe_created
        if is_live(e.status) and is_delinquent(e.previous_status):
            self._notify(w, sid, "payment_recovered", t, status=e.status)
        elif is_live(e.status) and not is_live(e.previous_status):
            self._notify(w, sid, "activated", t, status=e.status)
        elif is_delinquent(e.status):
            self._notify(w, sid, "payment_failed", t, status=e.status)
        row = self._row(w, sid)
        if row is not None:
            row["status"] = str(e.status)
            if e.status == Status.PAST_DUE:
                row["past_due_since"] = earlier(row["past_due_since"], t)
            elif is_live(e.status):
                row["past_due_since"] = None
                row["grace_warned"] = 0
        if is_live(e.status):
            self._set_granting(w, sid, True, t)
        elif e.status == Status.PAST_DUE:  # still granting within the grace, told by the ticks
            grace = row is not None and (row["grace_days"] or 0) > 0
            self._set_granting(w, sid, False, t, grace, reason="grace_ended")
        else:
            self._set_granting(w, sid, False, t, reason="inactive")

    @apply.register
    def _(self, e: Subscription.PlanChanged, w: Writer) -> None:
        sid, t = id_text(e.originator_id), e.stripe_created
        row = self._row(w, sid)
        if row is None:
            return
        plan_id, features, grace_days = self._features(e.price)
        self._notify(
            w, sid, "plan_changed", t, plan_id=plan_id, previous_plan_id=row["plan_id"],
            price_id=e.price.stripe_price_id if e.price else None,
        )  # fmt: skip
        if row["granting"]:
            had = json.loads(row["features"])
            added = [f for f in features if f not in had]
            removed = [f for f in had if f not in features]
            if added:
                self._notify(w, sid, "features_granted", t, features=added)
            if removed:
                self._notify(w, sid, "features_revoked", t, features=removed, reason="plan_changed")
        row.update(plan_id=plan_id, features=json.dumps(features), grace_days=grace_days)

    @apply.register
    def _(self, e: Subscription.PeriodChanged, w: Writer) -> None:
        """A renewal is a period that starts later than the one held."""
        start = e.current_period_start
        if start is None:
            return
        sid = id_text(e.originator_id)
        row = self._row(w, sid)
        held = None if row is None else row["current_period_start"]
        self._notify(
            w, sid, "renewed", e.stripe_created, held is None or held < start,
            current_period_start=start, current_period_end=e.current_period_end,
        )  # fmt: skip
        if row is not None:
            row["current_period_start"] = start

    @apply.register
    def _(self, e: Subscription.TrialEndingSoon, w: Writer) -> None:
        sid = id_text(e.originator_id)
        self._notify(w, sid, "trial_ending", e.stripe_created, trial_end=e.trial_end)

    @apply.register
    def _(self, e: Subscription.CancellationScheduled, w: Writer) -> None:
        self._notify(
            w, id_text(e.originator_id), "cancellation_scheduled", e.stripe_created,
            at_period_end=e.at_period_end, cancel_at=e.cancel_at,
        )  # fmt: skip

    @apply.register
    def _(self, e: Subscription.CancellationWithdrawn, w: Writer) -> None:
        self._notify(w, id_text(e.originator_id), "cancellation_withdrawn", e.stripe_created)

    @apply.register
    def _(self, e: Subscription.Ended, w: Writer) -> None:
        sid, t = id_text(e.originator_id), e.stripe_created
        # Stripe's last word on a subscription also clears its cancellation: that is
        # no withdrawal to tell of (one state's events are saved together).
        since, upto = (w.position - 10) * SLOTS, w.position * SLOTS
        held: _Held = w.memo[_HELD]
        held.told = [
            n for n in held.told
            if not (since <= n["cursor"] < upto and n["subscription_id"] == sid
                    and n["kind"] == "cancellation_withdrawn" and n["occurred_at"] == t)
        ]  # fmt: skip
        w.execute(
            "DELETE FROM {notifications} WHERE cursor >= :since AND cursor < :upto "
            "AND subscription_id = :id AND kind = 'cancellation_withdrawn' AND occurred_at = :t",
            id=sid,
            t=t,
            since=since,
            upto=upto,
        )
        self._notify(w, sid, "ended", t, status=e.status, ended_at=e.ended_at)
        row = self._row(w, sid)
        if row is not None:
            row["status"] = str(e.status)
        if is_terminal(e.status):
            self._set_granting(w, sid, False, t, reason="ended")

    @apply.register
    def _(self, e: Subscription.LinkedToUser, w: Writer) -> None:
        """The subscription's notifications so far are its user's too: those held,
        and those written before, if the subscription has been known before."""
        sid = id_text(e.originator_id)
        row = self._row(w, sid)
        if row is None:
            return
        row["user_id"] = e.user_id
        held: _Held = w.memo[_HELD]
        for n in held.told:
            if n["subscription_id"] == sid and n["user_id"] is None:
                n["user_id"] = e.user_id
        if sid not in held.started:
            w.execute(
                "UPDATE {notifications} SET user_id = :user_id "
                "WHERE subscription_id = :id AND user_id IS NULL",
                id=sid,
                user_id=e.user_id,
            )

    @apply.register
    def _(self, e: Invoice.Recorded, w: Writer) -> None:
        record_invoice(w, "notification_invoices", e)

    @apply.register
    def _(self, e: Invoice.PaymentFailed, w: Writer) -> None:
        """The grace counts from the first failed payment (as subscription_status does)."""
        held: _Held = w.memo[_HELD]
        sid = failed_subscription(
            w, "notification_invoices", id_text(e.originator_id), held.invoices
        )
        row = None if sid is None else self._row(w, sid)
        if row is not None:
            row["past_due_since"] = earlier(row["past_due_since"], e.stripe_created)

    @apply.register
    def _(self, e: Tick.Ticked, w: Writer) -> None:
        """The log's clock: warn a day before a payment grace ends; when it has
        ended, revoke the features. (A tick starts its run: the rows it reads are
        all written.)"""
        held: _Held = w.memo[_HELD]
        due = w.query(
            "SELECT * FROM {notification_subscriptions} WHERE granting = 1 AND status = :past_due "
            "AND past_due_since IS NOT NULL AND past_due_since + grace_days * :day - :day <= :at "
            "ORDER BY user_id, subscription_id",
            past_due=str(Status.PAST_DUE),
            day=DAY,
            at=e.at,
        )
        for found in due:
            sid = found["subscription_id"]
            row = held.subs.rows.setdefault(sid, found)
            ends = row["past_due_since"] + row["grace_days"] * DAY
            if e.at >= ends:
                self._set_granting(w, sid, False, e.at, reason="grace_ended")
            elif not row["grace_warned"]:
                self._notify(w, sid, "payment_grace_ending", e.at, grace_ends_at=ends)
                self._row(w, sid, grace_warned=1)

    # --- who to write to -----------------------------------------------------------

    @apply.register
    def _(self, e: Customer.Registered, w: Writer) -> None:
        cid = id_text(e.originator_id)
        w.memo[_HELD].contacts.add(
            {"customer_id": cid, "user_id": None, "email": None, "position": w.position}
        )

    @apply.register
    def _(self, e: Customer.DetailsChanged, w: Writer) -> None:
        contacts = w.memo[_HELD].contacts
        contacts.change(id_text(e.originator_id), email=e.email, position=w.position)

    @apply.register
    def _(self, e: Customer.LinkedToUser, w: Writer) -> None:
        contacts = w.memo[_HELD].contacts
        contacts.change(id_text(e.originator_id), user_id=e.user_id, position=w.position)


class _Held:
    """A run's rows (`NotificationsProjection._fold`): the subscriptions', and
    which of them the run started; the invoices asked about; the notifications
    to write; the customers' contacts."""

    def __init__(self, projection: type[SqlProjection]) -> None:
        self.subs = Held(projection, "notification_subscriptions", "subscription_id")
        self.started: set[str] = set()
        self.invoices: dict[str, str] = {}
        self.told: list[dict[str, Any]] = []
        self.contacts = Held(projection, "notification_contacts", "customer_id")


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
