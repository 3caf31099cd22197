"""The stream's fan-out on its own: it reads the feed only when the projections'
positions moved, and its stop waits for a read in hand (which runs in a thread,
on a store the shutdown closes next)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from projections.fanout import Fanout


def test_the_feed_is_read_only_when_the_version_moved() -> None:
    version = [(1, 10)]
    reads: list[int] = []
    rows = [{"cursor": 11, "user_id": "u", "kind": "renewed"}]

    def after(cursor: int, limit: int) -> list[dict[str, Any]]:
        reads.append(cursor)
        return [r for r in rows if r["cursor"] > cursor]

    async def run() -> list[Any]:
        fanout = Fanout(after, lambda: 10, version=lambda: version[0])
        fanout.cursor = 10  # as start() would set it
        stream = fanout.subscribe("u")
        assert await fanout.poll() == 1 and reads == [10]
        assert await fanout.poll() == 0 and reads == [10]  # nothing moved: no read
        version[0] = (1, 12)
        rows.append({"cursor": 12, "user_id": "u", "kind": "ended"})
        assert await fanout.poll() == 1 and reads == [10, 11]
        return [await stream.next(1), await stream.next(1)]

    got = asyncio.run(run())
    assert [r["cursor"] for r in got] == [11, 12]


def test_stop_waits_for_the_read_in_hand() -> None:
    reading, finished = threading.Event(), threading.Event()

    def slow_after(cursor: int, limit: int) -> list[dict[str, Any]]:
        reading.set()
        time.sleep(0.3)
        finished.set()
        return []

    async def run() -> None:
        fanout = Fanout(slow_after, lambda: 0, interval=0.01)
        fanout.subscribe("u")  # rows are read only for open streams
        await fanout.start()
        while not reading.is_set():
            await asyncio.sleep(0.01)
        await fanout.stop()
        assert finished.is_set()  # the store may be closed now

    asyncio.run(run())


def test_a_wake_from_another_thread_reads_at_once_not_at_the_next_tick() -> None:
    rows: list[dict[str, Any]] = []

    def after(cursor: int, limit: int) -> list[dict[str, Any]]:
        return [r for r in rows if r["cursor"] > cursor]

    async def run() -> float:
        fanout = Fanout(after, lambda: 0, interval=30)  # the tick alone would take 30 s
        await fanout.start()
        stream = fanout.subscribe("u")
        await asyncio.sleep(0.05)  # the first poll is done; the fan-out sleeps
        rows.append({"cursor": 1, "user_id": "u", "kind": "renewed"})
        started = time.monotonic()
        threading.Thread(target=fanout.wake).start()  # as the runner's thread does
        row = await stream.next(5)
        waited = time.monotonic() - started
        await fanout.stop()
        assert row is not None and row["cursor"] == 1
        return waited

    assert asyncio.run(run()) < 1


def test_with_no_stream_open_no_rows_are_read_and_a_stream_opened_later_misses_none() -> None:
    rows = [{"cursor": c, "user_id": "u", "kind": "renewed"} for c in (11, 12)]
    reads: list[int] = []
    opened: list[Any] = []

    def after(cursor: int, limit: int) -> list[dict[str, Any]]:
        reads.append(cursor)
        return [r for r in rows if r["cursor"] > cursor]

    def last_cursor() -> int:
        return max(r["cursor"] for r in rows)

    async def run() -> list[int]:
        fanout = Fanout(after, last_cursor, version=lambda: len(rows))
        fanout.cursor = 10
        assert await fanout.poll() == 0 and reads == [] and fanout.cursor == 12
        opened.append(fanout.subscribe("u"))  # its backlog (to 12) it reads itself
        rows.append({"cursor": 13, "user_id": "u", "kind": "ended"})
        assert await fanout.poll() == 1 and reads == [12]
        return [(await opened[0].next(1))["cursor"]]

    assert asyncio.run(run()) == [13]


def test_a_stream_opened_while_the_end_is_read_gets_the_rows_after_its_cursor() -> None:
    rows = [{"cursor": 11, "user_id": "u", "kind": "renewed"}]

    def after(cursor: int, limit: int) -> list[dict[str, Any]]:
        return [r for r in rows if r["cursor"] > cursor]

    async def run() -> int:
        fanout = Fanout(after, lambda: 0, version=lambda: len(rows))
        fanout.cursor = 10
        loop = asyncio.get_running_loop()
        streams: list[Any] = []

        def last_cursor() -> int:  # a stream opens meanwhile, on the event loop
            loop.call_soon_threadsafe(lambda: streams.append(fanout.subscribe("u")))
            time.sleep(0.05)
            return 11

        fanout._last_cursor = last_cursor
        assert await fanout.poll() == 1  # it read the rows, and did not skip them
        return (await streams[0].next(1))["cursor"]

    assert asyncio.run(run()) == 11
