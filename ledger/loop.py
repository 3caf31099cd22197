"""A background step run when woken and on a timer, that survives its errors:
stage two (`Processor`) and the projections' follower both run on one.

In a process of its own (`ledger process`, `ledger projections run`) nobody in the
process wakes it. On PostgreSQL the store does: a listener (ledger/store/listener.py)
wakes it whenever events are committed to the log. On SQLite, which cannot tell,
it reads the log's head every `HEAD_POLL` seconds and runs as soon as the head has
moved (a cheap read). The timer runs it in any case. Started by `ledger serve`
(LEDGER_PROCESSOR=process), it stops when that parent is gone, so that no orphan
keeps working on the store."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

from eventsourcing.persistence import PersistenceError

log = logging.getLogger("ledger.loop")

HEAD_POLL = 0.01  # seconds between two reads of the log's head, in a process of its own
PARENT = "LEDGER_PARENT_PID"  # set by `ledger serve` for the processes it starts
STOP_POLL = 0.05  # seconds between two looks at the stop flag a signal raised


class WakeableLoop:
    def __init__(self, name: str, step: Callable[[], object], interval: float) -> None:
        self.name = name
        self.interval = interval
        self._step = step
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._signalled = False

    def wake(self) -> None:
        self._wake.set()

    def run_forever(self, head: Callable[[], int] | None = None) -> None:
        """Run the step when woken, when the timer runs out and, given `head` (the
        log's head), when it has moved since the last look (every HEAD_POLL s)."""
        seen, due = None, 0.0
        parent = int(os.environ.get(PARENT, "0"))
        while not self._stop.is_set():
            woken = self._wake.wait(self.interval if head is None else HEAD_POLL)
            self._wake.clear()
            try:
                if not woken and parent and os.getppid() != parent:
                    log.warning("%s: the process that started it is gone; stopping", self.name)
                    return
                if head is not None and not woken:
                    now, moved = time.monotonic(), head()
                    if moved == seen and now < due:
                        continue
                    seen, due = moved, now + self.interval
                self._step()
            except PersistenceError as exc:
                log.warning(
                    "%s: the store is unavailable (%s); trying again", self.name, type(exc).__name__
                )
                self._stop.wait(min(5.0, self.interval * 4))
            except Exception:
                log.exception("%s: unexpected error; trying again", self.name)
                self._stop.wait(min(5.0, self.interval * 4))

    def run_in_foreground(self, head: Callable[[], int] | None = None) -> None:
        """A command's main loop: SIGTERM or Ctrl-C lets the step in hand finish
        (its transaction commits or rolls back whole), then returns. `head`: see
        `run_forever`.

        The loop runs in a thread of its own and the signal handler only raises a
        flag, which the main thread passes on. A handler runs in the main thread
        between two of its bytecodes: one that set the loop's events while the
        main thread held their lock (inside `Event.wait`) waited on itself for
        good, and the process never stopped."""
        self._signalled = False

        def handler(*_: object) -> None:
            self._signalled = True  # no lock taken here

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, handler)
        log.info("%s: running; SIGTERM or Ctrl-C stops it", self.name)
        worker = threading.Thread(target=self.run_forever, args=(head,), name=self.name)
        worker.start()
        while worker.is_alive():
            worker.join(STOP_POLL)
            if self._signalled:
                self.request_stop()
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
