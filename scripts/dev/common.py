"""What the benchmark sections share: the ledger opened on the store under test,
and their tables' cells and layout."""

from __future__ import annotations

from typing import Any

from scripts.dev import loadgen


def open_store(database_url: str) -> Any:
    """The ledger opened in this process, to read positions and receipts."""
    from pydantic import SecretStr

    from ledger.config import Settings
    from ledger.opening import open_ledger

    settings = Settings(
        DATABASE_URL=database_url,
        STRIPE_WEBHOOK_SECRET=SecretStr(loadgen.DEFAULT_SECRET),
        LEDGER_ADMIN_TOKEN=SecretStr("adm_bench"),
        LEDGER_MASTER_KEY=SecretStr(loadgen.MASTER_KEY),
        LEDGER_PROCESSOR="off",
    )  # type: ignore[call-arg]
    return open_ledger(settings, pool_size=1)


def figure(value: Any) -> str:
    """A table cell: "-" for a missing figure, floats to one decimal."""
    if value is None:
        return "-"
    return f"{value:,.1f}" if isinstance(value, float) else str(value)


def render_table(rows: list[tuple[str, ...]]) -> str:
    """Rows as aligned columns (the first left, the others right), the first row
    the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
