"""The auditors' history: the log's domain events in log order (all, or one
user's, read through the ownership index), each described in our words with
what caused it (a Stripe delivery, or an API call and its request id); a user's
API actions; the export of the log as JSON Lines, and its import into an empty
store."""

from __future__ import annotations

import base64
from collections.abc import Callable, Collection, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Notification, StoredEvent
from eventsourcing.utils import get_topic
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from ledger.application import Ledger
from ledger.domain.customer import Customer
from ledger.domain.erasure import Erasure
from ledger.domain.ids import user_uuid
from ledger.domain.receipt import Receipt
from ledger.domain.user import User
from ledger.erasure import erase_personal_data
from ledger.personal import PREFIX
from projections.as_of import Owners, aggregates_of, user_aggregates

_OUTCOMES = [get_topic(Receipt.Processed), get_topic(Receipt.AttemptFailed)]
FOREVER = datetime.max.replace(tzinfo=UTC)
_NAMING_CUSTOMERS = {
    get_topic(t)
    for t in (
        Customer.Registered,
        User.CustomerCreated,
        User.CustomerDetailsUpdated,
        User.CheckoutStarted,
        User.PortalOpened,
    )
}
# not the event's data: where it is in the log, and (in its cause) the API call's request id
_HIDDEN = {"originator_id", "originator_version", "timestamp", "originator_topic", "request_id"}


class Cause(BaseModel):
    kind: str  # "stripe": a delivery; "api": a user's call; "admin": an operator's; "ledger"
    stripe_event_id: str | None = None
    action: str | None = None
    request_id: str | None = None  # the API call's Request-Id (None: before it was recorded)


class HistoryEvent(BaseModel):
    position: int
    time: datetime
    aggregate: str
    aggregate_id: UUID
    version: int
    type: str
    data: dict[str, Any]
    cause: Cause


class HistoryPage(BaseModel):
    data: list[HistoryEvent]
    next: int | None


class Action(BaseModel):
    position: int
    time: datetime
    action: str
    asked: dict[str, Any]  # what the user asked, and what Stripe answered
    request_id: str | None = None  # the API call's Request-Id (None: before it was recorded)


class ActionsPage(BaseModel):
    user_id: str
    data: list[Action]


class Stored(BaseModel):
    """The stored record, as the log holds it (the state in base64)."""

    originator_id: UUID
    originator_version: int
    topic: str
    state: str


class ExportLine(HistoryEvent):
    stored: Stored


def describe(
    position: int, topic: str, event: Any, shown: Callable[[str], str] = str
) -> HistoryEvent:
    """One domain event in our words: `ledger.customer:Customer.DetailsChanged`
    is aggregate Customer, type DetailsChanged. `shown` turns a personal value as
    stored into what may be shown: itself, or "[erased]"."""
    aggregate, _, kind = topic.partition(":")[2].partition(".")
    data = {
        k: shown(v) if isinstance(v, str) and v.startswith(PREFIX) else v
        for k, v in vars(event).items()
        if k not in _HIDDEN
    }
    if isinstance(event, Receipt.Received):
        data["payload"] = f"{len(event.payload.encode())} bytes, see the deliveries endpoint"
    return HistoryEvent(
        position=position,
        time=event.timestamp,
        aggregate=aggregate or topic,
        aggregate_id=event.originator_id,
        version=event.originator_version,
        type=kind or topic,
        data=to_jsonable_python(data),
        cause=_cause(aggregate, kind, data, getattr(event, "request_id", None)),
    )


def _cause(aggregate: str, kind: str, data: dict[str, Any], request_id: str | None) -> Cause:
    if data.get("stripe_event_id") and aggregate != "Receipt":
        return Cause(kind="stripe", stripe_event_id=data["stripe_event_id"])
    if aggregate == "User":
        return Cause(kind="api", action=kind, request_id=request_id)
    if aggregate == "Erasure":
        return Cause(kind="admin", action=kind, request_id=request_id)
    if aggregate == "Receipt":
        return Cause(kind="stripe", stripe_event_id=data.get("stripe_event_id"))
    return Cause(kind="ledger")


