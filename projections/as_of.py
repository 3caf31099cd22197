""" "As of" answers: what the ledger knew of a user at a moment, by folding the
log up to that moment into a scratch store with the same projection code (not
by reading the live tables). Only the events of the user's own aggregates are
folded: the ownership projection says which they are (and a scan of the log's
few ownership events past its position, so a lagging index misses nothing), and
only their events are read, through the log's (originator id, version) key."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from ledger.application import Ledger
from ledger.domain.catalog import Catalog
from ledger.domain.customer import Customer
from ledger.domain.invoice import Invoice
from ledger.domain.subscription import Subscription
from projections.entitlements import EntitlementsProjection, entitlements_of
from projections.invoice_history import InvoiceHistoryProjection, invoices_of
from projections.runner import Catchup, apply_batch
from projections.store import ViewStore
from projections.subscription_status import SubscriptionStatusProjection, current_subscription

BATCH = 5000
Owners = Callable[[str], tuple[set[UUID], int]]  # user -> (aggregates, index position)


def parse_instant(text: str) -> datetime:
    """An ISO 8601 time with a zone (`Z` allowed), in UTC."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text[:40]!r}") from None
    if moment.tzinfo is None:
        raise ValueError("the time needs a zone, e.g. 2026-01-31T12:00:00Z")
    return moment.astimezone(UTC)


def replay_user(
    ledger: Ledger,
    catalog: Catalog,
    user_id: str,
    as_of: datetime,
    owners: Owners | None = None,
) -> dict[str, Any]:
    """`owners`: the ownership index (ReadSide.owners); without it, the user's
    aggregates are found by scanning the whole log's ownership events."""
    store = ViewStore(memory=True)
    try:
        projections = [
            cls(store, catalog)
            for cls in (
                SubscriptionStatusProjection,
                EntitlementsProjection,
                InvoiceHistoryProjection,
            )
        ]
        Catchup(ledger, projections)  # creates their tables
        topics = sorted({t for p in projections for t in p.topics})
        if owners is None:
            mine = aggregates_of(ledger, user_id, as_of)
            batches = _batches(ledger, topics, as_of, only=mine)
        else:
            mine = user_aggregates(ledger, user_id, as_of, owners)
            batches = iter([_events_of(ledger, mine, topics, as_of)])
        last_applied = 0
        for known in batches:
            if known:
                for projection in projections:
                    apply_batch(projection, known, known[-1][0], generation=1)
                last_applied = known[-1][0]
        now = as_of.timestamp()
        with store.transaction(commit=False) as c:
            status = current_subscription(c, user_id, now, catalog.free_tier)
            entitlements = entitlements_of(c, catalog, user_id, now)
            invoices = invoices_of(c, user_id)
        return {
            "user_id": user_id,
            "as_of": as_of.isoformat(),
            "position": last_applied,
            "subscription": status,
            "entitlements": entitlements,
            "invoices": invoices,
        }
    finally:
        store.close()


def user_aggregates(ledger: Ledger, user_id: str, as_of: datetime, owners: Owners) -> set[UUID]:
    """The user's aggregates from the ownership index, and from the log past the
    index's position; when the index lags behind this user's newest links (rare:
    a few events), from the whole log."""
    indexed, position = owners(user_id)
    mine = indexed | aggregates_of(ledger, user_id, as_of, after=position, known=indexed)
    if mine - indexed:
        return indexed | aggregates_of(ledger, user_id, as_of)
    return mine


def aggregates_of(
    ledger: Ledger,
    user_id: str,
    as_of: datetime,
    after: int = 0,
    known: set[UUID] | frozenset[UUID] = frozenset(),
) -> set[UUID]:
    """The aggregates whose events can change this user's rows, as of `as_of`:
    subscriptions started for or linked to the user, customers linked to the user,
    and the invoices of either. (More would do no harm; fewer would.) With `after`,
    only the log past that position is scanned, and `known` are the user's
    aggregates found before it."""
    customers: set[UUID] = set(known)
    subscriptions: set[UUID] = set(known)
    invoices: list[Invoice.Recorded] = []
    topics = [
        get_topic(t)
        for t in (
            Customer.LinkedToUser,
            Subscription.Started,
            Subscription.LinkedToUser,
            Invoice.Recorded,
        )
    ]
    for events in _batches(ledger, topics, as_of, start=after):
        for _, e in events:
            if isinstance(e, Invoice.Recorded):
                invoices.append(e)
            elif getattr(e, "user_id", None) != user_id:
                continue
            elif isinstance(e, Customer.LinkedToUser):
                customers.add(e.originator_id)
            else:
                subscriptions.add(e.originator_id)
    theirs = {
        i.originator_id
        for i in invoices
        if Customer.create_id(i.stripe_customer_id) in customers
        or (
            i.stripe_subscription_id is not None
            and Subscription.create_id(i.stripe_subscription_id) in subscriptions
        )
    }
    return customers | subscriptions | theirs


def _events_of(
    ledger: Ledger, ids: set[UUID], topics: Sequence[str], as_of: datetime
) -> list[tuple[int, Any]]:
    """The events of `topics` of the aggregates `ids` recorded at or before `as_of`,
    in log order, read through the log's key (not a scan of the log)."""
    wanted = set(topics)
    notifications = ledger.recorder.notifications_of(ids)  # type: ignore[attr-defined]
    events = [(n.id, ledger.mapper.to_domain_event(n)) for n in notifications if n.topic in wanted]
    return [(i, e) for i, e in events if e.timestamp <= as_of]


def _batches(
    ledger: Ledger,
    topics: Sequence[str],
    as_of: datetime,
    only: set[UUID] | None = None,
    start: int = 0,
) -> Iterator[list[tuple[int, Any]]]:
    """The log's events of `topics` (and of the aggregates `only`) recorded at or
    before `as_of`, in log order; the others are not even decoded."""
    position = start
    while True:
        notifications = ledger.recorder.select_notifications(
            start=position + 1, limit=BATCH, topics=topics
        )
        events = [
            (n.id, ledger.mapper.to_domain_event(n))
            for n in notifications
            if only is None or n.originator_id in only
        ]
        yield [(i, e) for i, e in events if e.timestamp <= as_of]
        if len(notifications) < BATCH:
            return
        position = notifications[-1].id
