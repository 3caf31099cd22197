"""Stripe's webhook signature, checked with the official library."""

from __future__ import annotations

import importlib


class InvalidSignature(ValueError):
    pass


def prepare() -> None:
    """Load the library now (a server's start), not at its first delivery."""
    importlib.import_module("stripe")


def verify_signature(payload: bytes, header: str | None, secrets: list[str], tolerance: int) -> int:
    """Accept a payload signed with any of `secrets` (several during a rotation)
    within `tolerance` seconds; returns the signature's time (`t=`). Tolerance 0
    would mean "no check" to the stripe library, so it is refused here."""
    import stripe  # here, not at the top: a process that checks none skips its 0.15 s

    if tolerance <= 0:
        raise ValueError("the signature tolerance must be positive")
    if not header:
        raise InvalidSignature("missing Stripe-Signature header")
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance)
            return signature_time(header)
        except stripe.SignatureVerificationError as exc:
            reason = str(exc).split(" (")[0]
        except UnicodeDecodeError:
            reason = "payload is not UTF-8"
    raise InvalidSignature(reason if secrets else "no webhook secret configured")


def signature_time(header: str) -> int:
    """The `t=` of a verified Stripe-Signature header."""
    return next(int(v) for k, _, v in (p.partition("=") for p in header.split(",")) if k == "t")
