"""The background loop in a process of its own: it runs its step when the log's head
moves (read every HEAD_POLL seconds), not only when its timer runs out."""

from __future__ import annotations

import threading
import time

from ledger.loop import HEAD_POLL, WakeableLoop


def test_a_moved_head_runs_the_step_long_before_the_timer_would() -> None:
    head, ran = [0], []
    loop = WakeableLoop("test", lambda: ran.append(time.monotonic()), interval=60.0)
    thread = threading.Thread(target=loop.run_forever, kwargs={"head": lambda: head[0]})
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not ran and time.monotonic() < deadline:
            time.sleep(HEAD_POLL)
        assert len(ran) == 1  # the first look runs it
        time.sleep(HEAD_POLL * 10)
        assert len(ran) == 1  # the head has not moved, the timer is far off: not again
        moved = time.monotonic()
        head[0] = 7
        while len(ran) < 2 and time.monotonic() < moved + 5:
            time.sleep(HEAD_POLL / 2)
        assert len(ran) == 2 and ran[1] - moved < 0.5
    finally:
        loop.request_stop()
        thread.join(timeout=5)
    assert not thread.is_alive()
