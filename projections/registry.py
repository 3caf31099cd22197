"""Every projection, by name."""

from __future__ import annotations

from projections.base import SqlProjection
from projections.customers import CustomersProjection
from projections.entitlements import EntitlementsProjection
from projections.invoice_history import InvoiceHistoryProjection
from projections.notifications import NotificationsProjection
from projections.pending_changes import PendingChangesProjection
from projections.subscription_status import SubscriptionStatusProjection
from projections.usage_totals import UsageTotalsProjection
from projections.webhook_health import WebhookHealthProjection

PROJECTIONS: dict[str, type[SqlProjection]] = {
    p.name: p
    for p in (
        SubscriptionStatusProjection,
        EntitlementsProjection,
        InvoiceHistoryProjection,
        NotificationsProjection,
        WebhookHealthProjection,
        CustomersProjection,
        PendingChangesProjection,
        UsageTotalsProjection,
    )
}
