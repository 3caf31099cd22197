"""Builds the write side from settings: the ledger, its intake and its processor."""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger.application import Ledger
from ledger.config import Settings
from ledger.intake import GroupCommitter
from ledger.processor import Processor
from ledger.store.url import Store


def open_ledger(settings: Settings, *, pool_size: int = 5) -> Ledger:
    """Opens (and on first use creates) the event store named by DATABASE_URL."""
    store = Store(settings.database_url)
    env = store.env(pool_size=pool_size)
    env["CREATE_TABLE"] = "y"
    env["PROCESS_RECORDER_TOPIC"] = (
        "ledger.store.recorders:BinaryProcessRecorder"
        if store.is_postgres
        else "ledger.store.recorders:SQLiteLedgerRecorder"
    )
    return Ledger(
        env,
        cache_size=settings.aggregate_cache_size,
        retry_attempts=settings.retry_attempts,
        retry_base_seconds=settings.retry_base_seconds,
    )


@dataclass
class WriteSide:
    settings: Settings
    ledger: Ledger
    processor: Processor
    intake: GroupCommitter = field(init=False)

    def __post_init__(self) -> None:
        inline = self.settings.processor == "inline"
        self.intake = GroupCommitter(
            self.ledger, on_recorded=self.processor.wake if inline else None
        )
        if inline:
            self.processor.start()

    @classmethod
    def start(cls, settings: Settings) -> WriteSide:
        ledger = open_ledger(settings, pool_size=8)
        return cls(settings, ledger, Processor(ledger, settings.processor_interval_seconds))

    def close(self) -> None:
        self.intake.close()
        self.processor.stop()
        self.ledger.close()
