"""`ledger serve` with personal data stored as it comes, not encrypted: the
other side of the benchmark of what encryption costs the whole ingest path
(`python -m scripts.dev.bench --only ingest-encryption`). A developer's tool in
scripts/dev (not shipped), not a setting of the service.

    python -m scripts.dev.serve_plain serve --port 8001
"""

from __future__ import annotations

import sys

import ledger.opening as opening
from ledger.application import Ledger
from ledger.personal import Plain

_open_ledger = opening.open_ledger


def _plain_ledger(*args: object, **kwargs: object) -> Ledger:
    ledger = _open_ledger(*args, **kwargs)  # type: ignore[arg-type]
    ledger.personal = Plain()
    return ledger


opening.open_ledger = _plain_ledger  # before api.bootstrap imports it

if __name__ == "__main__":
    from scripts.cli import main

    sys.exit(main(sys.argv[1:]))