class History:
    """Reads of the log for auditors. `owners` is the ownership index (a
    ReadSide's); without it a user's aggregates are found by scanning the log."""

    def __init__(self, ledger: Ledger, owners: Owners | None = None) -> None:
        self.ledger = ledger
        self.owners = owners

    def aggregates_of(self, user_id: str) -> set[UUID]:
        """The user's own, its erasure's, and those the ownership index names."""
        own = {user_uuid(user_id), Erasure.create_id(user_id)}
        if self.owners is None:
            return aggregates_of(self.ledger, user_id, FOREVER) | own
        return user_aggregates(self.ledger, user_id, FOREVER, self.owners) | own

    def page(self, user_id: str | None = None, after: int = 0, limit: int = 100) -> HistoryPage:
        """Up to `limit` events after position `after`; `next` is the position to
        ask after for more (None: that was the last)."""
        notifications = self._read(user_id, after, limit + 1)
        more = len(notifications) > limit
        events = [self._describe(n) for n in notifications[:limit]]
        return HistoryPage(data=events, next=events[-1].position if more else None)

    def _read(self, user_id: str | None, after: int, limit: int) -> list[Notification]:
        recorder = self.ledger.recorder
        if user_id is None:
            return list(recorder.select_notifications(start=after + 1, limit=limit))
        ids = self.aggregates_of(user_id)
        return recorder.notifications_of(ids, after, limit)  # type: ignore[attr-defined,no-any-return]

    def _describe(self, n: Notification) -> HistoryEvent:
        event = describe(
            n.id, n.topic, self.ledger.mapper.to_domain_event(n), self.ledger.personal.shown
        )
        if event.cause.kind == "ledger":
            event.cause = self._delivery_behind(n.id)
        return event

    def _delivery_behind(self, position: int) -> Cause:
        """An event that names no Stripe event (a customer registered, an invoice
        recorded) was written by stage two with the rest of a receipt's changes,
        and the receipt's outcome last: the first outcome after it says which."""
        recorder = self.ledger.recorder
        outcome = recorder.select_notifications(start=position + 1, limit=1, topics=_OUTCOMES)
        if not outcome:
            return Cause(kind="ledger")
        received = recorder.notifications_of([outcome[0].originator_id], 0, 1)  # type: ignore[attr-defined]
        receipt = self.ledger.mapper.to_domain_event(received[0])
        return Cause(kind="stripe", stripe_event_id=receipt.stripe_event_id)  # type: ignore[attr-defined]

    def actions(self, user_id: str) -> ActionsPage:
        """The user's API actions: what was asked, when, and Stripe's answer."""
        recorder = self.ledger.recorder
        notes = recorder.notifications_of([user_uuid(user_id)])  # type: ignore[attr-defined]
        actions = []
        for n in notes:
            event = self._describe(n)
            actions.append(
                Action(
                    position=n.id,
                    time=event.time,
                    action=event.type,
                    asked=event.data,
                    request_id=event.cause.request_id,
                )
            )
        return ActionsPage(user_id=user_id, data=actions)

    def export(
        self,
        user_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        batch: int = 1000,
    ) -> Iterator[ExportLine]:
        """Every event (or one user's), in log order, in constant memory."""
        after = 0
        while True:
            notifications = self._read(user_id, after, batch)
            for n in notifications:
                event = self._describe(n)
                if (since and event.time < since) or (until and event.time > until):
                    continue
                yield ExportLine(**dict(event), stored=_stored(n))
            if len(notifications) < batch:
                return
            after = notifications[-1].id

    def head(self) -> int:
        return self.ledger.recorder.max_notification_id() or 0

    def erase(self, user_id: str, *, request_id: str | None = None) -> ErasureAnswer:
        """Crypto-shred the personal data of the user's Stripe customers, and
        record it (`Erasure.PersonalDataErased`, with the API call's request id)."""
        customers = self._customers_of(self.aggregates_of(user_id))
        erasure = erase_personal_data(self.ledger, user_id, customers, request_id=request_id)
        return ErasureAnswer(
            user_id=user_id,
            stripe_customer_ids=sorted(customers),
            erased=True,
            version=erasure.version,
        )

    def _customers_of(self, ids: Collection[UUID]) -> set[str]:
        """The Stripe customers of these aggregates: those registered by webhook,
        and those the user's own actions name (created, updated, paid through:
        a customer whose webhook has not come yet is erased too)."""
        return {
            customer
            for n in self.ledger.recorder.notifications_of(ids)  # type: ignore[attr-defined]
            if n.topic in _NAMING_CUSTOMERS
            and (customer := self.ledger.mapper.to_domain_event(n).stripe_customer_id)  # type: ignore[attr-defined]
        }


class ErasureAnswer(BaseModel):
    user_id: str
    stripe_customer_ids: list[str]
    erased: bool
    version: int


def _stored(n: Notification) -> Stored:
    return Stored(
        originator_id=n.originator_id,
        originator_version=n.originator_version,
        topic=n.topic,
        state=base64.b64encode(n.state).decode(),
    )


def import_lines(ledger: Ledger, lines: Iterable[str], batch: int = 1000) -> int:
    """Append exported events, in their order, to a store: the stored records
    byte for byte (positions are the new store's). Returns how many."""
    pending: list[StoredEvent] = []
    count = 0
    for line in lines:
        if not line.strip():
            continue
        stored = ExportLine.model_validate_json(line).stored
        pending.append(
            StoredEvent(
                originator_id=stored.originator_id,
                originator_version=stored.originator_version,
                topic=stored.topic,
                state=base64.b64decode(stored.state),
            )
        )
        if len(pending) >= batch:
            ledger.recorder.insert_events(pending)
            count, pending = count + len(pending), []
    if pending:
        ledger.recorder.insert_events(pending)
        count += len(pending)
    return count


class Delivered(BaseModel):
    """A Stripe delivery as received: its body byte for byte, and what became of it."""

    stripe_event_id: str
    body: bytes
    received_at: datetime
    signature_time: int | None
    outcome: str
    attempts: int
    last_error: str

    def headers(self) -> dict[str, str]:
        return {
            "Ledger-Received-At": self.received_at.isoformat(),
            "Ledger-Signature-Time": ""
            if self.signature_time is None
            else str(self.signature_time),
            "Ledger-Outcome": self.outcome,
            "Ledger-Attempts": str(self.attempts),
            "Ledger-Last-Error": self.last_error.encode("ascii", "replace").decode(),
        }


def delivered(ledger: Ledger, stripe_event_id: str) -> Delivered:
    """Raises ReceiptNotFound, or Erased when the body's subject was erased."""
    receipt = ledger.receipt(stripe_event_id)
    return Delivered(
        stripe_event_id=stripe_event_id,
        body=ledger.personal.reveal(receipt.payload, fresh=True).encode(),  # raises Erased
        received_at=receipt.created_on,
        signature_time=getattr(receipt, "signature_time", None),
        outcome=receipt.outcome.value if receipt.outcome else "received",
        attempts=receipt.attempts,
        last_error=receipt.last_error,
    )
