""" "As of" answers: what the ledger knew of a user at a moment, by folding the
log up to that moment into a scratch store with the same projection code (not
by reading the live tables)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ledger.application import Ledger
from ledger.plans import Catalog
from projections.entitlements import EntitlementsProjection, entitlements_of
from projections.invoice_history import InvoiceHistoryProjection, invoices_of
from projections.runner import Catchup, apply_batch
from projections.store import ViewStore
from projections.subscription_status import SubscriptionStatusProjection, current_subscription

BATCH = 5000


def parse_instant(text: str) -> datetime:
    """An ISO 8601 time with a zone (`Z` allowed), in UTC."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text[:40]!r}") from None
    if moment.tzinfo is None:
        raise ValueError("the time needs a zone, e.g. 2026-01-31T12:00:00Z")
    return moment.astimezone(UTC)


def replay_user(ledger: Ledger, catalog: Catalog, user_id: str, as_of: datetime) -> dict[str, Any]:
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
        position, last_applied = 0, 0
        while True:
            notifications = ledger.recorder.select_notifications(
                start=position + 1, limit=BATCH, topics=topics
            )
            events = [(n.id, ledger.mapper.to_domain_event(n)) for n in notifications]
            known = [(i, e) for i, e in events if e.timestamp <= as_of]
            if known:
                for projection in projections:
                    apply_batch(projection, known, known[-1][0])
                last_applied = known[-1][0]
            if len(notifications) < BATCH:
                break
            position = notifications[-1].id
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
