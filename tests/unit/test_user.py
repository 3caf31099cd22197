"""The idempotency keys the README promises: a retry of a request whose answer
was lost reuses the key (Stripe acts once), a recorded failure does not change
it, a different request or a completed action gets another."""

from __future__ import annotations

from ledger.domain.user import User, hash_token


def user() -> User:
    return User(user_id="user_1767225600_abcdefghij", token_hash=hash_token("t"))


def test_a_retry_reuses_the_key_even_after_a_recorded_failure() -> None:
    u = user()
    first = u.idempotency_key("create_subscription", "price_a")
    assert u.idempotency_key("create_subscription", "price_a") == first
    u.stripe_call_failed("create_subscription", "stripe_unavailable", "timeout")
    assert u.idempotency_key("create_subscription", "price_a") == first


def test_another_request_or_a_completed_action_gets_another_key() -> None:
    u = user()
    first = u.idempotency_key("create_subscription", "price_a")
    assert u.idempotency_key("create_subscription", "price_b") != first
    assert u.idempotency_key("cancel", "price_a") != first
    u.customer_created("cus_1")
    assert u.idempotency_key("create_subscription", "price_a") != first
    assert len(first) <= 255 and str(u.id) in first
