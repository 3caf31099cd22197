"""Personal data, encrypted at rest with a key per data subject (a Stripe
customer): AES-GCM, the data keys kept in the key table wrapped with the master
key (LEDGER_MASTER_KEY). Erasing a subject deletes its key: what was encrypted
with it can no longer be read by anyone, while the log, and so its seal, stays
as it was (crypto-shredding).

An encrypted value is text: `pd1:<subject>:<base64 of nonce and ciphertext>`.
Anything else (a log written before this existed) is read as it is."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ledger.domain.receipt import Delivery
from ledger.store.keys import KeyTable

PREFIX = "pd1:"
ERASED = "[erased]"
T = TypeVar("T")


def _subject_of(value: str) -> str:
    return value[len(PREFIX) :].rpartition(":")[0]


def _subjects_of(values: Sequence[str | None]) -> set[str]:
    return {_subject_of(v) for v in values if isinstance(v, str) and v.startswith(PREFIX)}


class WrongMasterKey(RuntimeError):
    """LEDGER_MASTER_KEY is not the key the key table was written with."""


class Erased(LookupError):
    """The data subject's key was deleted: this value cannot be read any more."""


class PersonalData:
    """The cipher service: `protect` before a value is stored, `reveal` when it is
    read, `erase` to shred a subject's key."""

    def __init__(self, keys: KeyTable, master_secret: str) -> None:
        self._keys = keys
        self._master = AESGCM(hashlib.sha256(master_secret.encode()).digest())
        self._cache: dict[str, AESGCM] = {}

    # --- writing ------------------------------------------------------------------

    def protect_deliveries(self, items: Sequence[T]) -> list[T]:
        """The items with each delivery's body encrypted under its subject's key;
        deliveries about no customer, and whatever is not a delivery (a usage
        record), are left as they are."""
        self._load({d.data_subject for d in items if isinstance(d, Delivery) and d.data_subject})
        return [
            d.with_payload(self.protect(d.data_subject, d.payload))  # type: ignore[arg-type]
            if isinstance(d, Delivery) and d.data_subject
            else d
            for d in items
        ]

    def missing_keys(self, items: Sequence[object]) -> set[str]:
        """The data subjects of these deliveries whose keys are not in memory yet:
        the async writer stores what `offer` makes for them and `accept`s what the
        store holds, before the deliveries are protected."""
        return {
            d.data_subject
            for d in items
            if isinstance(d, Delivery) and d.data_subject and d.data_subject not in self._cache
        }

    def protect(self, subject: str | None, value: str | None) -> str | None:
        if subject is None or value is None:
            return value
        key = self._cache.get(subject)  # once: another thread may change the entry
        if key is None:
            self._load({subject})
            key = self._cache[subject]
        nonce = os.urandom(12)
        sealed = key.encrypt(nonce, value.encode(), subject.encode())
        return f"{PREFIX}{subject}:{base64.b64encode(nonce + sealed).decode()}"

    def prepare(self, subjects: Collection[str]) -> None:
        """Have the keys of these subjects at hand (made now where there are none)."""
        self._load(subjects)

    def _load(self, subjects: Collection[str]) -> None:
        """Keys of these subjects into memory; new ones made and stored for those
        without (one query for all of them, one more when some are new)."""
        missing = [s for s in subjects if s not in self._cache]
        if not missing:
            return
        wrapped = self._keys.get(missing)
        new = self.offer(s for s in missing if s not in wrapped)
        if new:
            wrapped.update(self._keys.add(new))
        self.accept(wrapped)

    def offer(self, subjects: Iterable[str]) -> dict[str, str]:
        """A new key, wrapped, for each of these subjects not in memory: what a
        writer stores unless the subject has a key already, and then `accept`s
        what the store holds (the async writer does both in one round trip)."""
        return {
            s: self._wrap(s, AESGCM.generate_key(256)) for s in subjects if s not in self._cache
        }

    def accept(self, wrapped: Mapping[str, str]) -> None:
        """The stored keys of these subjects, into memory."""
        for subject, key in wrapped.items():
            self._cache[subject] = AESGCM(self._unwrap(subject, key))

    def _wrap(self, subject: str, key: bytes) -> str:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + self._master.encrypt(nonce, key, subject.encode())).decode()

    def _unwrap(self, subject: str, wrapped: str) -> bytes:
        raw = base64.b64decode(wrapped)
        try:
            return self._master.decrypt(raw[:12], raw[12:], subject.encode())
        except InvalidTag:
            raise WrongMasterKey(
                "LEDGER_MASTER_KEY is not the key the key table was written with"
            ) from None

    # --- reading ------------------------------------------------------------------

    def reveal(self, value: str, *, fresh: bool = False) -> str:
        """The plain value. Raises Erased when its subject's key is gone. `fresh`:
        ask the key table, not this process's memory (for auditors' reads, so
        that an erasure by another process is seen at once)."""
        if not isinstance(value, str) or not value.startswith(PREFIX):
            return value
        subject, _, sealed = value[len(PREFIX) :].rpartition(":")
        key = None if fresh else self._cache.get(subject)
        if key is None:  # read from the table, replacing what is in memory (never a gap
            wrapped = self._keys.get([subject])  # another thread's `protect` would fall in)
            if subject not in wrapped:
                self._cache.pop(subject, None)
                raise Erased(subject)
            key = self._cache[subject] = AESGCM(self._unwrap(subject, wrapped[subject]))
        raw = base64.b64decode(sealed)
        try:
            return key.decrypt(raw[:12], raw[12:], subject.encode()).decode()
        except InvalidTag:
            raise Erased(subject) from None  # a key made after an erasure: not this one

    def shown(self, value: str) -> str:
        """For display: the plain value, or "[erased]"."""
        try:
            return self.reveal(value, fresh=True)
        except Erased:
            return ERASED

    def plain(self, value: str | None) -> str | None:
        """For a user's own reads: the plain value, or None once erased."""
        if value is None:
            return None
        try:
            return self.reveal(value, fresh=True)
        except Erased:
            return None

    def plain_all(self, values: Sequence[str | None]) -> list[str | None]:
        """`plain` of many values, their subjects' keys read fresh in one query
        (not one per value)."""
        subjects = _subjects_of(values)
        if not subjects:
            return list(values)
        wrapped = self._keys.get(sorted(subjects))
        for subject in subjects - wrapped.keys():  # erased: out of memory too
            self._cache.pop(subject, None)
        self.accept(wrapped)  # the others replaced, never missing meanwhile
        return [self._from_memory(v) for v in values]

    def recall(self, values: Sequence[str | None]) -> None:
        """The keys of these values' subjects into memory, those not there yet in
        one query: stage two reveals a batch of receipts at once (a query per new
        subject was a tenth of its time). A subject without a key stays unknown:
        `reveal` then says Erased."""
        self._remember(_subjects_of(values) - self._cache.keys())

    def _remember(self, subjects: Collection[str]) -> None:
        if subjects:
            self.accept(self._keys.get(sorted(subjects)))

    def _from_memory(self, value: str | None) -> str | None:
        if not isinstance(value, str) or not value.startswith(PREFIX):
            return value
        if _subject_of(value) not in self._cache:
            return None  # erased
        try:
            return self.reveal(value)
        except Erased:
            return None

    # --- erasing ------------------------------------------------------------------

    def erase(self, subjects: Collection[str]) -> int:
        """Delete the subjects' keys; returns how many there were."""
        for subject in subjects:
            self._cache.pop(subject, None)
        return self._keys.delete(list(subjects))


class Plain(PersonalData):
    """No master key configured: values are stored as they are (as before)."""

    def __init__(self) -> None:
        self._cache = {}

    def protect_deliveries(self, items: Sequence[T]) -> list[T]:
        return list(items)

    def missing_keys(self, items: Sequence[object]) -> set[str]:
        return set()

    def plain_all(self, values: Sequence[str | None]) -> list[str | None]:
        return [self.plain(v) for v in values]

    def recall(self, values: Sequence[str | None]) -> None:
        pass

    def protect(self, subject: str | None, value: str | None) -> str | None:
        return value

    def reveal(self, value: str, *, fresh: bool = False) -> str:
        if isinstance(value, str) and value.startswith(PREFIX):
            raise Erased("no master key is configured")
        return value

    def erase(self, subjects: Collection[str]) -> int:
        return 0
