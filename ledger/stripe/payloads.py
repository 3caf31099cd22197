"""The anti-corruption layer's reading half: the only module that knows Stripe's
JSON paths. It reads both shapes Stripe renders (an endpoint's pinned API
version decides): the current one (`2026-07-29.dahlia`: billing periods on
`items.data[]`, an invoice's subscription at `parent.subscription_details`) and
the pre-2025 one (top-level `current_period_*` and `plan`, `invoice.subscription`).
What leaves this module is our own vocabulary, never a Stripe dict; the
`Stripe*` models are shared with the gateway, which reads Stripe's answers
through them (the same object read the same way, whichever way it came)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ledger.domain.checkout import CheckoutFacts
from ledger.domain.invoice import InvoiceFacts
from ledger.domain.money import Price
from ledger.domain.receipt import Delivery, Source
from ledger.domain.subscription import SubscriptionState

M = TypeVar("M", bound=BaseModel)


class NotAnEvent(ValueError):
    """A body that is not a Stripe event (not JSON, or missing what every event has)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


def _id_of(value: Any) -> Any:
    """Stripe sends a related object as its id, or expanded as an object."""
    return value.get("id") if isinstance(value, dict) else value


def _expanded(value: Any) -> Any:
    """A related object we read only when expanded: its bare id counts as absent."""
    return value if isinstance(value, dict) else None


class _Head(_Model):
    """What every event has besides its object."""

    id: str = Field(pattern=r"^evt_[A-Za-z0-9_]+$", max_length=255)
    type: str = Field(min_length=1, max_length=255)
    created: int = Field(ge=0)
    api_version: str | None = None
    livemode: bool = False


class _Subject(_Model):
    """What a receipt needs of an event's object: whom it is about (the rest of
    it is read by stage two, not kept as Python objects here)."""

    object: Any = None
    id: Any = None
    customer: Any = None  # an id, or the customer expanded


class _SubjectData(_Model):
    object: _Subject


class _DeliveryHead(_Head):
    data: _SubjectData


def _reason(exc: ValidationError) -> str:
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return "body is not JSON"
    return f"{'.'.join(str(p) for p in first['loc']) or 'body'}: {first['msg']}"


# --- objects --------------------------------------------------------------------


class _Recurring(_Model):
    interval: str
    interval_count: int = 1


class _Price(_Model):
    id: str
    unit_amount: int | None = None
    currency: str
    recurring: _Recurring | None = None
    lookup_key: str | None = None
    product: str | None = None
    nickname: str | None = None

    _product = field_validator("product", mode="before")(lambda v: _id_of(v))


class _Plan(_Model):
    """The legacy stand-in for a recurring price (what localstripe serves)."""

    id: str
    amount: int | None = None
    currency: str
    interval: str
    interval_count: int = 1
    product: str | None = None
    nickname: str | None = None

    _product = field_validator("product", mode="before")(lambda v: _id_of(v))

    def to_price(self) -> Price:
        return Price(
            stripe_price_id=self.id,
            unit_amount=self.amount or 0,
            currency=self.currency,
            interval=self.interval,
            interval_count=self.interval_count,
            stripe_product_id=self.product,
            nickname=self.nickname,
        )


class _Item(_Model):
    id: str | None = None
    price: _Price | None = None
    plan: _Plan | None = None
    current_period_start: int | None = None
    current_period_end: int | None = None

    def to_price(self) -> Price | None:
        p = self.price
        if p is not None and p.recurring is not None:
            return Price(
                stripe_price_id=p.id,
                unit_amount=p.unit_amount or 0,
                currency=p.currency,
                interval=p.recurring.interval,
                interval_count=p.recurring.interval_count,
                lookup_key=p.lookup_key,
                stripe_product_id=p.product,
                nickname=p.nickname,
            )
        return self.plan.to_price() if self.plan is not None else None


class _Items(_Model):
    data: list[_Item] = []


class _ClientSecret(_Model):
    client_secret: str | None = None


class _LatestInvoice(_Model):
    """A subscription's first invoice, as an answer expands it: its client secret
    is at `confirmation_secret` (current API) or `payment_intent` (2017 API, what
    localstripe speaks). Either is there only when the call asked to expand it."""

    confirmation_secret: _ClientSecret | None = None
    payment_intent: _ClientSecret | None = None

    _intent = field_validator("payment_intent", mode="before")(_expanded)

    @property
    def client_secret(self) -> str | None:
        for holder in (self.confirmation_secret, self.payment_intent):
            if holder is not None and holder.client_secret:
                return holder.client_secret
        return None


