"""Follows the log's token events (`User.TokenRotated`, `User.TokensRevoked`) so
that every API process forgets a rotated or revoked token as soon as it is
recorded, wherever it was recorded: read every `interval` seconds (20 ms by
default) or, on PostgreSQL, when the store tells that events were committed to
the log (ledger/store/listener.py; every 0.5 s besides), at most once an
`interval`: in a burst every group of deliveries is a commit, and a read for
each cost the API process a twentieth of its CPU. A process trusts the
token hashes it keeps in memory only while this watch runs; otherwise each
authentication reads the log. While the store does not answer, nothing can be
recorded there either, so what is kept stays trusted (the hot reads of known
users keep answering through an outage)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from uuid import UUID

from eventsourcing.domain import get_topic
from eventsourcing.persistence import PersistenceError

from ledger.application import Ledger
from ledger.domain.user import User
from ledger.store.listener import Wakeup

log = logging.getLogger("ledger.tokens")
TOPICS = [get_topic(User.TokenRotated), get_topic(User.TokensRevoked)]


class TokenWatch:
    def __init__(
        self,
        ledger: Ledger,
        forget: Callable[[list[UUID]], None],
        interval: float = 0.02,
    ) -> None:
        self._ledger = ledger
        self._forget = forget
        self.wakeup = Wakeup(interval, spaced=True)
        self._cursor = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def is_current(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._cursor = self._ledger.recorder.max_notification_id() or 0
        self._thread = threading.Thread(target=self._run, name="token-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wakeup.wake()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def poll(self) -> None:
        """Read the token events recorded since the last poll; forget their users.
        The cursor moves to the head read first, token events or not: each poll
        reads what was recorded since the last one, not everything since the last
        token event (a batch of usage records is 1,000 rows that are none). The
        log's notification ids are committed in order (the library's lock), so
        none can appear at or below that head later."""
        head = self._ledger.recorder.max_notification_id() or 0
        while self._cursor < head:
            batch = self._ledger.recorder.select_notifications(
                start=self._cursor + 1, limit=500, stop=head, topics=TOPICS
            )
            if batch:
                self._forget([n.originator_id for n in batch])
                self._cursor = batch[-1].id
            if len(batch) < 500:
                self._cursor = head
                return

    def _run(self) -> None:
        while not self._stop.is_set():
            self.wakeup.pause()
            if self._stop.is_set():
                return
            try:
                self.poll()
            except PersistenceError:  # nothing can be revoked through it meanwhile
                log.warning("cannot read token events; retrying")
