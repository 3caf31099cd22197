"""A subscription, following the newest state Stripe has told us of."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.domain.cause import Cause
from ledger.domain.facts import assign, takes_fields_of, values_of
from ledger.domain.ids import stripe_uuid
from ledger.domain.money import Price
from ledger.domain.status import is_terminal


@dataclass(frozen=True)
class SubscriptionTerms:
    """A subscription as Stripe describes it while it runs: whose, its status,
    price, period, cancellation and trial. What Subscription.Started records."""

    stripe_subscription_id: str
    stripe_customer_id: str
    user_id: str | None
    status: str
    price: Price | None
    current_period_start: int | None
    current_period_end: int | None
    cancel_at_period_end: bool
    cancel_at: int | None
    trial_end: int | None


@dataclass(frozen=True)
class SubscriptionState(SubscriptionTerms):
    """What Stripe said a subscription was, in our words: its terms, and when it
    ended."""

    ended_at: int | None


class Subscription(Aggregate):
    class Started(SubscriptionTerms, Aggregate.Created):
        TOPIC = "ledger.subscription:Subscription.Started"
        stripe_event_id: str
        stripe_created: int

    class StatusChanged(Aggregate.Event):
        TOPIC = "ledger.subscription:Subscription.StatusChanged"
        status: str
        previous_status: str
        stripe_event_id: str
        stripe_created: int

    class PlanChanged(Aggregate.Event):
        TOPIC = "ledger.subscription:Subscription.PlanChanged"
        price: Price | None
        previous_price: Price | None
        stripe_event_id: str
        stripe_created: int

    class PeriodChanged(Aggregate.Event):
        TOPIC = "ledger.subscription:Subscription.PeriodChanged"
        current_period_start: int | None
        current_period_end: int | None
        stripe_event_id: str
        stripe_created: int

    class TrialChanged(Aggregate.Event):
        TOPIC = "ledger.subscription:Subscription.TrialChanged"
        trial_end: int | None
        stripe_event_id: str
        stripe_created: int

    class CancellationScheduled(Aggregate.Event):
        TOPIC = "ledger.subscription:Subscription.CancellationScheduled"
        at_period_end: bool  # ends when the current period does
        cancel_at: int | None  # or at this time (None with at_period_end)
        stripe_event_id: str
        stripe_created: int

    class CancellationWithdrawn(Aggregate.Event):
        TOPIC = "ledger.subscription:Subscription.CancellationWithdrawn"
        stripe_event_id: str
        stripe_created: int

    class TrialEndingSoon(Aggregate.Event):
        TOPIC = "ledger.subscription:Subscription.TrialEndingSoon"
        trial_end: int | None
        stripe_event_id: str
        stripe_created: int

    class Ended(Aggregate.Event):
        TOPIC = "ledger.subscription:Subscription.Ended"
        status: str
        ended_at: int | None
        stripe_event_id: str
        stripe_created: int

    class LinkedToUser(Aggregate.Event):
        TOPIC = "ledger.subscription:Subscription.LinkedToUser"
        user_id: str

    class StateConfirmed(Aggregate.Event):
        """A newer Stripe state that changed nothing: kept so that an older one,
        delivered later, is still recognised as older."""

        TOPIC = "ledger.subscription:Subscription.StateConfirmed"

        stripe_event_id: str
        stripe_created: int

    class ReconciledFromStripe(SubscriptionState, Aggregate.Event):
        """Stripe's subscription as `ledger reconcile --fix` fetched it (in our
        words), the fields where the ledger differed, and the run that fetched it:
        the changes recorded right after it carry the same cause."""

        TOPIC = "ledger.subscription:Subscription.ReconciledFromStripe"
        drifted: list[str]
        stripe_event_id: str  # the reconciliation run's cause id ("reconcile_...")
        stripe_created: int  # the fetch time, unix seconds

    @staticmethod
    def create_id(stripe_subscription_id: str) -> UUID:
        return stripe_uuid("subscription", stripe_subscription_id)

    @event(Started)
    @takes_fields_of(Started)
    def __init__(self, **started: Any) -> None:
        assign(self, SubscriptionTerms, started)
        self.ended_at: int | None = None
        self.trial_warned_for: tuple[int | None] | None = None
        self.last_cause = Cause(started["stripe_created"], started["stripe_event_id"])

    @classmethod
    def start(cls, state: SubscriptionState, cause: Cause) -> Subscription:
        subscription = cls(
            **values_of(state, SubscriptionTerms),
            stripe_event_id=cause.stripe_event_id,
            stripe_created=cause.stripe_created,
        )
        if is_terminal(state.status):
            subscription._ended(state.status, state.ended_at, *_cause_args(cause))
        return subscription

    @classmethod
    def discover(cls, state: SubscriptionState, cause: Cause) -> Subscription:
        """A subscription the ledger never heard of, found by a reconciliation:
        started from Stripe's state as fetched, and marked as found that way."""
        subscription = cls.start(state, cause)
        subscription._reconciled_from_stripe(  # noqa: SLF001 (its own class's event)
            **values_of(state, SubscriptionState), drifted=["missing"], **_cause_kwargs(cause)
        )
        return subscription

    # --- commands: decide, then record -------------------------------------------

    @property
    def is_ended(self) -> bool:
        return is_terminal(self.status)

    def accepts(self, cause: Cause) -> bool:
        """Whether a Stripe state caused by `cause` is newer than the one held."""
        return not self.is_ended and cause.newer_than(self.last_cause)

    def apply_state(self, state: SubscriptionState, cause: Cause) -> bool:
        """Follow Stripe's newer state; False when it is older (superseded) or we
        are ended. Records one event for each thing that changed."""
        if not self.accepts(cause):
            return False
        args = _cause_args(cause)
        before = self.version
        if state.price != self.price:
            self._plan_changed(state.price, self.price, *args)
        if (state.current_period_start, state.current_period_end) != (
            self.current_period_start,
            self.current_period_end,
        ):
            self._period_changed(state.current_period_start, state.current_period_end, *args)
        if state.trial_end != self.trial_end:
            self._trial_changed(state.trial_end, *args)
        scheduled = state.cancel_at_period_end or state.cancel_at is not None
        if scheduled and (state.cancel_at_period_end, state.cancel_at) != (
            self.cancel_at_period_end,
            self.cancel_at,
        ):
            self._cancellation_scheduled(state.cancel_at_period_end, state.cancel_at, *args)
        elif not scheduled and self.cancellation_scheduled:
            self._cancellation_withdrawn(*args)
        if is_terminal(state.status):
            self._ended(state.status, state.ended_at, *args)
        elif state.status != self.status:
            self._status_changed(state.status, self.status, *args)
        if self.version == before:
            self._state_confirmed(*args)
        return True

    def reconcile(self, state: SubscriptionState, drifted: list[str], cause: Cause) -> bool:
        """Follow Stripe's state as fetched at `cause` (a reconciliation): record
        what was fetched and why, then the changes, under the same watermark rule
        as a webhook. False when the ledger holds a newer state, or an ended one."""
        if not self.accepts(cause):
            return False
        self._reconciled_from_stripe(
            **values_of(state, SubscriptionState), drifted=list(drifted), **_cause_kwargs(cause)
        )
        return self.apply_state(state, cause)

    def warn_trial_ending(self, trial_end: int | None, cause: Cause) -> bool:
        if self.is_ended or self.trial_warned_for == (trial_end,):
            return False
        self._trial_ending_soon(trial_end, *_cause_args(cause))
        return True

    def link_to_user(self, user_id: str) -> bool:
        if self.user_id is not None:
            return False
        self._linked_to_user(user_id)
        return True

    @property
    def cancellation_scheduled(self) -> bool:
        return self.cancel_at_period_end or self.cancel_at is not None

    # --- events: only assign -------------------------------------------------------

    def _remember(self, stripe_event_id: str, stripe_created: int) -> None:
        self.last_cause = Cause(stripe_created, stripe_event_id)

    @event(PlanChanged)
    def _plan_changed(self, price, previous_price, stripe_event_id, stripe_created) -> None:
        self.price = price
        self._remember(stripe_event_id, stripe_created)

    @event(PeriodChanged)
    def _period_changed(
        self, current_period_start, current_period_end, stripe_event_id, stripe_created
    ) -> None:
        self.current_period_start = current_period_start
        self.current_period_end = current_period_end
        self._remember(stripe_event_id, stripe_created)

    @event(TrialChanged)
    def _trial_changed(self, trial_end, stripe_event_id, stripe_created) -> None:
        self.trial_end = trial_end
        self._remember(stripe_event_id, stripe_created)

    @event(CancellationScheduled)
    def _cancellation_scheduled(
        self, at_period_end, cancel_at, stripe_event_id, stripe_created
    ) -> None:
        self.cancel_at_period_end = at_period_end
        self.cancel_at = cancel_at
        self._remember(stripe_event_id, stripe_created)

    @event(CancellationWithdrawn)
    def _cancellation_withdrawn(self, stripe_event_id, stripe_created) -> None:
        self.cancel_at_period_end = False
        self.cancel_at = None
        self._remember(stripe_event_id, stripe_created)

    @event(StatusChanged)
    def _status_changed(self, status, previous_status, stripe_event_id, stripe_created) -> None:
        self.status = status
        self._remember(stripe_event_id, stripe_created)

    @event(Ended)
    def _ended(self, status, ended_at, stripe_event_id, stripe_created) -> None:
        self.status = status
        self.ended_at = ended_at
        self._remember(stripe_event_id, stripe_created)

    @event(TrialEndingSoon)
    def _trial_ending_soon(self, trial_end, stripe_event_id, stripe_created) -> None:
        self.trial_warned_for = (trial_end,)

    @event(LinkedToUser)
    def _linked_to_user(self, user_id) -> None:
        self.user_id = user_id

    @event(ReconciledFromStripe)
    @takes_fields_of(ReconciledFromStripe)
    def _reconciled_from_stripe(self, **fetched: Any) -> None:
        pass  # the changes follow as events of their own

    @event(StateConfirmed)
    def _state_confirmed(self, stripe_event_id, stripe_created) -> None:
        self._remember(stripe_event_id, stripe_created)

    # Its name in the log, and the library's default created event's (unused).
    TOPIC = "ledger.subscription:Subscription"

    class Created(Aggregate.Created):
        TOPIC = "ledger.subscription:Subscription.Created"


def _cause_args(cause: Cause) -> tuple[str, int]:
    return cause.stripe_event_id, cause.stripe_created


def _cause_kwargs(cause: Cause) -> dict[str, Any]:
    return {"stripe_event_id": cause.stripe_event_id, "stripe_created": cause.stripe_created}
