"""Stripe's webhook signature, checked with the official library."""

from __future__ import annotations

import stripe


class InvalidSignature(ValueError):
    pass


def verify_signature(
    payload: bytes, header: str | None, secrets: list[str], tolerance: int
) -> None:
    """Accept a payload signed with any of `secrets` (several during a rotation)
    within `tolerance` seconds. Tolerance 0 would mean "no check" to the stripe
    library, so it is refused here."""
    if tolerance <= 0:
        raise ValueError("the signature tolerance must be positive")
    if not header:
        raise InvalidSignature("missing Stripe-Signature header")
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance)
            return
        except stripe.SignatureVerificationError as exc:
            reason = str(exc).split(" (")[0]
        except UnicodeDecodeError:
            reason = "payload is not UTF-8"
    raise InvalidSignature(reason if secrets else "no webhook secret configured")
