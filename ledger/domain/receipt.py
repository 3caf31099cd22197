"""A receipt for each Stripe delivery: the raw body, byte for byte, and what became of it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.domain.ids import stripe_uuid


class Source(StrEnum):
    """How a Stripe event reached the log."""

    WEBHOOK = "webhook"  # delivered to our endpoint
    BACKFILL = "backfill"  # fetched from Stripe's events list (`ledger backfill`)


class Outcome(StrEnum):
    APPLIED = "applied"  # changed at least one aggregate
    UNCHANGED = "unchanged"  # newest state already held: nothing to change
    SUPERSEDED = "superseded"  # older than the state already held
    IGNORED = "ignored"  # a type the ledger does not handle
    FAILED = "failed"  # processing raised; will be retried
    DEAD = "dead"  # retries exhausted; waits for an operator


class Receipt(Aggregate):
    class Received(Aggregate.Created):
        TOPIC = "ledger.receipt:Receipt.Received"
        stripe_event_id: str
        event_type: str
        stripe_created: int
        api_version: str | None
        livemode: bool
        payload: str  # the delivery's body, exactly as signed (or as Stripe's list gave it)
        source: str  # Source: webhook or backfill
        signature_time: int | None = None  # its Stripe-Signature's t= (None before it was kept)

        # Version 1 (before backfill) had no source: every receipt was a webhook's.
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict) -> None:
            state["source"] = Source.WEBHOOK.value

    class Processed(Aggregate.Event):
        TOPIC = "ledger.receipt:Receipt.Processed"
        outcome: str
        detail: str

    class AttemptFailed(Aggregate.Event):
        TOPIC = "ledger.receipt:Receipt.AttemptFailed"
        attempt: int
        error: str
        retry_at: float | None  # unix time of the next try; None once dead

    class DeadLettered(Aggregate.Event):
        TOPIC = "ledger.receipt:Receipt.DeadLettered"
        attempts: int
        error: str

    @event(Received)
    def __init__(
        self,
        stripe_event_id: str,
        event_type: str,
        stripe_created: int,
        api_version: str | None,
        livemode: bool,
        payload: str,
        source: str = Source.WEBHOOK.value,
        signature_time: int | None = None,
    ) -> None:
        self.stripe_event_id = stripe_event_id
        self.event_type = event_type
        self.stripe_created = stripe_created
        self.api_version = api_version
        self.livemode = livemode
        self.payload = payload
        self.source = Source(source)
        self.signature_time = signature_time
        self.outcome: Outcome | None = None
        self.attempts = 0
        self.last_error = ""
        self.retry_at: float | None = None

    @staticmethod
    def create_id(stripe_event_id: str) -> UUID:
        return stripe_uuid("event", stripe_event_id)

    @property
    def is_settled(self) -> bool:
        """Processed for good (any outcome but failed or dead)."""
        return self.outcome not in (None, Outcome.FAILED, Outcome.DEAD)

    @property
    def is_dead(self) -> bool:
        return self.outcome is Outcome.DEAD

    def settle(self, outcome: Outcome, detail: str = "") -> None:
        if self.is_settled:
            return
        self._processed(outcome.value, detail[:500])

    def fail(self, error: str, *, max_attempts: int, base_delay: float, now: float) -> None:
        """Record a failed attempt; after the last one the receipt is dead."""
        attempt = self.attempts + 1
        retry_at = None if attempt >= max_attempts else now + base_delay * 4 ** (attempt - 1)
        self._attempt_failed(attempt, error[:500], retry_at)
        if retry_at is None:
            self._dead_lettered(attempt, error[:500])

    @event(Processed)
    def _processed(self, outcome: str, detail: str) -> None:
        self.outcome = Outcome(outcome)
        self.retry_at = None

    @event(AttemptFailed)
    def _attempt_failed(self, attempt: int, error: str, retry_at: float | None) -> None:
        self.attempts = attempt
        self.last_error = error
        self.retry_at = retry_at
        self.outcome = Outcome.FAILED

    @event(DeadLettered)
    def _dead_lettered(self, attempts: int, error: str) -> None:
        self.outcome = Outcome.DEAD

    # Its name in the log, and the library's default created event's (unused).
    TOPIC = "ledger.receipt:Receipt"

    class Created(Aggregate.Created):
        TOPIC = "ledger.receipt:Receipt.Created"


@dataclass(frozen=True)
class Delivery:
    """A verified Stripe delivery, ready to be recorded."""

    stripe_event_id: str
    event_type: str
    stripe_created: int
    api_version: str | None
    livemode: bool
    payload: str
    source: Source = Source.WEBHOOK
    signature_time: int | None = None
    data_subject: str | None = None  # the Stripe customer the body is about (its key's)

    @cached_property
    def aggregate_id(self) -> UUID:
        return Receipt.create_id(self.stripe_event_id)

    def with_payload(self, payload: str) -> Delivery:
        """This delivery with another body (its body encrypted): a copy of its
        fields, as `dataclasses.replace` would make at twice the cost, on the ingest path."""
        copied = object.__new__(type(self))
        fields = vars(copied)
        fields.update(vars(self))
        fields["payload"] = payload
        return copied

    def new_aggregate(self) -> Receipt:
        return self.receipt()

    def receipt(self) -> Receipt:
        return Receipt(
            stripe_event_id=self.stripe_event_id,
            event_type=self.event_type,
            stripe_created=self.stripe_created,
            api_version=self.api_version,
            livemode=self.livemode,
            payload=self.payload,
            source=self.source.value,
            signature_time=self.signature_time,
        )
