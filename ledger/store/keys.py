"""The key table: one data key per data subject (a Stripe customer), stored
wrapped (encrypted with the master key), in the log's own database. Deleting a
subject's row is what erases its personal data (crypto-shredding)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError
from eventsourcing.utils import retry

from ledger.store.library import datastore_of

TABLE = "ledger_personal_keys"
# PostgreSQL: every new key in one statement (a subject that has one keeps it),
# and the keys of some subjects; the async writer uses them too
UPSERT_ALL = (
    f"INSERT INTO {TABLE} (subject, wrapped) "  # noqa: S608
    "SELECT * FROM unnest(%s::text[], %s::text[]) ON CONFLICT (subject) DO NOTHING"
)
READ_ALL = f"SELECT subject, wrapped FROM {TABLE} WHERE subject = ANY(%s)"  # noqa: S608


class KeyTable:
    def __init__(self, recorder: Any, *, is_postgres: bool) -> None:
        self._datastore = datastore_of(recorder)
        self._is_postgres = is_postgres
        self._mark = "%s" if is_postgres else "?"
        self._upsert = (
            f"INSERT INTO {TABLE} (subject, wrapped) VALUES ({self._mark}, {self._mark}) "  # noqa: S608
            "ON CONFLICT (subject) DO NOTHING"
        )
        with self._datastore.transaction(commit=True) as c:
            c.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} "
                "(subject TEXT PRIMARY KEY, wrapped TEXT NOT NULL)"
            )

    def _marks(self, n: int) -> str:
        return ",".join([self._mark] * n)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def get(self, subjects: Collection[str]) -> dict[str, str]:
        """The wrapped keys of those subjects that have one."""
        if not subjects:
            return {}
        with self._datastore.transaction(commit=False) as c:
            return self._read(c, subjects)

    def _read(self, c: Any, subjects: Collection[str]) -> dict[str, str]:
        c.execute(
            f"SELECT subject, wrapped FROM {TABLE} "  # noqa: S608
            f"WHERE subject IN ({self._marks(len(subjects))})",
            list(subjects),
        )
        return {row["subject"]: row["wrapped"] for row in c.fetchall()}

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def add(self, wrapped: dict[str, str]) -> dict[str, str]:
        """Store new keys; a subject that got one meanwhile (another process) keeps
        its own. Returns the keys now stored for those subjects. One transaction:
        the inserts (one statement on PostgreSQL), then the read, which sees a
        key another process committed first (its insert waited for that one)."""
        with self._datastore.transaction(commit=True) as c:
            if self._is_postgres:
                c.execute(UPSERT_ALL, (list(wrapped), list(wrapped.values())))
            else:
                c.executemany(self._upsert, list(wrapped.items()))
            return self._read(c, list(wrapped))

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def delete(self, subjects: Collection[str]) -> int:
        if not subjects:
            return 0
        present = len(self.get(subjects))
        with self._datastore.transaction(commit=True) as c:
            c.execute(
                f"DELETE FROM {TABLE} WHERE subject IN ({self._marks(len(subjects))})",  # noqa: S608
                list(subjects),
            )
        return present
