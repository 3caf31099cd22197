"""Settings, read once from environment variables (each described in README.md, Configuration)."""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///var/ledger.db"
DEV_SECRETS_DIR = Path("var")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    database_url: str = Field(DEFAULT_DATABASE_URL, alias="DATABASE_URL")
    stripe_secret_key: SecretStr | None = Field(None, alias="STRIPE_SECRET_KEY")
    # Comma-separated: during a rotation both the old and the new secret are accepted.
    stripe_webhook_secret: SecretStr | None = Field(None, alias="STRIPE_WEBHOOK_SECRET")
    stripe_api_base: str | None = Field(None, alias="STRIPE_API_BASE")
    # Real Stripe: "default_incomplete" (the extension confirms the first payment with
    # the client secret). localstripe knows only "allow_incomplete": set that, and a
    # test payment method such as pm_card_visa, for it (tests and `make demo` do).
    stripe_payment_behavior: str = Field(
        "default_incomplete",
        pattern="^(default_incomplete|allow_incomplete|error_if_incomplete)$",
        alias="STRIPE_PAYMENT_BEHAVIOR",
    )
    stripe_test_payment_method: str | None = Field(None, alias="STRIPE_TEST_PAYMENT_METHOD")
    stripe_max_network_retries: int = Field(2, ge=0, le=5, alias="STRIPE_MAX_NETWORK_RETRIES")
    admin_token: SecretStr | None = Field(None, alias="LEDGER_ADMIN_TOKEN")
    plans_file: Path | None = Field(None, alias="LEDGER_PLANS_FILE")
    allowed_origins: str = Field("", alias="LEDGER_ALLOWED_ORIGINS")

    # "N/second|minute|hour": per user id, and per client address, on /api/.
    rate_limit_per_user: str = Field("120/minute", alias="LEDGER_RATE_LIMIT_PER_USER")
    rate_limit_per_address: str = Field("600/minute", alias="LEDGER_RATE_LIMIT_PER_ADDRESS")
    # Per client address: failed authentications (wrong or missing token), registrations.
    rate_limit_failed_auth: str = Field("30/minute", alias="LEDGER_RATE_LIMIT_FAILED_AUTH")
    rate_limit_registration: str = Field("30/minute", alias="LEDGER_RATE_LIMIT_REGISTRATION")
    # How often each API process reads the log for rotated or revoked tokens, seconds.
    token_watch_interval_seconds: float = Field(
        0.02, gt=0, le=1, alias="LEDGER_TOKEN_WATCH_INTERVAL"
    )

    webhook_tolerance_seconds: int = Field(300, ge=1, alias="LEDGER_WEBHOOK_TOLERANCE")
    webhook_max_body_bytes: int = Field(1024 * 1024, ge=1024, alias="LEDGER_WEBHOOK_MAX_BODY")
    # A delivery not committed within this answers 503 (Stripe retries; nothing is lost:
    # if the write still lands, the retry is answered as a duplicate).
    webhook_write_timeout_seconds: float = Field(10.0, gt=0, alias="LEDGER_WEBHOOK_WRITE_TIMEOUT")
    # "inline": the API process runs stage two in a thread; "process": `ledger serve`
    # starts `ledger process` beside it (scripts/background.py); "off": you run
    # `ledger process` yourself.
    processor: str = Field("inline", pattern="^(inline|process|off)$", alias="LEDGER_PROCESSOR")
    # The same for the projections (`ledger projections run`).
    projections: str = Field("inline", pattern="^(inline|process|off)$", alias="LEDGER_PROJECTIONS")
    processor_interval_seconds: float = Field(0.5, gt=0, alias="LEDGER_PROCESSOR_INTERVAL")
    aggregate_cache_size: int = Field(10_000, ge=0, alias="LEDGER_AGGREGATE_CACHE_SIZE")
    # PostgreSQL: connections each of a process's pools keeps (the log's, the
    # projections', the API's async reads'); as many more may open for a moment.
    # (Not LEDGER_POSTGRES_POOL_SIZE: the eventsourcing library reads that name, its
    # own setting prefixed with the application's, for the log's pool alone.)
    db_pool_size: int = Field(8, ge=1, le=100, alias="LEDGER_DB_POOL_SIZE")
    retry_attempts: int = Field(5, ge=1, alias="LEDGER_RETRY_ATTEMPTS")
    retry_base_seconds: float = Field(2.0, ge=0, alias="LEDGER_RETRY_BASE_SECONDS")
    # List calls of `ledger backfill` / `reconcile`: Stripe allows ~100 reads/s live, 25 in test.
    stripe_reads_per_second: float = Field(20.0, gt=0, le=100, alias="STRIPE_READS_PER_SECOND")
    # Wraps the per-customer keys of personal data (any secret of 32+ characters).
    master_key: SecretStr | None = Field(None, min_length=32, alias="LEDGER_MASTER_KEY")
    # The log's clock: stage two records one tick per period (payment_grace_ending).
    clock_period_seconds: int = Field(3600, ge=1, le=86_400, alias="LEDGER_CLOCK_PERIOD")
    # Server-Sent Events: a comment line this often keeps idle streams open.
    sse_heartbeat_seconds: float = Field(15.0, gt=0, alias="LEDGER_SSE_HEARTBEAT")
    # The email outbox: off unless LEDGER_SMTP_URL (smtp://host:port) is set.
    smtp_url: SecretStr | None = Field(None, alias="LEDGER_SMTP_URL")
    mail_from: str = Field("billing@localhost", alias="LEDGER_MAIL_FROM")
    # Comma-separated URL prefixes Checkout and the Customer Portal may send users
    # back to; none set: every redirect is refused.
    allowed_redirects: str = Field("", alias="LEDGER_ALLOWED_REDIRECTS")

    @property
    def origins(self) -> list[str]:
        return [o.strip() for o in self.allowed_origins.split(",") if o.strip()]

    @property
    def redirects(self) -> list[str]:
        return [p.strip() for p in self.allowed_redirects.split(",") if p.strip()]

    @property
    def webhook_secrets(self) -> list[str]:
        raw = self.stripe_webhook_secret.get_secret_value() if self.stripe_webhook_secret else ""
        return [s.strip() for s in raw.split(",") if s.strip()]


def load_settings(dev_dir: Path = DEV_SECRETS_DIR, announce: bool = True) -> Settings:
    """Read the environment; where a secret is unset, use a development value that
    is generated once into `var/` (and shown once, at start, so a developer can
    sign test deliveries). Production sets both variables, and then nothing is
    generated or shown."""
    settings = Settings()
    updates: dict[str, SecretStr] = {}
    if not settings.webhook_secrets:
        updates["stripe_webhook_secret"] = _dev_secret(
            dev_dir / "dev-webhook-secret", "whsec_", "STRIPE_WEBHOOK_SECRET", announce
        )
    if settings.admin_token is None:
        updates["admin_token"] = _dev_secret(
            dev_dir / "dev-admin-token", "adm_", "LEDGER_ADMIN_TOKEN", announce
        )
    if settings.master_key is None:
        updates["master_key"] = _dev_secret(
            dev_dir / "dev-master-key", "mk_", "LEDGER_MASTER_KEY", announce=False
        )
        if announce:
            print(f"LEDGER_MASTER_KEY is unset: using the development key in {dev_dir}")
    return settings.model_copy(update=updates)


def _dev_secret(path: Path, prefix: str, name: str, announce: bool) -> SecretStr:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(prefix + secrets.token_hex(24))
        path.chmod(0o600)
    value = path.read_text().strip()
    if announce:
        print(f"{name} is unset: using the development value from {path}: {value}")
    return SecretStr(value)
