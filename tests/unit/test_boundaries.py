"""The architecture as a test, read from each module's import statements:
api -> projections -> ledger, api -> ledger; inside ledger, services ->
stripe/store -> domain. The README's developer map says the same in words."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, by its full dotted name (relative imports resolved)."""
    package = (
        module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    )
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def offenders(folder: str, allowed, *, exclude: tuple[str, ...] = ()) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in modules(folder):
        if under(module_name(path), *exclude):
            continue
        bad = sorted(n for n in imports_of(path) if not allowed(n))
        if bad:
            found[module_name(path)] = bad
    return found


def test_the_domain_imports_eventsourcing_domain_and_the_standard_library_only() -> None:
    def allowed(name: str) -> bool:
        return (
            name.split(".")[0] in STDLIB
            or under(name, "eventsourcing.domain", "ledger.domain")
            or name
            == "eventsourcing"  # `from eventsourcing import domain` is not used, but harmless
        )

    assert offenders("ledger/domain", allowed) == {}


def test_ledger_imports_neither_api_nor_projections_nor_scripts() -> None:
    assert offenders("ledger", lambda n: not under(n, "api", "projections", "scripts")) == {}


def test_projections_import_neither_api_nor_scripts() -> None:
    assert offenders("projections", lambda n: not under(n, "api", "scripts")) == {}


def test_only_the_stripe_layer_imports_the_stripe_library() -> None:
    for folder in ("ledger", "projections", "api", "scripts"):
        assert offenders(folder, lambda n: not under(n, "stripe"), exclude=("ledger.stripe",)) == {}


def test_stripe_payload_models_are_used_only_by_the_stripe_layer() -> None:
    """Stripe's JSON is parsed in `ledger.stripe` alone: nothing else imports its
    payload models, and the domain and services never parse JSON."""
    for folder in ("ledger", "projections", "api"):
        found = offenders(
            folder, lambda n: not under(n, "ledger.stripe.payloads"), exclude=("ledger.stripe",)
        )
        assert found == {}
    assert offenders("ledger", lambda n: n != "json", exclude=("ledger.stripe",)) == {}


def test_http_is_only_in_api() -> None:
    http = ("starlette", "uvicorn", "httpx", "h11", "requests")
    for folder in ("ledger", "projections"):
        assert offenders(folder, lambda n: not under(n, *http)) == {}


def test_sql_is_only_in_projections_and_the_store_adapter() -> None:
    sql = ("psycopg", "psycopg_pool", "sqlite3", "eventsourcing.postgres", "eventsourcing.sqlite")
    assert offenders("ledger", lambda n: not under(n, *sql), exclude=("ledger.store",)) == {}
    assert offenders("api", lambda n: not under(n, *sql)) == {}


def test_only_the_personal_data_cipher_imports_cryptography() -> None:
    for folder in ("ledger", "projections", "api", "scripts"):
        found = offenders(
            folder, lambda n: not under(n, "cryptography"), exclude=("ledger.personal",)
        )
        assert found == {}


def test_production_code_never_imports_the_developer_tools() -> None:
    for folder in ("ledger", "projections", "api", "scripts"):
        assert (
            offenders(folder, lambda n: not under(n, "scripts.dev"), exclude=("scripts.dev",)) == {}
        )


@pytest.mark.parametrize("folder", ["ledger", "projections", "api", "scripts"])
def test_no_import_circles(folder: str) -> None:
    """Module-level imports between our own modules form no cycle."""
    graph: dict[str, set[str]] = {}
    for path in modules(folder):
        own = {n for n in imports_of(path) if under(n, "ledger", "projections", "api", "scripts")}
        graph[module_name(path)] = {n if n in known else n.rsplit(".", 1)[0] for n in own} & known
    seen: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if seen.get(node) == 1:
            raise AssertionError(" -> ".join([*trail[trail.index(node) :], node]))
        if seen.get(node) == 2:
            return
        seen[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt != node and not (node.startswith(nxt + ".") or f"{nxt}.__init__" == node):
                visit(nxt, [*trail, node])
        seen[node] = 2

    for node in sorted(graph):
        visit(node, [])


known = {
    module_name(p)
    for folder in ("ledger", "projections", "api", "scripts")
    for p in (ROOT / folder).rglob("*.py")
}


def test_the_command_line_starts_without_the_stripe_library() -> None:
    """Only a gateway or a signature check loads it (0.15 s): `ledger projections
    rebuild` and its processes, `ledger verify` and the like start without it."""
    import subprocess
    import sys

    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, scripts.cli; print('stripe' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert loaded.stdout.strip() == "False"
