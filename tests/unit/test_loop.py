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


_FOREGROUND = """
import sys
from ledger.loop import WakeableLoop
print("ready", flush=True)
WakeableLoop("test", lambda: None, interval=float(sys.argv[1])).run_in_foreground(
    head=(lambda: 0) if sys.argv[2] == "head" else None
)
"""


def test_sigterm_at_any_moment_stops_a_foreground_loop() -> None:
    """The signal may land while the loop waits on its own wake-up event: the
    handler must not wait on that event's lock (a loop once hung there for good)."""
    import random
    import signal
    import subprocess
    import sys

    for i in range(12):
        mode = ("head", "0.01") if i % 2 else ("none", "0.005")
        child = subprocess.Popen(
            [sys.executable, "-c", _FOREGROUND, mode[1], mode[0]], stdout=subprocess.PIPE
        )
        try:
            assert child.stdout is not None and child.stdout.readline() == b"ready\n"
            time.sleep(random.uniform(0.05, 0.15))
            child.send_signal(signal.SIGTERM)
            assert child.wait(timeout=5) == 0
        finally:
            child.kill()
            child.wait()


_HANDLER = """
import signal, threading
from ledger.loop import WakeableLoop
handlers = {}
signal.signal = lambda signum, handler: handlers.setdefault(signum, handler)
loop = WakeableLoop("test", lambda: None, interval=0.01)
worker = threading.Thread(target=loop.run_in_foreground, kwargs={"head": lambda: 0})
worker.start()
while signal.SIGTERM not in handlers:
    pass
with loop._wake._cond, loop._stop._cond:  # where a signal may find the main thread
    handlers[signal.SIGTERM](signal.SIGTERM, None)
worker.join(5)
print("stopped" if not worker.is_alive() else "running", flush=True)
"""


def test_the_stop_signals_handler_takes_no_lock_of_the_loop() -> None:
    """Deterministically, the moment the loop hung at: the handler runs while the
    loop's event locks are held in the same thread, returns, and the loop stops."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _HANDLER], capture_output=True, timeout=30)
    assert done.stdout == b"stopped\n", done.stderr.decode()[-2000:]
