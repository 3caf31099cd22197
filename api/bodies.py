"""Request bodies, validated with pydantic; anything else is a 400."""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
)
from starlette.requests import Request

from api.errors import BadRequest, PayloadTooLarge

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
    occurred_at: AwareDatetime | None = None


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