class StripeSubscription(_Model):
    """A subscription, as a webhook delivers it and as the gateway's calls answer."""

    id: str
    customer: str
    status: str
    metadata: dict[str, str] | None = None
    cancel_at_period_end: bool = False
    cancel_at: int | None = None
    canceled_at: int | None = None
    trial_end: int | None = None
    ended_at: int | None = None
    items: _Items = _Items()
    latest_invoice: _LatestInvoice | None = None
    # pre-2025 shape
    current_period_start: int | None = None
    current_period_end: int | None = None
    plan: _Plan | None = None

    _customer = field_validator("customer", mode="before")(lambda v: _id_of(v))
    _invoice = field_validator("latest_invoice", mode="before")(_expanded)

    @property
    def period(self) -> tuple[int | None, int | None]:
        """(start, end) of the current billing period: on the first item in the
        current API, at the top level in the pre-2025 one (and localstripe's)."""
        item = self.items.data[0] if self.items.data else None
        start = item.current_period_start if item else None
        end = item.current_period_end if item else None
        return start or self.current_period_start, end or self.current_period_end

    @property
    def client_secret(self) -> str | None:
        """For the extension to confirm the first payment (when it was expanded)."""
        return self.latest_invoice.client_secret if self.latest_invoice else None

    @property
    def first_item(self) -> _Item | None:
        return self.items.data[0] if self.items.data else None


def _as(model: type[M], obj: Any) -> M:
    """An event's object as `model`: read so from its JSON already (stage two's
    envelope), or read now from a dict."""
    if isinstance(obj, model):
        return obj
    if isinstance(obj, BaseModel):  # read as another kind of object, by its own tag
        raise ValueError(f"the event's object is of another kind: {getattr(obj, 'object', '?')!r}")
    return model.model_validate(obj)


def read_subscription(obj: Any) -> SubscriptionState:
    s = _as(StripeSubscription, obj)
    item = s.items.data[0] if s.items.data else None
    price = item.to_price() if item else None
    if price is None and s.plan is not None:
        price = s.plan.to_price()
    start, end = s.period
    return SubscriptionState(
        stripe_subscription_id=s.id,
        stripe_customer_id=s.customer,
        status=s.status,
        price=price,
        current_period_start=start,
        current_period_end=end,
        cancel_at_period_end=s.cancel_at_period_end,
        # Stripe also fills cancel_at when cancelling at period end: we keep one meaning.
        cancel_at=None if s.cancel_at_period_end else s.cancel_at,
        trial_end=s.trial_end,
        ended_at=s.ended_at,
        user_id=_user_id(s.metadata),
    )


class StripeCustomer(_Model):
    """A customer, as a webhook delivers it and as the gateway's calls answer."""

    id: str
    email: str | None = None
    name: str | None = None
    metadata: dict[str, str] | None = None


def read_customer(obj: Any) -> tuple[str, str | None, str | None, str | None]:
    """(stripe customer id, email, name, user id)"""
    c = _as(StripeCustomer, obj)
    return c.id, c.email, c.name, _user_id(c.metadata)


class _Phase(_Model):
    start_date: int
    end_date: int | None = None


class StripeSubscriptionSchedule(_Model):
    """A subscription schedule, as the gateway's calls answer."""

    id: str
    status: str | None = None
    phases: list[_Phase] = []


class StripeSession(_Model):
    """A Checkout or Customer Portal session, as its create call answers."""

    id: str
    url: str


class StripeInvoiceItem(_Model):
    """An invoice item, as the gateway's create call answers."""

    id: str
    amount: int
    currency: str


class StripeMeterEvent(_Model):
    """A billing meter event, as the gateway's create call answers."""

    identifier: str
    event_name: str


class StripePaymentMethod(_Model):
    """A payment method, as the gateway's attach call answers."""

    id: str


class _SubscriptionDetails(_Model):
    subscription: str | None = None

    _subscription = field_validator("subscription", mode="before")(lambda v: _id_of(v))


class _Parent(_Model):
    subscription_details: _SubscriptionDetails | None = None


class _Invoice(_Model):
    id: str
    customer: str
    currency: str
    amount_due: int = 0
    amount_paid: int = 0
    number: str | None = None
    period_start: int | None = None
    period_end: int | None = None
    attempt_count: int = 0
    next_payment_attempt: int | None = None
    hosted_invoice_url: str | None = None
    billing_reason: str | None = None
    created: int | None = None
    parent: _Parent | None = None
    subscription: str | None = None  # pre-2025 shape

    _ids = field_validator("customer", "subscription", mode="before")(lambda v: _id_of(v))


def read_invoice(obj: Any) -> InvoiceFacts:
    i = _as(_Invoice, obj)
    details = i.parent.subscription_details if i.parent else None
    subscription = (details.subscription if details else None) or i.subscription
    return InvoiceFacts(
        stripe_invoice_id=i.id,
        stripe_customer_id=i.customer,
        stripe_subscription_id=subscription,
        number=i.number,
        currency=i.currency,
        amount_due=i.amount_due,
        amount_paid=i.amount_paid,
        period_start=i.period_start,
        period_end=i.period_end,
        attempt_count=i.attempt_count,
        next_payment_attempt=i.next_payment_attempt,
        hosted_invoice_url=i.hosted_invoice_url,
        billing_reason=i.billing_reason,
        created=i.created,
    )


class _CheckoutSession(_Model):
    id: str
    mode: str = "subscription"
    customer: str | None = None
    subscription: str | None = None
    client_reference_id: str | None = None
    amount_total: int | None = None
    currency: str | None = None
    metadata: dict[str, str] | None = None

    _ids = field_validator("customer", "subscription", mode="before")(lambda v: _id_of(v))


