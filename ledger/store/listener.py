"""Wake-ups from PostgreSQL's LISTEN/NOTIFY, in place of polling.

Every insert into the log sends a NOTIFY on the library's channel (its own
insert path and stage one's writer both do, inside the inserting transaction:
PostgreSQL delivers it at commit, folding a transaction's identical ones into
one). A `Listener` holds one connection of its own that LISTENs on some
channels and calls a function for each notification: a process that follows
the log runs as soon as something is committed, and reads nothing while nothing
is (polling the head every 10 ms cost each such process 40 ms of CPU a second,
and PostgreSQL about as much again, with nothing to do).

The functions only wake someone (set an event): they run on the listener's
thread. While the connection is down the listener connects again every
`RECONNECT` seconds and, once connected, calls every function once, since what
was committed meanwhile went unnoticed. Those it wakes keep a timer of their
own as a safety net."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg
from psycopg.sql import SQL, Identifier

log = logging.getLogger("ledger.listener")

NAME = "ledger listener"  # its application_name in pg_stat_activity
RECONNECT = 1.0  # seconds between two attempts to connect
TURN = 0.2  # seconds at most between two looks at the stop flag


class Listener:
    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._channels: dict[str, list[Callable[[], None]]] = {}
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._thread: threading.Thread | None = None

    def on(self, channel: str, wake: Callable[[], None]) -> None:
        """Call `wake` for each notification on `channel` (before `start`: the
        channels are listened to when connecting)."""
        if self._thread is not None:
            raise RuntimeError("a listener's channels are given before it starts")
        self._channels.setdefault(channel, []).append(wake)

    @property
    def listening(self) -> bool:
        """Whether notifications are being received now."""
        return self._listening.is_set()

    def start(self, timeout: float = 5.0) -> None:
        """Start listening; wait up to `timeout` for the first connection (later
        ones are the thread's business)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="listener", daemon=True)
        self._thread.start()
        self._listening.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        failed = False
        while not self._stop.is_set():
            try:
                connect = psycopg.connect(self._conninfo, autocommit=True, application_name=NAME)
                with connect as conn:
                    for channel in self._channels:
                        conn.execute(SQL("LISTEN {0}").format(Identifier(channel)))
                    self._listening.set()
                    if failed:
                        log.info("listening for the store's notifications again")
                        failed = False
                    self._wake_all()  # what was committed before this connection
                    while not self._stop.is_set():
                        for notification in conn.notifies(timeout=TURN):
                            for wake in self._channels.get(notification.channel, ()):
                                wake()
            except psycopg.Error as exc:
                if not failed:
                    log.warning(
                        "cannot listen for the store's notifications (%s); the timers serve "
                        "meanwhile",
                        type(exc).__name__,
                    )
                failed = True
            finally:
                self._listening.clear()
            self._stop.wait(RECONNECT)

    def _wake_all(self) -> None:
        for wakes in self._channels.values():
            for wake in wakes:
                wake()


NOTIFIED = 0.5  # seconds between a watcher's turns while the store wakes it


class Wakeup:
    """A watcher's pause between two turns: until it is woken, or its `interval`
    has passed; while `notified()` (a listener is listening for what it watches),
    the timer is only a safety net and runs every `NOTIFIED` seconds. `spaced`:
    two turns are at least `interval` apart however often it is woken (the
    wake-ups between them make one turn)."""

    def __init__(self, interval: float, *, spaced: bool = False) -> None:
        self.interval = interval
        self.spaced = spaced
        self.notified: Callable[[], bool] = lambda: False
        self._event = threading.Event()
        self._turn = 0.0  # when the last pause ended

    def wake(self) -> None:
        self._event.set()

    def pause(self) -> None:
        self._event.wait(NOTIFIED if self.notified() else self.interval)
        if self.spaced and (rest := self._turn + self.interval - time.monotonic()) > 0:
            time.sleep(rest)
        self._event.clear()
        self._turn = time.monotonic()
