"""Per user: a row for each change the user should be told about, with a
monotonically increasing cursor (the event's position in the log)."""

from __future__ import annotations

import json
from functools import singledispatchmethod
from typing import Any

from ledger.domain.status import is_delinquent, is_live
from ledger.domain.subscription import Subscription
from projections.base import SqlProjection, Writer
from projections.store import Cursor


class NotificationsProjection(SqlProjection):
    name = "notifications"
    tables = {
        "notifications": (
            "cursor BIGINT PRIMARY KEY, user_id TEXT, subscription_id TEXT NOT NULL, "
            "stripe_subscription_id TEXT NOT NULL, kind TEXT NOT NULL, "
            "occurred_at BIGINT NOT NULL, detail TEXT NOT NULL"
        ),
        "notification_subscriptions": (
            "subscription_id TEXT PRIMARY KEY, stripe_subscription_id TEXT NOT NULL, "
            "user_id TEXT, current_period_start BIGINT"
        ),
    }
    indexes = {
        "notifications_user": "{notifications} (user_id, cursor)",
        # for linking a subscription's earlier notifications to its user: only the
        # rows still without one are in it, so it costs the other inserts nothing
        "notifications_unlinked": "{notifications} (subscription_id) WHERE user_id IS NULL",
    }

    def _notify(self, w: Writer, e: Any, kind: str, only_if: str = "", **detail: Any) -> None:
        w.execute(
            "INSERT INTO {notifications} (cursor, user_id, subscription_id, "
            "stripe_subscription_id, kind, occurred_at, detail) SELECT :cursor, user_id, "
            "subscription_id, stripe_subscription_id, :kind, :t, :detail "
            "FROM {notification_subscriptions} WHERE subscription_id = :id" + only_if,
            cursor=w.position,
            id=str(e.originator_id),
            kind=kind,
            t=e.stripe_created,
            detail=json.dumps(detail, sort_keys=True),
            **detail,
        )

    @singledispatchmethod
    def apply(self, event: Any, w: Writer) -> None:
        """Events of no interest change nothing."""

    @apply.register
    def _(self, e: Subscription.Started, w: Writer) -> None:
        w.execute(
            "INSERT INTO {notification_subscriptions} (subscription_id, "
            "stripe_subscription_id, user_id, current_period_start) "
            "VALUES (:id, :sub, :user_id, :start)",
            id=str(e.originator_id),
            sub=e.stripe_subscription_id,
            user_id=e.user_id,
            start=e.current_period_start,
        )
        if is_live(e.status):
            self._notify(w, e, "activated", status=e.status)

    @apply.register
    def _(self, e: Subscription.StatusChanged, w: Writer) -> None:
        if is_live(e.status) and is_delinquent(e.previous_status):
            self._notify(w, e, "payment_recovered", status=e.status)
        elif is_live(e.status) and not is_live(e.previous_status):
            self._notify(w, e, "activated", status=e.status)
        elif is_delinquent(e.status):
            self._notify(w, e, "payment_failed", status=e.status)

    @apply.register
    def _(self, e: Subscription.PeriodChanged, w: Writer) -> None:
        """A renewal is a period that starts later than the one held."""
        if e.current_period_start is None:
            return
        self._notify(
            w,
            e,
            "renewed",
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
        self._notify(w, e, "trial_ending", trial_end=e.trial_end)

    @apply.register
    def _(self, e: Subscription.CancellationScheduled, w: Writer) -> None:
        self._notify(
            w, e, "cancellation_scheduled", at_period_end=e.at_period_end, cancel_at=e.cancel_at
        )

    @apply.register
    def _(self, e: Subscription.Ended, w: Writer) -> None:
        self._notify(w, e, "ended", status=e.status, ended_at=e.ended_at)

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


def notifications_of(
    c: Cursor, user_id: str, after: int = 0, limit: int = 100
) -> list[dict[str, Any]]:
    rows = c.query(
        "SELECT cursor, kind, stripe_subscription_id, occurred_at, detail FROM notifications "
        "WHERE user_id = :user_id AND cursor > :after ORDER BY cursor LIMIT :limit",
        {"user_id": user_id, "after": after, "limit": limit},
    )
    return [{**row, "detail": json.loads(row["detail"])} for row in rows]
