"""The API's memory of status rows forgets everything when the projection moves,
and never keeps a row read before such a move."""

from __future__ import annotations

from projections.status_cache import MISSING, StatusCache


def test_rows_are_forgotten_when_the_projection_moves() -> None:
    position = [(1, 10)]
    cache = StatusCache(lambda: position[0])
    cache.check()
    cache.put("u1", {"status": "active"}, cache.epoch)
    assert cache.get("u1") == {"status": "active"}
    cache.check()  # nothing moved
    assert cache.get("u1") == {"status": "active"}
    position[0] = (1, 11)
    cache.check()
    assert cache.get("u1") is MISSING
    position[0] = (2, 11)  # a rebuild swapped in a new generation
    cache.put("u1", {"status": "active"}, cache.epoch)
    cache.check()
    assert cache.get("u1") is MISSING


def test_a_row_read_before_a_move_is_not_kept() -> None:
    position = [(1, 10)]
    cache = StatusCache(lambda: position[0])
    cache.check()
    epoch = cache.epoch  # a reader starts its query ...
    position[0] = (1, 11)
    cache.check()  # ... the projection moves meanwhile ...
    cache.put("u1", {"status": "past_due"}, epoch)  # ... and its (stale) row arrives
    assert cache.get("u1") is MISSING
