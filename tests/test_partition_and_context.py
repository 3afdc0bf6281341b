"""Stage partitioning (alpha skew rounding) and the public context store."""

from __future__ import annotations

import threading

import pytest

from auras.context.store import PublicContextStore
from auras.errors import ConfigError, InvalidInputError
from auras.partition import skewed_steps, split_evenly


def test_split_evenly():
    assert split_evenly(6, 3) == [range(0, 2), range(2, 4), range(4, 6)]
    assert [len(r) for r in split_evenly(7, 3)] == [3, 2, 2]
    with pytest.raises(ConfigError, match="cannot cut 2 layers into 3 stages"):
        split_evenly(2, 3)


VALID = [(t, s, a) for t in (4, 25, 100) for s in (1, 2, 4, 5) for a in (0.0, 0.5, 1.0, 3.0) if s <= t]


@pytest.mark.parametrize(("total", "stages", "alpha"), VALID)
def test_skewed_steps_invariants(total, stages, alpha):
    steps = skewed_steps(total, stages, alpha)
    assert len(steps) == stages and sum(steps) == total and min(steps) >= 1
    assert steps == sorted(steps)  # later (fresher) stages never get fewer steps


def test_skewed_steps_values():
    assert skewed_steps(100, 4, 0.0) == [25, 25, 25, 25]  # the paper's Fig. 9b example
    # 1 each, then 20 shared by e^0..e^4 (0.23, 0.63, 1.72, 4.68, 12.73): floors 0,0,1,4,12 and the
    # 3 leftover steps go to the largest fractions (.73, .72, .68)
    assert skewed_steps(25, 5, 1.0) == [1, 1, 3, 6, 14]
    assert skewed_steps(5, 5, 10.0) == [1, 1, 1, 1, 1]
    with pytest.raises(ConfigError, match="cannot spread 3 generation iterations over 4 stages"):
        skewed_steps(3, 4)


def test_store_versions_staleness_and_single_writer():
    store = PublicContextStore()
    store.claim("H_o", "perception")
    with pytest.raises(InvalidInputError, match="expected writes from its owner 'perception', got 'generation'"):
        store.claim("H_o", "generation")
    with pytest.raises(KeyError, match="not been written"):
        store.read("H_o")
    store.write("H_o", "ctx-1", frame=1, owner="perception", source=10)
    store.write("H_o", "ctx-2", frame=2, owner="perception", source=11)
    newest = store.read("H_o", frame=5)
    assert (newest.value, newest.frame, newest.source) == ("ctx-2", 2, 11)
    assert store.read("H_o", frame=1).value == "ctx-1"  # fetch_offset -1 reads the previous frame
    store.write("H_o", "ctx-3", frame=3, owner="perception")
    with pytest.raises(KeyError, match="oldest kept: 2"):  # double buffer: only 2 versions live
        store.read("H_o", frame=1)
    with pytest.raises(InvalidInputError, match="expected frame >= 3"):
        store.write("H_o", "late", frame=2, owner="perception")
    with pytest.raises(InvalidInputError, match="got 'generation'"):
        store.write("H_o", "x", frame=4, owner="generation")
    assert newest.written_at <= store.read("H_o").written_at


def test_store_readers_never_see_a_partial_value_under_concurrent_writes():
    store = PublicContextStore()
    store.claim("X", "writer")
    store.write("X", (0, 0), frame=0, owner="writer")
    errors: list[str] = []

    def reader() -> None:
        for _ in range(20_000):
            snap = store.read("X")
            if snap.value != (snap.frame, snap.frame):
                errors.append(repr(snap))

    thread = threading.Thread(target=reader)
    thread.start()
    for frame in range(1, 20_000):
        store.write("X", (frame, frame), frame=frame, owner="writer")
    thread.join(timeout=30)
    assert not thread.is_alive() and errors == []