def read_checkout(obj: Any) -> CheckoutFacts:
    c = _as(_CheckoutSession, obj)
    return CheckoutFacts(
        stripe_session_id=c.id,
        stripe_customer_id=c.customer,
        stripe_subscription_id=c.subscription,
        user_id=c.client_reference_id or _user_id(c.metadata),
        mode=c.mode,
        amount_total=c.amount_total,
        currency=c.currency,
    )


# --- the envelope, as stage two reads it -------------------------------------------


class _SubscriptionObject(StripeSubscription):
    object: Literal["subscription"]


class _CustomerObject(StripeCustomer):
    object: Literal["customer"]


class _InvoiceObject(_Invoice):
    object: Literal["invoice"]


class _CheckoutObject(_CheckoutSession):
    object: Literal["checkout.session"]


# An object we translate, read into its model straight from the JSON by its
# `object` tag: no dict of the whole object is made (a third of the time). Any
# other object, or one without the tag, or one its model refuses, stays a dict:
# the translators read a dict as before, and refuse what they refused.
_Object = Annotated[
    _SubscriptionObject | _CustomerObject | _InvoiceObject | _CheckoutObject,
    Field(discriminator="object"),
]
StripeObject = StripeSubscription | StripeCustomer | _Invoice | _CheckoutSession | dict[str, Any]


class _Data(_Model):
    object: _Object | dict[str, Any] = Field(union_mode="left_to_right")


class Envelope(_Head):
    data: _Data

    @property
    def object(self) -> StripeObject:
        return self.data.object


def read_envelope(body: bytes | str) -> Envelope:
    """The body parsed and checked in one step by pydantic's own JSON reader
    (every delivery is read twice, in stage one and in stage two)."""
    try:
        return Envelope.model_validate_json(body)
    except ValidationError as exc:
        raise NotAnEvent(_reason(exc)) from None


def named_ids(obj: StripeObject) -> list[str]:
    """The Stripe ids an event's object names: its own, its customer's and its
    subscription's (in either shape, as ids or expanded objects)."""
    if isinstance(obj, BaseModel):  # read by its tag: ids are ids already
        parent = getattr(obj, "parent", None)
        details = parent.subscription_details if parent is not None else None
        named = [obj.id, getattr(obj, "customer", None), getattr(obj, "subscription", None)]
        named.append(details.subscription if details is not None else None)
        return [i for i in named if isinstance(i, str)]
    parent = obj.get("parent")
    details = parent.get("subscription_details") if isinstance(parent, dict) else None
    named = [obj.get("id"), obj.get("customer"), obj.get("subscription")]
    if isinstance(details, dict):
        named.append(details.get("subscription"))
    return [i for i in map(_id_of, named) if isinstance(i, str)]


def _user_id(metadata: dict[str, str] | None) -> str | None:
    return (metadata or {}).get("user_id") or None


def read_delivery(body: bytes, signature_time: int | None = None) -> Delivery:
    """A delivery's body, as signed, read into what its receipt records: checked
    as `read_envelope` checks it, but only the head and the object's subject
    become Python objects (a third of the time for a 3.6 KB event).
    `signature_time`: its verified Stripe-Signature's `t=`."""
    try:
        head = _DeliveryHead.model_validate_json(body)
    except ValidationError as exc:
        raise NotAnEvent(_reason(exc)) from None
    subject = head.data.object
    return Delivery(
        stripe_event_id=head.id,
        event_type=head.type,
        stripe_created=head.created,
        api_version=head.api_version,
        livemode=head.livemode,
        payload=body.decode("utf-8"),
        signature_time=signature_time,
        data_subject=_data_subject(
            {"object": subject.object, "id": subject.id, "customer": subject.customer}
        ),
    )


class StripeList(_Model):
    """One page of a list call (`GET /v1/events`, `/v1/subscriptions`, ...)."""

    data: list[dict[str, Any]] = []
    has_more: bool = False

    @property
    def last_id(self) -> str | None:
        """What the next page starts after."""
        return _id_of(self.data[-1]) if self.data else None


def read_list(body: str) -> StripeList:
    """A list call's answer, from its JSON (the library's objects turn some
    fields into Decimal: we keep Stripe's own text)."""
    return StripeList.model_validate(json.loads(body))


def read_listed_event(obj: dict[str, Any]) -> Delivery:
    """An event as Stripe's events list returned it, read like a delivery: its
    receipt's payload is that event's JSON. Raises NotAnEvent."""
    delivery = read_delivery(json.dumps(obj, separators=(",", ":")).encode())
    return replace(delivery, source=Source.BACKFILL)


def _data_subject(obj: dict[str, Any]) -> str | None:
    """The Stripe customer an event's object is about: a customer itself, or the
    `customer` of a subscription, invoice or checkout session (an id, or expanded)."""
    if obj.get("object") == "customer" and isinstance(obj.get("id"), str):
        return str(obj["id"])
    customer = obj.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    return customer if isinstance(customer, str) and customer else None
