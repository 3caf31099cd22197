"""The plan catalog's loader: a YAML file read into the domain's value types
(ledger/domain/catalog.py), checked by pydantic, each error naming its line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from ledger.domain.catalog import Catalog

DEFAULT_PLANS_FILE = Path(__file__).with_name("plans.yaml")
# pydantic's words for a key a dataclass does not name, in the words of a file
_MESSAGES = {"unexpected_keyword_argument": "Extra inputs are not permitted"}


class PlansFileError(ValueError):
    """The plans file is not valid; the message names the file and the line."""


def load_catalog(path: Path | None = None) -> Catalog:
    path = path or DEFAULT_PLANS_FILE
    try:
        text = path.read_text()
    except OSError as exc:
        raise PlansFileError(f"{path}: cannot read the plans file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise PlansFileError(f"{path}{where}: not valid YAML: {exc}") from None
    try:
        return TypeAdapter(Catalog).validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        line = _line_of(root, loc)
        where = ".".join(str(p) for p in loc) or "top level"
        message = _MESSAGES.get(first["type"], first["msg"])
        raise PlansFileError(f"{path}:{line}: {where}: {message}") from None


def _line_of(node: Any, loc: tuple[Any, ...]) -> int:
    """The line of the deepest YAML node on the error's path (1-based)."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == str(part)), None)
            if child is None:  # a missing key: point at the mapping
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if part < len(node.value) else None
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line
