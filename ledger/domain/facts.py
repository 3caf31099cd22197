"""Field lists declared once: a created event extends the facts dataclass it
records, and the aggregate's `__init__` takes, and assigns, the event's fields."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields
from inspect import Parameter, Signature
from typing import Any, TypeVar

from eventsourcing.domain import Aggregate

F = TypeVar("F", bound=Callable[..., None])

_EVENT_BASE = frozenset(f.name for f in fields(Aggregate.Created))  # id, version, time, topic


def takes_fields_of(created: type) -> Callable[[F], F]:
    """Name the parameters of `__init__(self, **given)` after the created event's own
    fields: the library builds the event from the call, and picks what to pass
    back on replay, by the names in `__init__`'s signature (it takes no **kwargs)."""
    names = [f.name for f in fields(created) if f.name not in _EVENT_BASE]
    signature = Signature(
        [
            Parameter("self", Parameter.POSITIONAL_OR_KEYWORD),
            *(Parameter(name, Parameter.KEYWORD_ONLY) for name in names),
        ]
    )

    def named(init: F) -> F:
        init.__signature__ = signature  # type: ignore[attr-defined]
        return init

    return named


def values_of(facts: Any, shape: type | None = None) -> dict[str, Any]:
    """The fields of `shape` (by default, facts' own class) taken from `facts`, by
    name; nested values stay as they are (asdict would turn a Price into a dict)."""
    return {f.name: getattr(facts, f.name) for f in fields(shape or type(facts))}


def assign(target: object, shape: type, given: Mapping[str, Any]) -> None:
    """Set each field of `shape` on `target` from `given`."""
    for f in fields(shape):
        setattr(target, f.name, given[f.name])
