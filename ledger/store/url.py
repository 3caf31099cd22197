"""Where the log lives: turns DATABASE_URL into the `eventsourcing` library's settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

# pg_advisory_lock key taken while the log's tables are created ("ledger" in ASCII)
SCHEMA_LOCK = 0x6C6564676572


class UnsupportedDatabaseURL(ValueError):
    pass


@dataclass(frozen=True)
class Store:
    """One event store: SQLite in a file, or a PostgreSQL database (and schema)."""

    url: str

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith(("postgresql://", "postgres://"))

    @property
    def sqlite_path(self) -> Path:
        parsed = urlparse(self.url)
        # sqlite:///var/ledger.db is relative, sqlite:////abs/ledger.db absolute
        return Path(unquote(parsed.path[1:] if parsed.path.startswith("/") else parsed.path))

    def env(self, *, pool_size: int = 8, sqlite_path: Path | None = None) -> dict[str, str]:
        """Environment for an eventsourcing Application, recorder or factory (on
        PostgreSQL a pool of `pool_size` connections, and as many more for a moment)."""
        if self.is_postgres:
            parsed = urlparse(self.url)
            query = parse_qs(parsed.query)
            env = {
                "PERSISTENCE_MODULE": "eventsourcing.postgres",
                "POSTGRES_DBNAME": unquote(parsed.path.lstrip("/")) or "postgres",
                "POSTGRES_HOST": parsed.hostname or "127.0.0.1",
                "POSTGRES_PORT": str(parsed.port or 5432),
                "POSTGRES_USER": unquote(parsed.username or "postgres"),
                "POSTGRES_PASSWORD": unquote(parsed.password or ""),
                "POSTGRES_POOL_SIZE": str(pool_size),
                "POSTGRES_MAX_OVERFLOW": str(pool_size),
                "POSTGRES_CONNECT_TIMEOUT": "2",
                "POSTGRES_LOCK_TIMEOUT": "10",
                # No pre-ping (a round trip per checkout): a dead connection fails its
                # statement, which the library retries on a fresh one.
                "POSTGRES_PRE_PING": "n",
            }
            if "schema" in query:
                env["POSTGRES_SCHEMA"] = query["schema"][0]
            return env
        if self.url.startswith("sqlite://"):
            path = sqlite_path or self.sqlite_path
            path.parent.mkdir(parents=True, exist_ok=True)
            return {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(path),
                "SQLITE_LOCK_TIMEOUT": "30",
            }
        raise UnsupportedDatabaseURL(
            "DATABASE_URL must start with sqlite:// or postgresql://, "
            f"not {self.url.split(':')[0]!r}"
        )

    def conninfo(self, *, connect_timeout: int = 2) -> str:
        """A libpq connection string for the PostgreSQL database (and schema)."""
        from psycopg.conninfo import make_conninfo

        env = self.env()
        parts = {
            "dbname": env["POSTGRES_DBNAME"],
            "host": env["POSTGRES_HOST"],
            "port": env["POSTGRES_PORT"],
            "user": env["POSTGRES_USER"],
            "password": env["POSTGRES_PASSWORD"],
            "connect_timeout": str(connect_timeout),
            "keepalives_idle": "10",
            "keepalives_interval": "2",
            "keepalives_count": "3",
        }
        if "POSTGRES_SCHEMA" in env:
            parts["options"] = f"-c search_path={env['POSTGRES_SCHEMA']}"
        return make_conninfo(**{k: v for k, v in parts.items() if v})

    @contextmanager
    def creating_tables(self) -> Iterator[None]:
        """On PostgreSQL, processes opening the ledger at the same moment (API
        processes, `ledger process`, `ledger projections run` started together)
        take turns: the library's table creation runs `CREATE OR REPLACE FUNCTION`
        every time, and two of those at once fail with "tuple concurrently
        updated". On SQLite nothing is needed (its write lock serializes them)."""
        if not self.is_postgres:
            yield
            return
        import psycopg

        with psycopg.connect(self.conninfo(connect_timeout=10), autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))

    def sibling_sqlite(self, name: str) -> Path:
        """A file next to the log for a store of its own (the SQLite recorder's
        table names are fixed, so each store needs its own file)."""
        path = self.sqlite_path
        return path.with_name(f"{path.stem}.{name}{path.suffix or '.db'}")
