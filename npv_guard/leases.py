"""Redundant guards, on the store's side: the guards' registry and the per-call leases.

    {prefix}:ha:<pbx>:guards:all     SET     the app names of the guards that ever registered here
    {prefix}:ha:<pbx>:guard:<app>    STRING  JSON entry of the guard serving <app>: instance, host,
                                             pid, state, calls, seen_ms / expires_ms (Redis time)
    {prefix}:ha:<pbx>:call:<dialer>  STRING  JSON lease of one call: owner instance, its app, the
                                             fencing token (bumped at every change of owner), expires_ms

<pbx> is the Asterisk the guards serve (`pbx_of`: the host and port of `ari.url`): the PBXes of a
call centre share one prefix (their attempts and refusals count together), and each has its own
guards, which may all use the default app name.

Every instant is Redis's own (TIME, inside the scripts): one clock for all the guards, whatever
their hosts' clocks or a replayed NPV_GUARD_NOW say. Whether an entry or a lease still holds is
computed from its expires_ms; the key TTLs only clean up. Each script touches one key, so the
same code runs on a single server, behind Sentinel and on a Cluster.

A call has a lease only once its ownership was in question: taken over from a dead or stopping
guard, or adopted again by a guard after its own restart. A fresh call belongs to the guard whose
Stasis app holds it, for as long as that guard's registry entry holds.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.parse
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Any

from npv_guard.store import Store

CLEANUP_MS = 86_400_000  # a dead guard's entry stays visible to `doctor` for a day

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

# KEYS: entry. ARGV: instance, lease ms, entry JSON, "claim" | "renew", cleanup ms. Returns {1, json} when the
# entry is ours now, {0, json of the other entry} when another instance holds it: on "claim" while
# it holds (a live guard serves this app), on "renew" at all (someone took our app over).
_GUARD = (
    _NOW
    + """
local cur = redis.call('GET', KEYS[1])
if cur then
  local c = cjson.decode(cur)
  if c.instance ~= ARGV[1] then
    if ARGV[4] == 'renew' or tonumber(c.expires_ms) > now then return {0, cur} end
  end
end
local e = cjson.decode(ARGV[3])
e.instance = ARGV[1]
e.seen_ms = now
e.expires_ms = now + tonumber(ARGV[2])
local out = cjson.encode(e)
redis.call('SET', KEYS[1], out, 'PX', ARGV[5])
return {1, out}
"""
)

# KEYS: lease. ARGV: instance, app, lease ms. Taken when absent, expired or already ours; the
# token goes up whenever the owner changes. Returns {1, token} or {0, json of the holder}.
_ACQUIRE = (
    _NOW
    + """
local cur = redis.call('GET', KEYS[1])
local token = 1
if cur then
  local c = cjson.decode(cur)
  if c.owner ~= ARGV[1] and tonumber(c.expires_ms) > now then return {0, cur} end
  token = tonumber(c.token) + (c.owner == ARGV[1] and 0 or 1)
end
local lease = cjson.encode({owner = ARGV[1], app = ARGV[2], token = token, expires_ms = now + tonumber(ARGV[3])})
redis.call('SET', KEYS[1], lease, 'PX', math.max(tonumber(ARGV[3]) * 20, 600000))
return {1, token}
"""
)

# KEYS: lease. ARGV: instance, token, lease ms ("0": offered, any guard may take it at once).
# Returns 1 while the lease is still ours with that token, 0 when it was lost.
_RENEW = (
    _NOW
    + """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local c = cjson.decode(cur)
if c.owner ~= ARGV[1] or tonumber(c.token) ~= tonumber(ARGV[2]) then return 0 end
c.expires_ms = now + tonumber(ARGV[3])
redis.call('SET', KEYS[1], cjson.encode(c), 'PX', math.max(tonumber(ARGV[3]) * 20, 600000))
return 1
"""
)

# KEYS: lease. ARGV: instance, token. The call is over: its lease goes, if it is still ours.
_RELEASE = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local c = cjson.decode(cur)
if c.owner ~= ARGV[1] or tonumber(c.token) ~= tonumber(ARGV[2]) then return 0 end
return redis.call('DEL', KEYS[1])
"""


