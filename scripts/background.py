"""`ledger serve` with LEDGER_PROCESSOR=process or LEDGER_PROJECTIONS=process:
stage two (`ledger process`) and the projections (`ledger projections run`) in
processes of their own beside the API, started before it serves and stopped after
it. In the API's process they took turns with the event loop on one interpreter
lock; on their own each has a core's worth of Python (BENCHMARKS.md: deliveries
fully applied). They are woken when events are committed to the log (on SQLite,
they read its head: ledger/loop.py), and stop by themselves if the API process is
gone.

A process that fails (exits non-zero or is killed) is started again after a
second. One that exits 0, or that SIGINT or SIGTERM ended before it could handle
them (while it was still starting), was asked to stop (Ctrl-C reaches the whole
group) and is left stopped.

They run at a lower priority (`NICENESS`): when the cores are all busy (a burst)
the API answers first and they catch up after. A burst of 20,000 on PostgreSQL,
alternating: webhook p99 70 -> 36 and 46 -> 34 ms, answered in 11.4 -> 7.6 s,
every projection done 3% later (1,454 -> 1,415 and 1,404 -> 1,367 applied/s)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

from ledger.loop import PARENT

log = logging.getLogger("ledger.background")

COMMANDS = {"processor": ("process",), "projections": ("projections", "run")}
NICENESS = 10
# How a process asked to stop ends: exit 0, or ended by the signal itself when it
# came before the process could handle it (Popen's return code is minus the signal).
ASKED_TO_STOP = (0, -signal.SIGINT, -signal.SIGTERM)


def yield_to_the_api() -> None:
    """In a process `ledger serve` started (first thing, so that every thread of
    it has the priority): lower the priority."""
    if os.environ.get(PARENT):
        os.nice(NICENESS)


class Background:
    def __init__(self, commands: Sequence[tuple[str, ...]]) -> None:
        self._commands = list(commands)
        self._children: dict[tuple[str, ...], subprocess.Popen[bytes]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def of(cls, processor: str, projections: str) -> Background:
        """The processes the settings ask for ("process"), none otherwise."""
        wanted = {"processor": processor, "projections": projections}
        return cls([COMMANDS[part] for part, mode in wanted.items() if mode == "process"])

    def start(self) -> None:
        if not self._commands:
            return
        for command in self._commands:
            self._spawn(command)
        self._thread = threading.Thread(target=self._watch, name="background", daemon=True)
        self._thread.start()

    def _spawn(self, command: tuple[str, ...]) -> None:
        env = {**os.environ, PARENT: str(os.getpid())}
        child = subprocess.Popen([sys.executable, "-m", "scripts.cli", *command], env=env)
        self._children[command] = child
        log.info("started `ledger %s` (pid %d)", " ".join(command), child.pid)

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            for command, child in list(self._children.items()):
                code = child.poll()
                if code is None or self._stop.is_set():
                    continue
                if code in ASKED_TO_STOP:
                    log.info("`ledger %s` stopped", " ".join(command))
                    del self._children[command]
                    continue
                log.error("`ledger %s` exited with %d; starting it again", " ".join(command), code)
                self._spawn(command)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to each (the step in hand finishes), SIGKILL after `timeout`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for child in self._children.values():
            if child.poll() is None:
                child.terminate()
        for command, child in self._children.items():
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning(
                    "`ledger %s` did not stop in %.0f s; killing it", " ".join(command), timeout
                )
                child.kill()
                child.wait()
        self._children.clear()
