"""The personal-data cipher on its own, with an in-memory key table."""

from __future__ import annotations

from collections.abc import Collection

import pytest

from ledger.domain.receipt import Delivery
from ledger.personal import ERASED, Erased, PersonalData, Plain, WrongMasterKey

MASTER = "mk_unit_" + "k" * 32


class MemoryKeys:
    def __init__(self) -> None:
        self.rows: dict[str, str] = {}

    def get(self, subjects: Collection[str]) -> dict[str, str]:
        return {s: self.rows[s] for s in subjects if s in self.rows}

    def add(self, wrapped: dict[str, str]) -> dict[str, str]:
        for s, k in wrapped.items():
            self.rows.setdefault(s, k)
        return self.get(list(wrapped))

    def delete(self, subjects: Collection[str]) -> int:
        return sum(self.rows.pop(s, None) is not None for s in subjects)


def cipher(keys: MemoryKeys | None = None) -> PersonalData:
    return PersonalData(keys or MemoryKeys(), MASTER)  # type: ignore[arg-type]


def test_a_value_round_trips_and_is_not_stored_in_clear() -> None:
    personal = cipher()
    sealed = personal.protect("cus_1", "ada@example.com")
    assert sealed is not None and sealed.startswith("pd1:cus_1:") and "ada" not in sealed
    assert sealed != personal.protect("cus_1", "ada@example.com")  # a fresh nonce each time
    assert personal.reveal(sealed) == "ada@example.com"
    assert personal.protect("cus_1", None) is None and personal.protect(None, "x") == "x"


def test_erasing_a_subject_makes_its_values_unreadable_and_no_one_elses() -> None:
    keys = MemoryKeys()
    personal = cipher(keys)
    mine, theirs = personal.protect("cus_1", "ada"), personal.protect("cus_2", "bob")
    assert personal.erase(["cus_1"]) == 1
    with pytest.raises(Erased):
        personal.reveal(mine)  # type: ignore[arg-type]
    other_process = cipher(keys)  # shares only the key table
    assert other_process.shown(mine) == ERASED  # type: ignore[arg-type]
    assert other_process.shown(theirs) == "bob"  # type: ignore[arg-type]


def test_a_value_from_before_the_key_table_reads_as_it_is() -> None:
    assert cipher().reveal('{"id": "evt_1"}') == '{"id": "evt_1"}'
    assert Plain().reveal("ada@example.com") == "ada@example.com"


def test_deliveries_about_a_customer_are_encrypted_the_others_not() -> None:
    personal = cipher()
    about = Delivery("evt_1", "customer.created", 1, None, False, '{"a": 1}', data_subject="cus_1")
    anonymous = Delivery("evt_2", "price.created", 1, None, False, '{"b": 2}')
    sealed, kept = personal.protect_deliveries([about, anonymous])
    assert sealed.payload.startswith("pd1:cus_1:") and personal.reveal(sealed.payload) == '{"a": 1}'
    assert kept == anonymous


def test_another_master_key_does_not_open_the_key_table() -> None:
    keys = MemoryKeys()
    sealed = cipher(keys).protect("cus_1", "ada")
    wrong = PersonalData(keys, "another-master-key-" + "z" * 32)  # type: ignore[arg-type]
    with pytest.raises(WrongMasterKey):
        wrong.reveal(sealed)  # type: ignore[arg-type]


def test_many_values_are_revealed_with_one_read_of_the_key_table_erasures_seen_at_once() -> None:
    keys = MemoryKeys()
    writer = cipher(keys)
    ada, bob, ada2 = (
        writer.protect(s, v) for s, v in [("cus_1", "ada"), ("cus_2", "bob"), ("cus_1", "ada2")]
    )
    reader = cipher(keys)
    reads: list[Collection[str]] = []
    get = keys.get
    keys.get = lambda subjects: (reads.append(subjects), get(subjects))[1]  # type: ignore[method-assign]
    assert reader.plain_all([ada, None, "as it was", bob, ada2]) == [
        "ada",
        None,
        "as it was",
        "bob",
        "ada2",
    ]
    assert len(reads) == 1
    writer.erase(["cus_1"])  # by another process: the next call reads fresh
    assert reader.plain_all([ada, bob]) == [None, "bob"] and len(reads) == 2
    assert Plain().plain_all(["x", None]) == ["x", None]


def test_a_batch_recalls_the_keys_it_lacks_in_one_read_and_an_erased_one_stays_erased() -> None:
    keys = MemoryKeys()
    writer = cipher(keys)
    ada, bob, cid = (
        writer.protect(s, v) for s, v in [("cus_1", "ada"), ("cus_2", "bob"), ("cus_3", "cid")]
    )
    writer.erase(["cus_3"])
    reader = cipher(keys)
    reads: list[list[str]] = []
    get = keys.get
    keys.get = lambda subjects: (reads.append(sorted(subjects)), get(subjects))[1]  # type: ignore[method-assign]
    reader.recall([ada, "as it was", None, bob, cid])
    assert reads == [["cus_1", "cus_2", "cus_3"]]
    assert [reader.reveal(v) for v in (ada, bob, "as it was")] == ["ada", "bob", "as it was"]  # type: ignore[arg-type]
    assert len(reads) == 1  # revealed from memory
    reader.recall([ada, bob])
    assert len(reads) == 1  # nothing lacking: no read
    with pytest.raises(Erased):
        reader.reveal(cid)  # type: ignore[arg-type]
    Plain().recall([ada])  # nothing to recall without a master key


def test_a_fresh_read_never_leaves_a_key_out_of_memory_while_it_reads_the_table() -> None:
    """The API's reads ask the key table afresh (an erasure by another process is
    seen at once) while the event loop's ingest encrypts with the keys in memory:
    a key taken out of memory during the read made a delivery of that customer
    fail (KeyError, answered 503). A fresh read replaces the key; only an erased
    one leaves memory."""
    keys = MemoryKeys()
    personal = cipher(keys)
    ada = personal.protect("cus_1", "ada")
    present: list[bool] = []
    get = keys.get

    def watched(subjects: Collection[str]) -> dict[str, str]:
        present.append("cus_1" in personal._cache)  # what a concurrent `protect` sees
        return get(subjects)

    keys.get = watched  # type: ignore[method-assign]
    assert personal.shown(ada) == "ada"
    assert personal.plain_all([ada]) == ["ada"]
    assert present == [True, True]
    assert "cus_1" in personal._cache
    keys.delete(["cus_1"])  # erased by another process
    assert personal.plain_all([ada]) == [None] and "cus_1" not in personal._cache
    assert personal.shown(ada) == ERASED
