"""What each projection declares of its tables holds together."""

from __future__ import annotations

import pytest

from projections.registry import PROJECTIONS


@pytest.mark.parametrize("cls", PROJECTIONS.values(), ids=list(PROJECTIONS))
def test_reader_indexes_are_indexes_of_the_projection(cls: type) -> None:
    """A name there that is no index of the projection (a typo) would keep the index
    it meant in a rebuild's scratch tables: slower, silently."""
    assert cls.reader_indexes <= set(cls.indexes)
