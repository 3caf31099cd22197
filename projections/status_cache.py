"""The API's memory of subscription_status rows: the hot read ("is this user
premium?") answered without a query while the projection has not moved. A
watcher thread (`Watch`) reads the projection's position every 25 ms, or on
PostgreSQL as soon as the store tells that projections committed (every 0.5 s
besides), and forgets every row when it moved: an answer is at most that much
behind the tables."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ledger.store.listener import Wakeup

log = logging.getLogger("projections.status_cache")
MISSING: Any = object()


class StatusCache:
    def __init__(
        self,
        position: Callable[[], tuple[int, ...]],
        maxsize: int = 200_000,
    ) -> None:
        self._position = position  # (generation, tracking position) of the projections read
        self._maxsize = maxsize
        self._rows: dict[str, Any] = {}
        self._seen: tuple[int, ...] | None = None

    def get(self, user_id: str) -> Any:
        return self._rows.get(user_id, MISSING)

    @property
    def epoch(self) -> dict[str, Any]:
        """Take this before reading a row; give it back to `put`."""
        return self._rows

    def put(self, user_id: str, row: Any, epoch: dict[str, Any]) -> None:
        """Keep a row read during `epoch`. A row read before a change goes into the
        dictionary that change replaced, where nobody looks any more."""
        if len(epoch) < self._maxsize:
            epoch[user_id] = row

    def forget(self) -> None:
        self._rows = {}

    def check(self) -> None:
        seen = self._position()
        if seen != self._seen:
            self._seen = seen
            self.forget()

    def check_or_forget(self) -> None:
        try:
            self.check()
        except Exception:  # the store is away: answer from the tables meanwhile
            log.warning("cannot read the projection's position; not caching", exc_info=True)
            self.forget()
            self._seen = None


class Watch:
    """One thread that checks several caches every `interval` (their positions
    come from one read of the projections' positions: see ReadSide.tracked), then
    calls each of `also` (the stream's fan-out is woken from there)."""

    def __init__(
        self,
        caches: Sequence[StatusCache],
        interval: float = 0.025,
        also: Sequence[Callable[[], None]] = (),
    ) -> None:
        self._caches = list(caches)
        self._also = list(also)
        self.wakeup = Wakeup(interval)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        for cache in self._caches:
            cache.check_or_forget()
        self._thread = threading.Thread(target=self._run, name="cache-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wakeup.wake()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.wakeup.pause()
            if self._stop.is_set():
                return
            for cache in self._caches:
                cache.check_or_forget()
            for step in self._also:
                try:
                    step()
                except Exception:  # the store is away: the step's next turn will tell
                    log.warning("cache watch: %s failed", step, exc_info=True)
