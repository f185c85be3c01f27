"""The garbage collector's settings for a long-running guard process (`run`, `agi`, `serve`).

CPython's cycle collector runs a young-generation pass every 700 net allocations of container
objects and, now and then, a full pass over every object of the process. A guard holds the
numbering plan, the holiday tables, aiohttp and redis-py (tens of thousands of objects that
live as long as the process), and at 100 requests in flight the objects of the requests still
being answered alone pass 700 many times a second: on `npv-guard serve` under `bench.api` the
collector ran about once every 25 requests, and each full pass stopped the event loop for
tens of milliseconds, straight into the p99 of every answer waiting behind it
(docs/performance.md). The decisions make almost no reference cycles (garbage is freed by
reference counting), so the collector finds next to nothing.

`settle()`, once the process has built everything it keeps: one full collection, then
`gc.freeze()` (what exists now is never walked again) and a young generation of
`YOUNG_THRESHOLD` objects, so that the requests in flight no longer trigger a pass each.
Nothing is kept longer than before except cyclic garbage, for at most that many allocations.
"""

from __future__ import annotations

import gc

# Net container allocations between two young-generation passes (CPython's default: 700). Above
# what 100 requests in flight hold at once, so that a pass runs for garbage, not for them.
YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Freeze the objects built at start-up and widen the young generation (see the module)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
