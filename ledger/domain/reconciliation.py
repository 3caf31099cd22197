"""One run of `ledger reconcile`: what it compared, the drift it found, what it fixed."""

from __future__ import annotations

from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from ledger.domain.ids import NAMESPACE


class Reconciliation(Aggregate):
    class Ran(Aggregate.Created):
        TOPIC = "ledger.reconciliation:Reconciliation.Ran"
        run_id: str
        fetched_at: int  # unix seconds: when the first list page was asked for
        finished_at: int
        subscriptions: int  # listed at Stripe
        customers: int
        drift: dict[str, int]  # differences found, by field ("missing", "unknown_to_stripe", ...)
        fixed: int  # objects corrected by ReconciledFromStripe events (0 without --fix)
        fixing: bool

    @event(Ran)
    def __init__(
        self,
        run_id: str,
        fetched_at: int,
        finished_at: int,
        subscriptions: int,
        customers: int,
        drift: dict[str, int],
        fixed: int,
        fixing: bool,
    ) -> None:
        self.run_id = run_id
        self.drift = dict(drift)
        self.fixed = fixed

    @staticmethod
    def create_id(run_id: str) -> UUID:
        return uuid5(NAMESPACE, f"reconciliation:{run_id}")

    # Its name in the log, and the library's default created event's (unused).
    TOPIC = "ledger.reconciliation:Reconciliation"

    class Created(Aggregate.Created):
        TOPIC = "ledger.reconciliation:Reconciliation.Created"
