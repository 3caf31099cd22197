"""The anti-corruption layer, both directions: Stripe's incoming payloads read
into our words, the signature check, and the gateway that calls Stripe. No other
module parses Stripe's JSON or calls Stripe."""
