"""The store packs its hot-path commands itself: byte for byte what redis-py sends."""

from __future__ import annotations

from redis.asyncio.connection import Connection

from npv_guard.store import _pack


def test_pack_is_what_redis_py_sends() -> None:
    parts = (b"EVALSHA", "0123abcd", 4, "npv:{acme|ab}:a", "é:ünïcode", -1700000000000, "", 64)
    assert _pack(*parts) == b"".join(Connection().pack_command(*parts))
