"""Runs stage two: follows the log, processes new receipts, retries failed ones,
and records the log's clock ticks (ledger/domain/clock.py).
In the API process it is woken right after each write and on a short timer;
`ledger process` runs the same loop as a process of its own."""

from __future__ import annotations

from collections.abc import Callable

from ledger.application import Ledger
from ledger.loop import WakeableLoop


class Processor(WakeableLoop):
    def __init__(
        self,
        ledger: Ledger,
        interval: float = 0.5,
        after: Callable[[], None] | None = None,
        clock_period: int = 3600,
    ) -> None:
        super().__init__("processor", self.run_once, interval)
        self._ledger = ledger
        self.after = after  # e.g. wake the projections
        self.clock_period = clock_period  # seconds between the log's clock ticks

    def run_once(self) -> None:
        self._ledger.process_new()
        self._ledger.retry_due()
        self._ledger.tick(self.clock_period)
        if self.after is not None:
            self.after()
