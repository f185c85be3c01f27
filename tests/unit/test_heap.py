"""heap.settle: what a started guard process does to the garbage collector."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from npv_guard import heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_settle_freezes_the_start_up_heap_and_widens_the_young_generation() -> None:
    gc.unfreeze()
    kept = [[i] for i in range(1000)]  # objects a guard builds at start-up and keeps
    middle, old = gc.get_threshold()[1:]
    heap.settle()
    assert gc.get_freeze_count() >= len(kept)
    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, middle, old)


@pytest.mark.usefixtures("restored_gc")
def test_cyclic_garbage_made_after_settle_is_still_collected() -> None:
    heap.settle()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None
