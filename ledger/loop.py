"""A background step run when woken and on a timer, that survives its errors:
stage two (`Processor`) and the projections' follower both run on one."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from eventsourcing.persistence import PersistenceError

log = logging.getLogger("ledger.loop")


class WakeableLoop:
    def __init__(self, name: str, step: Callable[[], object], interval: float) -> None:
        self.name = name
        self.interval = interval
        self._step = step
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        self._wake.set()

    def run_forever(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self._step()
            except PersistenceError as exc:
                log.warning(
                    "%s: the store is unavailable (%s); trying again", self.name, type(exc).__name__
                )
                self._stop.wait(min(5.0, self.interval * 4))
            except Exception:
                log.exception("%s: unexpected error; trying again", self.name)
                self._stop.wait(min(5.0, self.interval * 4))

    def run_in_foreground(self) -> None:
        """A command's main loop: SIGTERM or Ctrl-C lets the step in hand finish
        (its transaction commits or rolls back whole), then returns."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.request_stop())
        log.info("%s: running; SIGTERM or Ctrl-C stops it", self.name)
        self.run_forever()
        log.info("%s: stopped", self.name)

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_forever, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
