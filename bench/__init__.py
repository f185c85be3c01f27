"""How many calls per second one guard handles: `python -m bench.run` (see docs/performance.md)."""
