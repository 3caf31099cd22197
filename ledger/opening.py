"""Opens the ledger on the event store that DATABASE_URL names."""

from __future__ import annotations

from ledger.application import Ledger
from ledger.config import Settings
from ledger.personal import PersonalData
from ledger.store.keys import KeyTable
from ledger.store.url import Store


def open_ledger(settings: Settings, *, pool_size: int | None = None) -> Ledger:
    """Opens (and on first use creates) the event store named by DATABASE_URL;
    its pool of `pool_size` connections (LEDGER_DB_POOL_SIZE by default)."""
    store = Store(settings.database_url)
    env = store.env(pool_size=pool_size or settings.db_pool_size)
    env["CREATE_TABLE"] = "y"
    env["PROCESS_RECORDER_TOPIC"] = (
        "ledger.store.recorders:BinaryProcessRecorder"
        if store.is_postgres
        else "ledger.store.recorders:SQLiteLedgerRecorder"
    )
    with store.creating_tables():  # processes started together take turns
        ledger = Ledger(
            env,
            cache_size=settings.aggregate_cache_size,
            retry_attempts=settings.retry_attempts,
            retry_base_seconds=settings.retry_base_seconds,
        )
    if settings.master_key is not None:  # else personal data is stored as it comes
        keys = KeyTable(ledger.recorder, is_postgres=store.is_postgres)
        ledger.personal = PersonalData(keys, settings.master_key.get_secret_value())
    return ledger
