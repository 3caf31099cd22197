"""The anti-corruption layer, both directions: Stripe's incoming payloads read
into our words, the signature check, and the gateway that calls Stripe. No other
module parses Stripe's JSON or calls Stripe. Stage one reads a delivery through
the two names below; the payload models themselves stay inside this package."""

from ledger.stripe.payloads import NotAnEvent, read_delivery

__all__ = ["NotAnEvent", "read_delivery"]
