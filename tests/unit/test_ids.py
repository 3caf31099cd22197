"""`id_text` is `str` of the id, whatever it remembered, and remembers a bounded
number of ids."""

from __future__ import annotations

from uuid import UUID

from hypothesis import given
from hypothesis import strategies as st

from ledger.domain import ids
from ledger.domain.ids import id_text, name_uuid


@given(st.lists(st.uuids(), max_size=50))
def test_it_is_str_of_the_id(made: list[UUID]) -> None:
    for uuid in made + made[::-1]:  # again, remembered
        assert id_text(uuid) == str(uuid)


def test_what_it_remembers_is_bounded() -> None:
    for n in range(ids._TEXTS_KEPT + 10):
        assert id_text(name_uuid(str(n))) == str(name_uuid(str(n)))
        assert len(ids._TEXTS) <= ids._TEXTS_KEPT
    assert id_text(name_uuid("0")) == str(name_uuid("0"))  # forgotten, and made again
