"""Aggregate ids derived from natural keys, so no lookup table is needed."""

from __future__ import annotations

from uuid import UUID, uuid5

NAMESPACE = UUID("5b0c3a52-2d4e-4f7e-9a51-3f1c2b7d8e90")


def stripe_uuid(kind: str, stripe_id: str) -> UUID:
    """The aggregate id for a Stripe object (or event) of the given kind."""
    return uuid5(NAMESPACE, f"stripe:{kind}:{stripe_id}")


def user_uuid(user_id: str) -> UUID:
    return uuid5(NAMESPACE, f"user:{user_id}")
