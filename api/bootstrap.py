"""The composition root: every part of a process (the ledger, stage one and two,
the read side, the Stripe gateway, the plan catalog, accounts) built from
settings in one place, for the app and for the `ledger` command alike."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property

from ledger.accounts import Accounts, StripeNotConfigured
from ledger.application import Ledger
from ledger.backfill import Backfill
from ledger.billing import Billing
from ledger.config import Settings, load_settings
from ledger.intake import AsyncGroupCommitter, Committer, GroupCommitter, Intake
from ledger.opening import open_ledger
from ledger.plans import Catalog, load_catalog
from ledger.processor import Processor
from ledger.reconcile import Reconciler
from ledger.store.async_writer import AsyncEventWriter
from ledger.store.library import log_channel
from ledger.store.listener import Listener
from ledger.store.url import Store
from ledger.stripe.gateway import StripeGateway
from ledger.usage import Metering
from projections.outbox import Mailer, Outbox
from projections.read_side import ReadSide


class Parts:
    """What one process is made of. Each part is built the first time it is asked
    for, once, from the parts it needs (a command that lists dead receipts opens
    the ledger only); `close` closes what was built, the last built first."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        projections: Sequence[str] | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self._projections = projections  # names; None: every projection
        self._closers: list[Callable[[], None]] = []

    @cached_property
    def catalog(self) -> Catalog:
        return load_catalog(self.settings.plans_file)  # refuses a bad plans file

    @cached_property
    def ledger(self) -> Ledger:
        ledger = open_ledger(self.settings)
        self._closers.append(ledger.close)
        return ledger

    @cached_property
    def listener(self) -> Listener | None:
        """PostgreSQL: this process's one connection that LISTENs for the store's
        notifications (ledger/store/listener.py). None on SQLite."""
        store = Store(self.settings.database_url)
        if not store.is_postgres:
            return None
        listener = Listener(store.conninfo())
        self._closers.append(listener.stop)
        return listener

    def wake_on_log(self, wake: Callable[[], None]) -> bool:
        """Call `wake` whenever events are committed to the log, from now on. False
        where the store cannot tell (SQLite): the caller polls instead."""
        listener = self.listener
        if listener is None:
            return False
        listener.on(log_channel(self.ledger.recorder), wake)
        listener.start()
        return True

    @cached_property
    def processor(self) -> Processor:
        """Stage two: receipts into domain events."""
        processor = Processor(
            self.ledger,
            self.settings.processor_interval_seconds,
            clock_period=self.settings.clock_period_seconds,
        )
        self._closers.append(processor.stop)
        return processor

    @cached_property
    def committer(self) -> Committer:
        """Stage one's writer (webhook receipts and usage records); it wakes stage
        two when that runs in this process. On PostgreSQL it writes from the event
        loop (two connections of its own)."""
        inline = self.settings.processor == "inline"
        wake = self.processor.wake if inline else None
        store = Store(self.settings.database_url)
        if store.is_postgres:
            writers = [AsyncEventWriter(self.ledger.recorder, store.conninfo()) for _ in range(2)]
            return AsyncGroupCommitter(
                self.ledger,
                writers,
                timeout_seconds=self.settings.webhook_write_timeout_seconds,
                on_recorded=wake,
            )
        committer = GroupCommitter(self.ledger, on_recorded=wake)
        self._closers.append(committer.close)
        return committer

    @cached_property
    def thread_committer(self) -> GroupCommitter:
        """Stage one's writer for commands, which have no event loop (`ledger
        backfill`): the thread-based group commit, on either store."""
        committer = GroupCommitter(self.ledger)
        self._closers.append(committer.close)
        return committer

    @cached_property
    def intake(self) -> Intake:
        """Stage one: a webhook's body and signature in, its receipt committed out."""
        config = self.settings
        return Intake(
            self.committer,
            config.webhook_secrets,
            tolerance_seconds=config.webhook_tolerance_seconds,
            write_timeout_seconds=config.webhook_write_timeout_seconds,
        )

    @cached_property
    def read(self) -> ReadSide:
        read = ReadSide(
            self.ledger,
            self.catalog,
            self.settings.database_url,
            names=self._projections,
            interval=self.settings.processor_interval_seconds,
            pool_size=self.settings.db_pool_size,
        )
        self._closers.append(read.close)
        return read

    @cached_property
    def outbox(self) -> Outbox | None:
        """The email outbox; None unless LEDGER_SMTP_URL is set."""
        config = self.settings
        if config.smtp_url is None:
            return None
        read = self.read
        mailer = Mailer(config.smtp_url.get_secret_value(), config.mail_from)
        outbox = Outbox(
            read.store,
            read.notifications_after,
            read.last_cursor,
            mailer,
            config.processor_interval_seconds,
        )
        self._closers.append(outbox.stop)
        return outbox

    @cached_property
    def gateway(self) -> StripeGateway | None:
        """None without STRIPE_SECRET_KEY: billing actions are then refused."""
        config = self.settings
        if config.stripe_secret_key is None:
            return None
        gateway = StripeGateway(
            config.stripe_secret_key.get_secret_value(),
            config.stripe_api_base,
            max_network_retries=config.stripe_max_network_retries,
            payment_behavior=config.stripe_payment_behavior,
            test_payment_method=config.stripe_test_payment_method,
            reads_per_second=config.stripe_reads_per_second,
        )
        self._closers.append(gateway.close)
        return gateway

    @cached_property
    def accounts(self) -> Accounts:
        accounts = Accounts(self.ledger, self.catalog, self.gateway, self.read)
        accounts.tokens.wakeup.interval = self.settings.token_watch_interval_seconds
        self._closers.append(accounts.tokens.stop)
        return accounts

    @cached_property
    def billing(self) -> Billing:
        return Billing(self.ledger, self.catalog, self.gateway, self.read, self.settings.redirects)

    @cached_property
    def metering(self) -> Metering:
        """Usage records, appended through stage one's group commit."""
        return Metering(
            self.ledger,
            self.catalog,
            self.committer,
            write_timeout_seconds=self.settings.webhook_write_timeout_seconds,
        )

    @cached_property
    def backfill(self) -> Backfill:
        """`ledger backfill`: Stripe's events list through stage one. Needs the gateway."""
        if self.gateway is None:
            raise StripeNotConfigured("STRIPE_SECRET_KEY is not set")
        return Backfill(self.ledger, self.gateway, self.thread_committer)

    @cached_property
    def reconciler(self) -> Reconciler:
        """`ledger reconcile`: Stripe's objects against the projections. Needs the gateway."""
        if self.gateway is None:
            raise StripeNotConfigured("STRIPE_SECRET_KEY is not set")
        return Reconciler(self.ledger, self.gateway, self.read)

    def start(self) -> None:
        """The API process: build every part, and run stage two and the projections'
        follower in it when the settings say "inline"."""
        _ = (
            self.catalog,
            self.intake,
            self.read,
            self.accounts,
            self.billing,
            self.metering,
        )  # a bad plans file stops here
        self.accounts.tokens.start()  # keeps token hashes in memory while it follows the log
        self._listen_for_watchers()
        if self.settings.projections == "inline":
            self.processor.after = self.read.follower.wake
            self.read.follower.start()
            if self.outbox is not None:
                self.outbox.start()
        if self.settings.processor == "inline":
            self.ledger.tick(self.settings.clock_period_seconds)  # this period's, before serving
            self.processor.start()

    def _listen_for_watchers(self) -> None:
        """PostgreSQL: the token watch is woken by commits to the log, the read
        side's watch by the projections' commits; their timers then only stand by."""
        listener = self.listener
        if listener is None:
            return
        tokens, watch = self.accounts.tokens.wakeup, self.read.watch.wakeup
        tokens.notified = watch.notified = lambda: listener.listening
        listener.on(self.read.store.moved_channel, self.read.told)
        self.wake_on_log(tokens.wake)  # and starts listening

    async def close_async(self) -> None:
        """What runs on the event loop: stage one's writer on PostgreSQL."""
        committer: Committer | None = self.__dict__.get("committer")
        if committer is not None:
            await committer.aclose()

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()
