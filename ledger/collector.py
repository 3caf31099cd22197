"""The cyclic garbage collector's first threshold for the ledger's processes.

Python collects its youngest generation every 700 net allocations of container
objects. A batch of 1,000 usage records (or a pass of the projections over
thousands of events) makes tens of thousands that live for the whole request, so
at 700 most of them were scanned, promoted, and scanned again by the older
generations' collections: 2 ms of every 17 ms batch, and a full collection of
the heap every few batches. At 10,000 they are mostly freed (by reference
counting) before any collection sees them; a young collection then takes well
under a millisecond. Measured: usage batches on PostgreSQL went from 17.8 to 13.3
µs of server CPU per record (BENCHMARKS.md).

A long pass over the log (a rebuild's fold) also leaves out of every collection
what was alive before it (`frozen`): the modules, the projections, the catalog.
The older generations' collections of a fold scanned them again and again."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG = 10_000


def tune() -> None:
    """Raise the youngest generation's threshold (the older two stay as they are)."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG, older, oldest)


@contextmanager
def frozen() -> Iterator[None]:
    """What is alive now is kept out of the collector's scans until the block
    ends (`gc.freeze`); what the block makes is collected as ever."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
