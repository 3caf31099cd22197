"""The live feed of one API process: a task follows the notifications projection
by cursor (one query for the whole process, not one per open stream) and hands
each new notification to the queues of its user's open streams. It reads when
woken (`wake`, from any thread) and on its own tick; with no stream open it
reads no rows, only where the feed ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

log = logging.getLogger("projections.fanout")

Rows = list[dict[str, Any]]


class Overflowed(Exception):
    """A stream fell too far behind; it ends, and its client resumes by cursor."""


class Subscription:
    """One open stream's queue of notifications (each a row of `notifications_after`)."""

    def __init__(self, fanout: Fanout, user_id: str, maxsize: int) -> None:
        self.fanout, self.user_id = fanout, user_id
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize)

    async def next(self, timeout: float) -> dict[str, Any] | None:
        """The next notification, or None after `timeout` seconds without one."""
        try:
            row = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None
        if row is None:
            raise Overflowed(self.user_id)
        return row

    def close(self) -> None:
        self.fanout.unsubscribe(self)


class Fanout:
    def __init__(
        self,
        after: Callable[[int, int], Rows],
        last_cursor: Callable[[], int],
        interval: float = 0.02,
        batch: int = 500,
        queue_size: int = 1000,
        version: Callable[[], object] | None = None,
    ) -> None:
        self._after = after  # (cursor, limit) -> every user's notifications after it
        self._last_cursor = last_cursor
        self._version = version  # changes when the feed may have: unchanged, no read
        self._quiet_at: object = None
        self.interval = interval
        self._batch = batch
        self._queue_size = queue_size
        self._streams: dict[str, set[Subscription]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._woken = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.cursor = 0

    def subscribe(self, user_id: str) -> Subscription:
        subscription = Subscription(self, user_id, self._queue_size)
        self._streams[user_id].add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        streams = self._streams.get(subscription.user_id)
        if streams is not None:
            streams.discard(subscription)
            if not streams:
                del self._streams[subscription.user_id]

    @property
    def open_streams(self) -> int:
        return sum(len(s) for s in self._streams.values())

    def wake(self) -> None:
        """Read now, not at the next tick (any thread: this process's runner
        calls it when it has applied events)."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._woken.set)

    async def start(self) -> None:
        self._stopping = asyncio.Event()  # of this loop
        self._woken = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.cursor = await asyncio.to_thread(self._last_cursor)
        self._task = asyncio.create_task(self._run(), name="notifications-fanout")

    async def stop(self) -> None:
        """Let the poll in hand finish (its read runs in a thread, which a
        cancellation would leave running on a store about to be closed), then
        end; cancel only if it does not end in time."""
        if self._task is not None:
            self._stopping.set()
            self._woken.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 10)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        self._loop = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.poll()
            except Exception:  # the store is away: streams wait, and catch up after
                log.warning("cannot read notifications; trying again", exc_info=True)
                await self._pause(1)
            await self._pause(self.interval)

    async def _pause(self, seconds: float) -> None:
        """Until `seconds` have passed, or it is woken (or stopped)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), seconds)
        self._woken.clear()

    async def poll(self) -> int:
        """Hand out what is new; returns how many notifications were read."""
        version = await asyncio.to_thread(self._version) if self._version else None
        if version is not None and version == self._quiet_at:
            return 0
        if not self._streams:  # no one to hand rows to: move to the end, read none
            last = await asyncio.to_thread(self._last_cursor)
            # Checked again after the read: a stream that opens later reads its
            # backlog after subscribing, so it finds every row up to `last` stored.
            if not self._streams:
                self.cursor = max(self.cursor, last)
                self._quiet_at = version
                return 0
        done = 0
        while True:
            rows = await asyncio.to_thread(self._after, self.cursor, self._batch)
            for row in rows:
                self._deliver(row)
            done += len(rows)
            if rows:
                self.cursor = rows[-1]["cursor"]
            if len(rows) < self._batch:  # whole cursors are read: fewer means no more
                self._quiet_at = version  # read to the end as of that version
                return done

    def _deliver(self, row: dict[str, Any]) -> None:
        for subscription in list(self._streams.get(row["user_id"], ())):
            try:
                subscription.queue.put_nowait(row)
            except asyncio.QueueFull:
                self.unsubscribe(subscription)
                subscription.queue.get_nowait()  # room for the end mark
                subscription.queue.put_nowait(None)
