"""Request bodies, validated with pydantic; anything else is a 400."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from starlette.requests import Request

from api.errors import BadRequest, PayloadTooLarge
from ledger.domain.user import USER_ID

MAX_BODY = 16 * 1024
B = TypeVar("B", bound=BaseModel)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Registration(_Body):
    user_id: str = Field(max_length=64)


class CreateSubscription(_Body):
    user_id: str = Field(max_length=64)
    price_id: str = Field(max_length=255)
    billing_cycle: Literal["month", "year"]
    return_url: str | None = Field(None, max_length=2048)


class Cancel(_Body):
    immediate: StrictBool = False


class UpdatePaymentMethod(_Body):
    payment_method_id: str = Field(pattern=r"^pm_[A-Za-z0-9_]{1,250}$")


class UsageRecordBody(_Body):
    metric: str = Field(max_length=64)
    quantity: StrictInt = Field(ge=0, le=10**12)
    idempotency_key: str = Field(min_length=1, max_length=255)
    occurred_at: Annotated[AwareDatetime, Strict()] | None = Field(
        None, description="ISO 8601 with a zone; now when absent"
    )


class UsageBatch(_Body):
    records: list[UsageRecordBody] = Field(min_length=1, max_length=1000)


USAGE_BATCH_MAX_BODY = 256 * 1024


async def parse(
    request: Request, model: type[B], *, empty_ok: bool = False, max_body: int = MAX_BODY
) -> B:
    body = await request.body()
    if len(body) > max_body:
        raise PayloadTooLarge(f"body over {max_body} bytes")
    if empty_ok and not body.strip():
        body = b"{}"
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadRequest(f"{where}: {first['msg']}") from None


class AuditQuery(_Body):
    model_config = ConfigDict(extra="forbid", frozen=True)  # a misspelt parameter is a 400

    as_of: str | None = Field(
        None,
        max_length=64,
        description="ISO 8601 with a zone, e.g. 2026-01-31T12:00:00Z: the ledger as it was then",
    )


class UserPath(_Body):
    user_id: str = Field(pattern=USER_ID.pattern)


def _position(value: object) -> object:
    """A query's position or count is digits only (no sign, blanks or decimals)."""
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{1,19}", value):
        raise ValueError("must be a whole number")
    return value


class AuditEventsQuery(_Body):
    model_config = ConfigDict(extra="forbid", frozen=True)  # a misspelt parameter is a 400

    after: Annotated[int, BeforeValidator(_position)] = Field(
        0, ge=0, le=2**62, description="the log position to start after (a page's `next`)"
    )
    limit: Annotated[int, BeforeValidator(_position)] = Field(
        100, ge=1, le=1000, description="at most this many events"
    )
    user_id: str | None = Field(
        None, pattern=USER_ID.pattern, description="only this user's events"
    )


class DeliveryPath(_Body):
    stripe_event_id: str = Field(min_length=1, max_length=255)


# --- the billing API (/api/v1/billing) ----------------------------------------------

_PRICE_ID = Field(max_length=255, pattern=r"^[A-Za-z0-9_]+$")
_URL = Field(max_length=2048)


class CustomerChanges(_Body):
    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        json_schema_extra={  # the document says what `_something` checks
            "anyOf": [
                {"required": ["email"], "properties": {"email": {"type": "string"}}},
                {"required": ["name"], "properties": {"name": {"type": "string"}}},
            ]
        },
    )

    email: str | None = Field(None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    name: str | None = Field(None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _something(self) -> CustomerChanges:
        if self.email is None and self.name is None:
            raise ValueError("give email, name or both")
        return self


class NewSubscription(_Body):
    price_id: str = _PRICE_ID
    trial_days: StrictInt | None = Field(None, ge=0, le=730)


class PlanChange(_Body):
    price_id: str = _PRICE_ID


class CheckoutRequest(_Body):
    price_id: str = _PRICE_ID
    success_url: str = _URL
    cancel_url: str = _URL


class PortalRequest(_Body):
    return_url: str = _URL


class CancelQuery(_Body):
    model_config = ConfigDict(extra="forbid", frozen=True)  # a misspelt parameter is a 400

    at_period_end: Literal["true", "false", "1", "0"] = Field(
        "true", description="true: at the period's end (the default); false: now"
    )


class UsageQuery(_Body):
    model_config = ConfigDict(extra="forbid", frozen=True)  # a misspelt parameter is a 400

    at: str | None = Field(
        None,
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
        description="a day, YYYY-MM-DD: the period holding it (the current one when absent)",
    )

    @field_validator("at")
    @classmethod
    def _a_day(cls, at: str | None) -> str | None:
        if at is not None:
            try:
                day = datetime.strptime(at, "%Y-%m-%d")
            except ValueError:
                raise ValueError("expected a day, YYYY-MM-DD") from None
            if not 1970 <= day.year <= 9998:  # a period's end must still be a date
                raise ValueError("a day from 1970-01-01 to 9998-12-31")
        return at

    def moment(self) -> float | None:
        """The day's start as unix time, or None for now."""
        if self.at is None:
            return None
        return datetime.strptime(self.at, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()


def _whole_number(value: object, digits: int = 13) -> object:
    """A query's integer is digits only (no sign, blanks, underscores or decimals)."""
    if isinstance(value, str) and not re.fullmatch(f"[0-9]{{1,{digits}}}", value):
        raise ValueError("must be a whole number")
    return value


QueryInt = Annotated[int, BeforeValidator(_whole_number)]
# a notification cursor: up to 2**62 (19 digits)
QueryCursor = Annotated[int, Field(ge=0, le=2**62), BeforeValidator(lambda v: _whole_number(v, 19))]


class EntitlementCheckQuery(_Body):
    """The gate, asked of a feature or of a metric: exactly one of the two."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="a feature of the plans file, e.g. premium_features (or `metric`, not both)",
    )
    metric: str | None = Field(
        None,
        max_length=64,
        description="a metric of the plans file, e.g. ai_requests (or `feature`, not both)",
    )
    quantity: QueryInt = Field(
        1,
        ge=0,
        le=10**12,
        description="with `metric`: how much more is about to be used (for a `max` metric: "
        "the reading to come)",
    )

    @model_validator(mode="after")
    def _one_of(self) -> EntitlementCheckQuery:
        """A refusal's message starts with the field it is about (see parse_params)."""
        if self.feature is None and self.metric is None:
            raise PydanticCustomError("one_of", "feature: give a feature or a metric")
        if self.feature is not None and self.metric is not None:
            raise PydanticCustomError("one_of", "metric: give a feature or a metric, not both")
        if self.feature is not None and "quantity" in self.model_fields_set:
            raise PydanticCustomError("one_of", "quantity: only with a metric")
        return self


class InvoiceQuery(_Body):
    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: QueryInt = Field(20, ge=1, le=100)
    starting_after: str | None = Field(
        None, max_length=255, description="an invoice id of the previous page: the page after it"
    )


class NotificationQuery(_Body):
    model_config = ConfigDict(extra="forbid", frozen=True)

    after: QueryCursor = Field(0, description="a cursor: the notifications after it")
    limit: QueryInt = Field(50, ge=1, le=500)


class StreamQuery(_Body):
    model_config = ConfigDict(extra="forbid", frozen=True)

    after: QueryCursor | None = Field(
        None, description="a cursor to resume after (the Last-Event-ID header wins)"
    )
