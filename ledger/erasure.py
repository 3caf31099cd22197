"""Erasure of a user's personal data by crypto-shredding: delete the keys of the
user's Stripe customers, then record `Erasure.PersonalDataErased`."""

from __future__ import annotations

from collections.abc import Collection

from eventsourcing.application import AggregateNotFoundError

from ledger.accounts import InvalidUserId
from ledger.application import Ledger
from ledger.domain.erasure import Erasure
from ledger.domain.user import USER_ID


def erase_personal_data(
    ledger: Ledger,
    user_id: str,
    stripe_customer_ids: Collection[str],
    *,
    request_id: str | None = None,
) -> Erasure:
    """Idempotent: a second erasure deletes what keys were made since (data
    that arrived after the first) and is recorded too, with the request id of the
    API call that asked (None from `ledger erase`). Raises InvalidUserId for what
    cannot be a user's id (and records nothing)."""
    if not USER_ID.fullmatch(user_id):
        raise InvalidUserId(
            "the user id must be user_{unix seconds}_{10 lowercase letters or digits}"
        )
    try:
        erasure: Erasure = ledger.repository.get(Erasure.create_id(user_id))
    except AggregateNotFoundError:
        erasure = Erasure(user_id=user_id, request_id=request_id)
    customers = sorted(stripe_customer_ids)
    deleted = ledger.personal.erase(customers)  # the irreversible act, first
    erasure.erased(customers, deleted, request_id)
    ledger.save(erasure)
    return erasure
