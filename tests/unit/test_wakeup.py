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
