"""A watcher's pause (`Wakeup`): woken at once; otherwise its own interval, or,
while the store wakes it (`notified`), the slower safety-net pace."""

from __future__ import annotations

import threading
import time

import pytest

from ledger.store import listener
from ledger.store.listener import Wakeup


def paused(wakeup: Wakeup) -> float:
    started = time.monotonic()
    wakeup.pause()
    return time.monotonic() - started


def test_a_watcher_keeps_its_pace_unless_the_store_wakes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(listener, "NOTIFIED", 0.6)
    wakeup = Wakeup(0.05)
    assert paused(wakeup) < 0.4  # nobody listening: its own interval
    wakeup.notified = lambda: True
    assert paused(wakeup) >= 0.6  # listened for: the safety net's pace
    threading.Timer(0.05, wakeup.wake).start()
    assert paused(wakeup) < 0.4  # and a wake-up ends the pause at once
    wakeup.wake()
    wakeup.pause()
    assert paused(wakeup) >= 0.6  # a wake-up is used once


def test_a_spaced_watcher_takes_one_turn_an_interval_however_often_it_is_woken() -> None:
    """The token watch's: in a burst every group of deliveries is a commit that
    wakes it; it reads the log at most once an interval, and a wake-up during the
    wait is not lost (the turn after it comes, only no sooner)."""
    wakeup = Wakeup(0.1, spaced=True)
    wakeup.notified = lambda: True
    stop = threading.Event()

    def storm() -> None:
        while not stop.is_set():
            wakeup.wake()
            time.sleep(0.001)

    threading.Thread(target=storm, daemon=True).start()
    try:
        started, turns = time.monotonic(), 0
        while time.monotonic() - started < 0.55:
            wakeup.pause()
            turns += 1
    finally:
        stop.set()
    assert 3 <= turns <= 7  # about one every 0.1 s, not hundreds
    wakeup.wake()
    assert 0.05 <= paused(wakeup) < 0.4  # woken: its turn comes, an interval after the last
