"""The seal: a hash chain that follows the log in order, like a projection (so
ingest is not slowed), over every stored row as stored:

    hash_n = SHA-256(hash_{n-1} || position || originator id || version || topic || state)

one row per position, its position tracked in the same transaction, and a
checkpoint every CHECKPOINT_EVERY events. `verify` walks the log and the seal
side by side and names the first position where they disagree: a row edited,
deleted, or inserted (at a position the seal had passed without seeing it)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from eventsourcing.persistence import IntegrityError, Notification
from pydantic import BaseModel

from ledger.application import Ledger
from ledger.store.recorders import LogRow
from projections.base import Writer, column_types
from projections.store import ViewStore

GENESIS = bytes(32)
CHECKPOINT_EVERY = 10_000
KEY = "seal"
TABLES = {
    "seal_chain": "position BIGINT PRIMARY KEY, hash TEXT NOT NULL",
    "seal_checkpoints": (
        "position BIGINT PRIMARY KEY, hash TEXT NOT NULL, sealed_at DOUBLE PRECISION NOT NULL"
    ),
}
TYPES = {table: column_types(columns) for table, columns in TABLES.items()}


def link(previous: bytes, n: Notification | LogRow) -> bytes:
    """One link of the chain. Fixed-width integers and length-prefixed text, so
    no two different rows give the same input."""
    topic = n.topic.encode()
    state = n.state if isinstance(n.state, bytes) else str(n.state).encode()  # a tampered type
    return hashlib.sha256(
        b"".join(
            (
                previous,
                n.id.to_bytes(8, "big", signed=True),
                n.originator_id.bytes,  # type: ignore[union-attr]
                n.originator_version.to_bytes(8, "big", signed=True),
                len(topic).to_bytes(4, "big"),
                topic,
                len(state).to_bytes(8, "big"),
                state,
            )
        )
    ).digest()


class SealCheckpoint(BaseModel):
    position: int
    hash: str
    sealed_at: datetime


class SealHead(BaseModel):
    """What an auditor records outside the system: with it, even a rewrite of
    the whole chain is detectable later."""

    position: int
    hash: str
    events: int
    log_head: int
    lag: int
    checkpoint: SealCheckpoint | None


@dataclass(frozen=True)
class Verdict:
    events: int
    head: str
    position: int | None = None  # the first position where log and seal disagree
    problem: str = ""  # "edited", "deleted", "inserted", "differs from the recorded head"

    @property
    def ok(self) -> bool:
        return self.position is None

    def __str__(self) -> str:
        if self.ok:
            return f"verified {self.events:,} events, head {self.head}"
        return f"position {self.position}: {self.problem} (after {self.events:,} verified events)"


class Seal:
    def __init__(self, ledger: Ledger, store: ViewStore, batch_size: int = 5000) -> None:
        self.ledger = ledger
        self.store = store
        self.batch_size = batch_size
        with store.transaction(pipeline=False) as c:  # a schema change
            for table, columns in TABLES.items():
                c.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")

    def position(self) -> int:
        return self.store.position(KEY)

    def _hash_at(self, position: int) -> bytes:
        if position == 0:
            return GENESIS
        with self.store.transaction(commit=False) as c:
            rows = c.query("SELECT hash FROM seal_chain WHERE position = :p", {"p": position})
        return bytes.fromhex(rows[0]["hash"])

    def run_once(self) -> int:
        """Seal what the log holds past the seal's position; returns how many.
        A second sealer of the same store fails on the position and rolls back."""
        done = 0
        try:
            while True:
                sealed = self._seal_batch()
                done += sealed
                if sealed < self.batch_size:
                    return done
        except IntegrityError:
            return done

    def _seal_batch(self) -> int:
        position = self.position()
        notifications = self.ledger.recorder.read_notifications(
            position + 1, self.batch_size, None, None
        )
        if not notifications:
            return 0
        previous = self._hash_at(position)
        links, checkpoints = [], []
        for n in notifications:
            previous = link(previous, n)
            links.append({"position": n.id, "hash": previous.hex()})
            if n.id // CHECKPOINT_EVERY != position // CHECKPOINT_EVERY:
                checkpoints.append({**links[-1], "sealed_at": time.time()})
            position = n.id
        with self.store.transaction() as c:
            self.store.record_position(c, KEY, position)
            # on PostgreSQL one statement for the batch's links (binary arrays)
            w = Writer(c, {table: table for table in TABLES}, TYPES)
            w.insert_rows("seal_chain", links)
            w.insert_rows("seal_checkpoints", checkpoints)
        return len(notifications)

    def head(self) -> SealHead:
        position = self.position()
        log_head = self.ledger.recorder.max_notification_id() or 0
        with self.store.reading() as c:
            count = c.query(
                "SELECT COUNT(*) AS n FROM seal_chain WHERE position <= :p", {"p": position}
            )[0]["n"]
            last = c.query(
                "SELECT position, hash, sealed_at FROM seal_checkpoints "
                "ORDER BY position DESC LIMIT 1"
            )
        checkpoint = None
        if last:
            row = last[0]
            checkpoint = SealCheckpoint(
                position=row["position"],
                hash=row["hash"],
                sealed_at=datetime.fromtimestamp(row["sealed_at"], UTC),
            )
        return SealHead(
            position=position,
            hash=self._hash_at(position).hex(),
            events=count,
            log_head=log_head,
            lag=log_head - position,
            checkpoint=checkpoint,
        )

    def verify(
        self,
        progress: Callable[[int], None] | None = None,
        recorded: tuple[int, str] | None = None,
    ) -> Verdict:
        """Recompute the chain from the log and compare it with the seal, up to the
        seal's position. `recorded`: a (position, hash) an auditor kept outside."""
        until = self.position()
        previous, events = GENESIS, 0
        log = self._log(until)
        seal = self._chain(until)
        n, s = next(log, None), next(seal, None)
        while n is not None or s is not None:
            if s is None or (n is not None and n.id < s[0]):
                assert n is not None
                return Verdict(events, previous.hex(), n.id, "inserted (not in the seal)")
            if n is None or s[0] < n.id:
                return Verdict(events, previous.hex(), s[0], "deleted (sealed, not in the log)")
            previous = link(previous, n)
            if previous.hex() != s[1]:
                return Verdict(events, previous.hex(), n.id, "edited (its hash differs)")
            if recorded and n.id == recorded[0]:
                if previous.hex() != recorded[1]:
                    return Verdict(events, previous.hex(), n.id, "differs from the recorded head")
                recorded = None
            events += 1
            if progress and events % 1000 == 0:
                progress(n.id)
            n, s = next(log, None), next(seal, None)
        if recorded:
            return Verdict(events, previous.hex(), recorded[0], "the recorded head is not sealed")
        return Verdict(events, previous.hex())

    def _log(self, until: int) -> Iterator[Notification | LogRow]:
        position = 0
        while True:
            batch = self.ledger.recorder.read_notifications(
                position + 1, self.batch_size, until, None
            )
            yield from batch
            if len(batch) < self.batch_size:
                return
            position = batch[-1].id

    def _chain(self, until: int) -> Iterator[tuple[int, str]]:
        position = 0
        while True:
            with self.store.transaction(commit=False) as c:
                rows = c.query(
                    "SELECT position, hash FROM seal_chain WHERE position > :after "
                    "AND position <= :until ORDER BY position LIMIT :limit",
                    {"after": position, "until": until, "limit": self.batch_size},
                )
            yield from ((r["position"], r["hash"]) for r in rows)
            if len(rows) < self.batch_size:
                return
            position = rows[-1]["position"]
