"""The answers' models: each handler builds its answer from one (`contract.reply`),
and the OpenAPI document's answer schemas are generated from the same classes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Open(BaseModel):
    """Read models' rows: the fields named here, and more may follow."""

    model_config = ConfigDict(extra="allow", frozen=True)


# --- the extension's API ---------------------------------------------------------------


class Registered(_Answer):
    user_id: str
    token: str = Field(description="keep it: only a hash is stored")


class TokenRotated(_Answer):
    user_id: str
    token: str = Field(description="the new token; the previous one is refused from now on")


class SubscriptionCreated(_Answer):
    subscription_id: str
    client_secret: str | None
    status: Literal["pending", "active"]
    current_period_start: int | None
    current_period_end: int | None


class ActiveSubscription(_Answer):
    active: bool
    id: str
    status: str
    plan_name: str | None
    amount: int | None
    interval: str | None
    current_period_start: int | None
    current_period_end: int | None
    cancel_at_period_end: bool


class NoSubscription(_Answer):
    active: Literal[False]


class Verification(_Answer):
    valid: bool
    subscription_id: str | None
    status: str | None


class Canceled(_Answer):
    canceled: Literal[True]
    subscription_id: str
    cancellation_date: str | None = Field(description="ISO 8601 UTC")


class PaymentMethodUpdated(_Answer):
    updated: Literal[True]
    subscription_id: str


# --- usage metering ---------------------------------------------------------------------


class UsageRecorded(_Answer):
    id: str
    metric: str
    quantity: int
    idempotency_key: str
    occurred_at: str = Field(description="ISO 8601 UTC")
    duplicate: bool = Field(description="the key was recorded before: this is the first record")


class UsageBatchRecorded(_Answer):
    recorded: int
    duplicates: int
    records: list[UsageRecorded]


class UsagePeriod(_Answer):
    start: str = Field(description="ISO 8601 UTC")
    end: str = Field(description="ISO 8601 UTC, exclusive")


class MetricUsage(_Answer):
    total: int
    included: int | None = Field(description="null without a limit")
    remaining: int | None
    limit: Literal["hard", "soft", "none"]
    unit: str
    aggregation: Literal["sum", "max"]
    overage_amount: int = Field(description="minor units of `currency`")
    currency: str


class UsageTotals(_Answer):
    period: UsagePeriod
    plan_id: str
    metrics: dict[str, MetricUsage]


class UsageAllowed(_Answer):
    allowed: Literal[True]
    overage: bool = Field(description="past the included amount of a soft limit: billed")
    metric: str
    used: int
    included: int | None
    limit: Literal["hard", "soft", "none"]


class UsageLimitReached(_Answer):
    allowed: Literal[False]
    reason: Literal["limit_reached"]
    metric: str
    used: int
    included: int | None
    limit: Literal["hard", "soft", "none"]


# --- webhooks, operations -------------------------------------------------------------


class Delivery(_Answer):
    received: Literal[True]
    duplicate: bool


class Health(_Answer):
    status: Literal["ok"]


class Ready(_Answer):
    status: Literal["ready"]
    lag: int = Field(description="log events the slowest projection has not applied")


# --- audit ------------------------------------------------------------------------------


class UserBilling(_Answer):
    user_id: str
    subscription: dict[str, Any]
    entitlements: dict[str, Any]
    invoices: list[dict[str, Any]]
    notifications: list[dict[str, Any]]


class UserBillingAsOf(_Answer):
    user_id: str
    as_of: str
    position: int = Field(description="the last log position folded in")
    subscription: dict[str, Any]
    entitlements: dict[str, Any]
    invoices: list[dict[str, Any]]


class WebhookHealth(_Answer):
    by_type: dict[str, dict[str, int]]
    last_received_at: float | None
    dead: list[dict[str, Any]]
    lag: int = Field(description="log events the webhook_health projection has not applied")


class ProjectionPosition(_Open):
    name: str
    generation: int
    position: int
    head: int
    lag: int


class ProjectionPositions(RootModel[list[ProjectionPosition]]):
    pass


class TokensRevoked(_Answer):
    user_id: str
    revoked: Literal[True]


class OpenApiDocument(_Open):
    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


# --- the billing API (/api/v1/billing) --------------------------------------------------


class CustomerAnswer(_Answer):
    customer_id: str
    email: str | None
    name: str | None


class CustomerUpdated(_Answer):
    customer_id: str
    email: str | None
    name: str | None
    confirmed: bool = Field(description="false until Stripe's customer.updated is applied")


class PendingChange(_Answer):
    price_id: str
    plan_id: str | None
    effective_at: int | None


class SubscriptionAnswer(_Answer):
    id: str
    status: str
    active: bool
    tier: str
    plan_id: str | None
    plan_name: str | None = None
    price_id: str | None
    interval: str | None
    amount: int | None
    currency: str | None
    current_period_start: int | None
    current_period_end: int | None
    cancel_at_period_end: bool
    cancel_at: int | None
    trial_end: int | None
    in_grace_until: int | None = Field(description="end of a past_due subscription's grace")
    pending_change: PendingChange | None = Field(description="a downgrade at the period end")


class NoSubscriptionAnswer(_Answer):
    active: Literal[False] = False
    id: None = None
    tier: str


class CreatedSubscriptionAnswer(SubscriptionAnswer):
    client_secret: str | None
    confirmed: bool


class PlanChangeAnswer(_Answer):
    change: Literal["upgrade", "downgrade", "same"]
    effective: Literal["now", "period_end"]
    subscription_id: str
    price_id: str
    plan_id: str
    effective_at: int | None
    proration_behavior: str | None
    status: str
    confirmed: bool


class CancelAnswer(_Answer):
    subscription_id: str
    status: str
    cancel_at_period_end: bool
    cancel_at: int | None
    confirmed: bool


class ResumeAnswer(_Answer):
    subscription_id: str
    status: str
    withdrew_cancellation: bool
    withdrew_pending_change: bool
    confirmed: bool


class CheckoutAnswer(_Answer):
    id: str
    url: str


class PortalAnswer(_Answer):
    url: str
