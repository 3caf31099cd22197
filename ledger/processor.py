"""Runs stage two: follows the log, processes new receipts, retries failed ones.
In the API process it is woken right after each write and on a short timer;
`ledger process` runs the same loop as a process of its own."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from eventsourcing.persistence import PersistenceError

from ledger.application import Ledger

log = logging.getLogger("ledger.processor")


class Processor:
    def __init__(
        self, ledger: Ledger, interval: float = 0.5, after: Callable[[], None] | None = None
    ) -> None:
        self._ledger = ledger
        self.after = after  # e.g. wake the projections
        self._interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        self._wake.set()

    def run_once(self) -> None:
        self._ledger.process_new()
        self._ledger.retry_due()
        if self.after is not None:
            self.after()

    def run_forever(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            try:
                self.run_once()
            except PersistenceError as exc:
                log.warning("the store is unavailable (%s); trying again", type(exc).__name__)
                self._stop.wait(min(5.0, self._interval * 4))
            except Exception:
                log.exception("stage two stopped on an unexpected error; trying again")
                self._stop.wait(min(5.0, self._interval * 4))

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_forever, name="processor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
