"""Keeps the layering honest: api -> projections -> ledger, api -> ledger; ledger
imports neither; aggregates know nothing of Stripe's library or JSON."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AGGREGATES = ["receipt", "customer", "subscription", "invoice", "checkout"]


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "ledger").glob("*.py")), ids=lambda p: p.name)
def test_ledger_imports_neither_api_nor_projections(path: Path) -> None:
    assert not imports_of(path) & {"api", "projections", "scripts"}


@pytest.mark.parametrize("path", sorted((ROOT / "projections").glob("*.py")), ids=lambda p: p.name)
def test_projections_do_not_import_api(path: Path) -> None:
    assert not imports_of(path) & {"api", "scripts"}


@pytest.mark.parametrize("name", AGGREGATES)
def test_aggregates_know_nothing_of_stripe(name: str) -> None:
    path = ROOT / "ledger" / f"{name}.py"
    assert "stripe" not in imports_of(path)
    assert "stripe_payloads" not in path.read_text()


def test_stripe_json_is_read_in_one_module_only() -> None:
    """Incoming Stripe events are parsed in stripe_payloads; outgoing calls' answers
    in stripe_gateway. (plans.py validates our own YAML.)"""
    readers = sorted(
        p.name
        for p in (ROOT / "ledger").glob("*.py")
        if "model_validate" in p.read_text() or "json.loads" in p.read_text()
    )
    assert readers == ["plans.py", "stripe_payloads.py"]
    importers = sorted(p.name for p in (ROOT / "ledger").glob("*.py") if "stripe" in imports_of(p))
    assert importers == ["intake.py", "stripe_gateway.py"]
