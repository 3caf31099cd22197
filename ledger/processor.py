"""Runs stage two: follows the log, processes new receipts, retries failed ones.
In the API process it is woken right after each write and on a short timer;
`ledger process` runs the same loop as a process of its own."""

from __future__ import annotations

from collections.abc import Callable

from ledger.application import Ledger
from ledger.loop import WakeableLoop


class Processor(WakeableLoop):
    def __init__(
        self, ledger: Ledger, interval: float = 0.5, after: Callable[[], None] | None = None
    ) -> None:
        super().__init__("processor", self.run_once, interval)
        self._ledger = ledger
        self.after = after  # e.g. wake the projections

    def run_once(self) -> None:
        self._ledger.process_new()
        self._ledger.retry_due()
        if self.after is not None:
            self.after()