def new_instance() -> str:
    """This process's identity in the registry: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class GuardEntry:
    app: str
    instance: str
    state: str  # connected | disconnected | draining | standby | stopped
    calls: int
    seen_ms: int
    expires_ms: int
    now_ms: int  # Redis time when the entry was read

    @property
    def alive(self) -> bool:
        return self.state != "stopped" and self.expires_ms > self.now_ms

    @classmethod
    def decode(cls, raw: Any, now_ms: int) -> GuardEntry:
        data = json.loads(raw)
        return cls(
            app=str(data.get("app", "")),
            instance=str(data.get("instance", "")),
            state=str(data.get("state", "")),
            calls=int(data.get("calls", 0)),
            seen_ms=int(data.get("seen_ms", 0)),
            expires_ms=int(data.get("expires_ms", 0)),
            now_ms=now_ms,
        )


@dataclass(frozen=True)
class Lease:
    owner: str
    app: str
    token: int
    expires_ms: int
    now_ms: int

    @property
    def live(self) -> bool:
        return self.expires_ms > self.now_ms


def pbx_of(ari_url: str) -> str:
    """The Asterisk an ARI URL reaches, as the registry names it: host:port, the default port
    written out, so that `http://pbx` and `http://pbx:80` are one PBX."""
    parts = urllib.parse.urlsplit(ari_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = (parts.hostname or "").lower()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Registry:
    """The guards' registry and the call leases of one Asterisk (`pbx`, see `pbx_of`) in one prefix."""

    def __init__(self, store: Store, app: str, instance: str, lease_s: float, *, pbx: str) -> None:
        self.store = store
        self.pbx = pbx
        self.app = app
        self.instance = instance
        self.lease_ms = int(lease_s * 1000)
        client = store.redis
        self._guard = client.register_script(_GUARD)
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def _key(self, kind: str, name: str) -> str:
        return f"{self.store.prefix}:ha:{self.pbx}:{kind}:{name}"

    async def _now_ms(self) -> int:
        seconds, micros = await self.store.exchange("time", self.store.redis.time, idempotent=True)
        return int(seconds) * 1000 + int(micros) // 1000

    # ------------------------------------------------------------------ guards

    async def register(self, state: str, calls: int, *, claim: bool) -> tuple[bool, GuardEntry]:
        """Write our entry (`claim`: only if no live guard holds the app; else: only if it is still
        ours). Returns whether it is ours, and the entry now stored."""
        entry = json.dumps(
            {"app": self.app, "host": socket.gethostname(), "pid": os.getpid(), "state": state, "calls": calls}
        )
        lease = 0 if state == "stopped" else self.lease_ms
        ok, raw = await self.store.exchange(
            "guard registry",
            lambda: self._guard(
                keys=[self._key("guard", self.app)],
                args=[self.instance, lease, entry, "claim" if claim else "renew", CLEANUP_MS],
            ),
        )
        if claim and ok:
            await self.store.exchange(
                "guard registry", lambda: self.store.redis.sadd(self._key("guards", "all"), self.app)
            )
        data = json.loads(raw)
        now = int(data.get("seen_ms", 0)) if ok else await self._now_ms()
        return bool(ok), GuardEntry.decode(raw, now)

    async def guards(self) -> list[GuardEntry]:
        """Every guard of this prefix, live or not, by app name."""
        client = self.store.redis
        apps = await self.store.exchange(
            "guard registry", lambda: client.smembers(self._key("guards", "all")), idempotent=True
        )
        now = await self._now_ms()
        entries = []
        for app in sorted(a.decode() if isinstance(a, bytes) else str(a) for a in apps):
            raw = await self.store.exchange(
                "guard registry", partial(client.get, self._key("guard", app)), idempotent=True
            )
            if raw is not None:
                entries.append(GuardEntry.decode(raw, now))
        return entries

    # ------------------------------------------------------------------ calls

    async def lease(self, dialer: str) -> Lease | None:
        client = self.store.redis
        key = self._key("call", dialer)
        raw = await self.store.exchange("call lease", lambda: client.get(key), idempotent=True)
        if raw is None:
            return None
        data = json.loads(raw)
        return Lease(
            str(data.get("owner", "")),
            str(data.get("app", "")),
            int(data.get("token", 0)),
            int(data.get("expires_ms", 0)),
            await self._now_ms(),
        )

    async def acquire(self, dialer: str) -> int | None:
        """The fencing token of our lease on the call, or None when a live guard holds it."""
        ok, value = await self.store.exchange(
            "call lease",
            lambda: self._acquire(keys=[self._key("call", dialer)], args=[self.instance, self.app, self.lease_ms]),
        )
        return int(value) if ok else None

    async def renew(self, dialer: str, token: int, *, offer: bool = False) -> bool:
        """Extend our lease (`offer`: make it takeable at once, still ours until taken)."""
        lease = 0 if offer else self.lease_ms
        return bool(
            await self.store.exchange(
                "call lease",
                lambda: self._renew(keys=[self._key("call", dialer)], args=[self.instance, token, lease]),
            )
        )

    async def release(self, dialer: str, token: int) -> None:
        await self.store.exchange(
            "call lease", lambda: self._release(keys=[self._key("call", dialer)], args=[self.instance, token])
        )
