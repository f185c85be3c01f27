"""`npv-guard doctor`: what is wrong with this installation, in plain words.

Checks the settings, the time-zone and holiday data, Redis, the refusal journal, ARI, and over
AMI (panoramisk) what only Asterisk itself can tell: whether the dialplan includes are loaded,
whether the refusal feature is defined, and whether a built-in feature code would swallow it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.exceptions import ResponseError

from npv_guard.clock import Clock
from npv_guard.config import ConfigError, RedisSettings, Settings, file_warnings, is_loopback, redact_url
from npv_guard.core.calendar import national_holidays
from npv_guard.core.territories import ALL
from npv_guard.journal import RefusalJournal
from npv_guard.leases import Registry, pbx_of
from npv_guard.store import ConsumerHasher, Store, StoreUnavailable, sentinel_manager

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass
class Finding:
    level: str
    topic: str
    text: str


class Doctor:
    def __init__(self, settings: Settings, mode: str = "auto") -> None:
        self.settings = settings
        self.mode = mode
        self.findings: list[Finding] = []

    def note(self, level: str, topic: str, text: str) -> None:
        self.findings.append(Finding(level, topic, text))

    async def run(self) -> list[Finding]:
        self._config()
        self._calendar()
        await self._redis()
        self._journal()
        ari_up = await asyncio.to_thread(self._ari)
        await self._ami(ari_up)
        return self.findings

    # ------------------------------------------------------------------ local checks

    def _config(self) -> None:
        settings = self.settings
        self.note(OK, "config", f"settings from {settings.source}")
        try:
            settings.require_hash_secret()
            self.note(OK, "config", "hash_secret is set")
        except ConfigError as error:
            self.note(FAIL, "config", str(error))
        if settings.professionals:
            npvs = sum(len(p.npvs) for p in settings.professionals)
            self.note(OK, "config", f"{len(settings.professionals)} professional(s), {npvs} assigned NPV(s)")
        else:
            self.note(WARN, "config", "no [[professionals]]: the caller number stands for the professional")
        if settings.redis.fail_open:
            self.note(WARN, "config", "redis.fail_open = true: calls go through unchecked when Redis is away")
        listeners = (
            ("agi.host", settings.agi.host, "the FastAGI server (unauthenticated unless agi.path_secret is set)"),
            ("api.listen", settings.api.listen.rpartition(":")[0], "the HTTP API"),
            ("http.listen", settings.http.listen.rpartition(":")[0], "/healthz and /metrics"),
        )
        for name, host, what in listeners:
            if host and not is_loopback(host):
                self.note(WARN, "config", f"{name}: {what} listens on {host}, beyond loopback")
        for warning in file_warnings(settings):
            self.note(WARN, "config", warning)

    def _calendar(self) -> None:
        clock = Clock(self.settings.now)
        now = clock.now()
        if clock.replay:
            self.note(WARN, "clock", f"NPV_GUARD_NOW is set: the guard's clock replays {now.isoformat()}")
        elif now.year < 2024:
            self.note(FAIL, "clock", f"the system clock says {now.isoformat()}: decisions use the wrong law")
        else:
            self.note(OK, "clock", f"now is {now.astimezone(UTC).isoformat(timespec='seconds')}")
        try:
            zones = {territory.timezone: territory.zone for territory in ALL}
            self.note(OK, "timezones", f"{len(zones)} time zones loaded (Europe/Paris and the overseas territories)")
        except Exception as error:
            self.note(FAIL, "timezones", f"time-zone data missing: {error}")
        national = national_holidays(now.year)
        if len(national) == 11:
            self.note(OK, "holidays", f"{now.year}: the 11 national public holidays are known")
        else:
            self.note(FAIL, "holidays", f"{now.year}: {len(national)} national holidays known, expected 11")

    async def _redis(self) -> None:
        settings = self.settings
        try:
            secret = settings.require_hash_secret()
        except ConfigError:
            secret = "doctor-placeholder-secret"
        store = Store.from_settings(settings.redis, ConsumerHasher(secret), min_timeout_s=1.0)
        try:
            await store.ping()
            self.note(OK, "redis", f"reachable at {settings.redis.where()}")
            await self._guards(store)
        except StoreUnavailable as error:
            self.note(FAIL, "redis", f"{error}: calls will be rejected with STATE_UNAVAILABLE")
            return
        finally:
            await store.close()
        for level, text in await durability_of(settings.redis):
            self.note(level, "redis", text)

    async def _guards(self, store: Store) -> None:
        """The ARI guards registered in this Redis (docs/redundancy.md): app, state, calls."""
        ari = self.settings.ari
        entries = await Registry(store, ari.app, "doctor", ari.guard_lease_s, pbx=pbx_of(ari.url)).guards()
        for entry in entries:
            if entry.alive:
                self.note(
                    OK,
                    "guards",
                    f"app {entry.app!r}: {entry.state}, {entry.calls} call(s), {entry.instance}",
                )
            else:
                ago = max(0, entry.now_ms - entry.seen_ms) / 1000
                # A stopped guard said goodbye; any other silent one died (its calls were taken over).
                level = OK if entry.state == "stopped" else WARN
                self.note(
                    level, "guards", f"app {entry.app!r}: not connected ({entry.state}, last seen {ago:.0f} s ago)"
                )
        if self.mode in ("ari", "auto") and entries and not any(e.alive for e in entries):
            self.note(WARN, "guards", "no live guard registered: ARI calls are rejected (GUARD_UNAVAILABLE)")

    def _journal(self) -> None:
        path = Path(self.settings.journal_path)
        directory = path.parent
        if not directory.exists():
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                self.note(FAIL, "journal", f"cannot create {directory}: {error.strerror}")
                return
        if not os.access(directory, os.W_OK):
            self.note(FAIL, "journal", f"{directory} is not writable: a refusal made while Redis is away would be lost")
            return
        pending = len(RefusalJournal(str(path)))
        level = WARN if pending else OK
        self.note(level, "journal", f"{path}: writable, {pending} refusal(s) waiting for Redis")

    # ------------------------------------------------------------------ Asterisk

    def _ari(self) -> bool:
        ari = self.settings.ari
        token = base64.b64encode(f"{ari.username}:{ari.password}".encode()).decode()
        request = urllib.request.Request(
            f"{ari.url.rstrip('/')}/ari/asterisk/info", headers={"Authorization": f"Basic {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=3) as response:
                info = json.loads(response.read())
        except urllib.error.HTTPError as error:
            level = FAIL if self.mode in ("ari", "auto") else WARN
            self.note(
                level, "ari", f"{redact_url(ari.url)} answered HTTP {error.code} (check ari.username / ari.password)"
            )
            return False
        except (urllib.error.URLError, OSError, ValueError) as error:
            level = FAIL if self.mode == "ari" else WARN
            self.note(level, "ari", f"{redact_url(ari.url)} unreachable: {getattr(error, 'reason', error)}")
            return False
        version = (info.get("system") or {}).get("version", "?")
        self.note(OK, "ari", f"{redact_url(ari.url)}: Asterisk {version}")
        return True

    async def _ami(self, ari_up: bool) -> None:
        from panoramisk import Manager  # noqa: PLC0415 - only the doctor needs AMI

        logging.getLogger("panoramisk").setLevel(logging.CRITICAL)  # its reconnect chatter is not a finding
        ami = self.settings.ami
        if not ami.secret:
            self.note(WARN, "ami", "ami.secret is empty: dialplan and feature checks skipped")
            return
        manager = Manager(host=ami.host, port=ami.port, username=ami.username, secret=ami.secret, ping_delay=0)
        try:
            await asyncio.wait_for(manager.connect(), 5)
        except Exception as error:
            self.note(WARN if ari_up else FAIL, "ami", f"{ami.host}:{ami.port}: cannot log in ({type(error).__name__})")
            manager.close()
            return
        try:
            await self._asterisk_config(manager)
            if self.settings.sms.enabled:
                await self._sms_endpoints(manager)
        finally:
            manager.close()

    async def _command(self, manager: Any, command: str) -> tuple[bool, list[str]]:
        reply = await asyncio.wait_for(manager.send_action({"Action": "Command", "Command": command}), 5)
        output = reply.get("Output", [])
        lines = output if isinstance(output, list) else str(output).splitlines()
        return reply.get("Response") == "Success", [str(line) for line in lines]

    async def _asterisk_config(self, manager: Any) -> None:
        ari_loaded, _ = await self._command(manager, "dialplan show npv-guard-ari")
        agi_loaded, _ = await self._command(manager, "dialplan show check@npv-guard-agi")
        if not (ari_loaded or agi_loaded):
            self.note(FAIL, "dialplan", "neither npv-guard-ari nor npv-guard-agi is loaded: calls are not guarded")
        for loaded, name, mode in ((ari_loaded, "npv-guard-ari", "ari"), (agi_loaded, "npv-guard-agi", "agi")):
            if loaded:
                self.note(OK, "dialplan", f"context {name} is loaded")
            elif self.mode == mode:
                self.note(FAIL, "dialplan", f"context {name} is not loaded (#include {name}.conf)")
        if not (agi_loaded or self.mode == "agi"):
            return
        _, features = await self._command(manager, "features show")
        refusal = next((line for line in features if line.startswith("npvguard-refusal ")), None)
        if refusal is None:
            self.note(FAIL, "features", "npvguard-refusal is not in [applicationmap]: agents cannot record refusals")
            return
        code = refusal.split()[-1]
        self.note(OK, "features", f"npvguard-refusal is defined on {code}")
        for builtin, current in _builtin_codes(features):
            if current and code.startswith(current):
                self.note(
                    FAIL, "features", f"built-in feature {builtin!r} on {current} swallows the refusal code {code}"
                )

    async def _sms_endpoints(self, manager: Any) -> None:
        """Each SMS endpoint exists and routes no message through the dialplan: Asterisk gives a
        message to every handler that wants it, so an extension in its message context would
        deliver it a second time, around the guard."""
        sms = self.settings.sms
        for key, endpoint in (("platform_endpoint", sms.platform_endpoint), ("carrier_endpoint", sms.carrier_endpoint)):
            tech, _, name = endpoint.partition("/")
            if tech.upper() != "PJSIP":
                self.note(WARN, "sms", f"sms.{key} = {endpoint}: only PJSIP endpoints are checked")
                continue
            found, lines = await self._command(manager, f"pjsip show endpoint {name}")
            values = dict(_settings(lines))
            if not found or "context" not in values:
                self.note(FAIL, "sms", f"sms.{key}: endpoint {name} is not in pjsip.conf: its messages reach no guard")
                continue
            context = values.get("message_context") or values["context"]
            _, plan = await self._command(manager, f"dialplan show {context}")
            routed = [line.split("=>")[0].strip().strip("'") for line in plan if "=>" in line]
            if routed:
                extensions = ", ".join(routed[:3])
                self.note(
                    FAIL, "sms", f"endpoint {name}: message context {context} has extensions ({extensions}): "
                    "its messages would also be routed around the guard (message_context = npv-guard-sms)",
                )  # fmt: skip
            else:
                self.note(OK, "sms", f"endpoint {name}: messages go to the guard only (message context {context})")


# ---------------------------------------------------------------------- Redis durability

FORGETS = "attempts, refusals and consents"


async def durability_of(redis: RedisSettings) -> list[tuple[str, str]]:
    """`redis_durability` of the configured Redis (single, Cluster or behind Sentinel), as `doctor`
    and every server at start check it; at least 1 s per exchange, whatever the call path's timeout."""
    return await redis_durability(
        redis.url,
        cluster=redis.cluster,
        socket_s=max(redis.timeout_ms / 1000, 1.0),
        sentinels=redis.sentinel_addresses(),
        sentinel_master=redis.sentinel_master,
        sentinel_password=redis.sentinel_password,
    )


async def redis_durability(
    url: str,
    *,
    cluster: bool,
    socket_s: float,
    sentinels: Sequence[tuple[str, int]] = (),
    sentinel_master: str = "",
    sentinel_password: str = "",
) -> list[tuple[str, str]]:
    """(level, text) about whether Redis keeps what the guard stores: written to disk (RDB
    snapshots or AOF) and never evicted (maxmemory-policy noeviction). A Redis that forgets on a
    restart or under memory pressure silently forgets refusals: the next call goes through.

    Every master of a Cluster is checked; behind Sentinel, the master and every replica (the next
    master after a failover), as the sentinels list them. CONFIG GET may be disabled or renamed (managed Redis):
    then INFO tells what it can, and what it cannot is reported as not checked, never as ok."""
    findings: list[tuple[str, str]] = []
    try:
        if sentinels:
            nodes = await _sentinel_nodes(url, sentinels, sentinel_master, sentinel_password, socket_s=socket_s)
        else:
            nodes = await _masters(url, cluster=cluster, socket_s=socket_s)
    except Exception as error:
        return [(WARN, f"durability could not be checked ({type(error).__name__})")]
    for name, client in nodes:
        try:
            findings += await _node_durability(name, client)
        except Exception as error:
            findings.append((WARN, f"{name}: durability could not be checked ({type(error).__name__})"))
        finally:
            await client.aclose()
    return findings


async def _masters(url: str, *, cluster: bool, socket_s: float) -> list[tuple[str, Any]]:
    options: dict[str, Any] = {"socket_timeout": socket_s, "socket_connect_timeout": socket_s}
    if not cluster:
        return [("redis", aioredis.Redis.from_url(url, **options))]
    topology = RedisCluster.from_url(url, **options)
    try:
        await topology.initialize()
        primaries = [(node.host, node.port) for node in topology.get_primaries()]
    finally:
        await topology.aclose()
    kwargs: dict[str, Any] = dict(parse_url(url))
    kwargs.pop("db", None)
    masters = []
    for host, port in sorted(primaries):
        pool = aioredis.ConnectionPool(**{**kwargs, **options, "host": host, "port": port})
        masters.append((f"master {host}:{port}", aioredis.Redis(connection_pool=pool)))
    return masters


async def _sentinel_nodes(
    url: str, sentinels: Sequence[tuple[str, int]], master: str, password: str, *, socket_s: float
) -> list[tuple[str, Any]]:
    sentinel = sentinel_manager(url, sentinels, password=password, timeout=socket_s)
    try:
        address: tuple[str, int] = await sentinel.discover_master(master)
        replicas = [(str(h), int(p)) for h, p in await sentinel.discover_replicas(master)]
    finally:
        await sentinel.aclose()
    kwargs: dict[str, Any] = dict(parse_url(url))
    options: dict[str, Any] = {"socket_timeout": socket_s, "socket_connect_timeout": socket_s}
    nodes = [(f"master {address[0]}:{address[1]}", address)]
    nodes += [(f"replica {h}:{p}", (h, p)) for h, p in sorted(replicas)]
    return [
        (name, aioredis.Redis(connection_pool=aioredis.ConnectionPool(**{**kwargs, **options, "host": h, "port": p})))
        for name, (h, p) in nodes
    ]


async def _node_durability(name: str, client: Any) -> list[tuple[str, str]]:
    findings: list[tuple[str, str]] = []
    try:
        config = {
            **await client.config_get("save"),
            **await client.config_get("appendonly"),
            **await client.config_get("maxmemory-policy"),
        }
    except ResponseError:
        config = {}  # CONFIG refused (managed Redis, renamed command): INFO below
    persistence = await client.info("persistence")
    memory = await client.info("memory")
    aof = config.get("appendonly", "yes" if persistence.get("aof_enabled") in (1, "1") else None)
    save = config.get("save")
    if aof == "yes":
        findings.append((OK, f"{name}: AOF persistence on (appendonly yes)"))
    elif save:
        findings.append((OK, f"{name}: RDB snapshots on (save {save}), AOF off: a crash loses the last writes"))
    elif save is None:
        findings.append((WARN, f"{name}: persistence could not be checked (CONFIG GET refused, AOF off)"))
    else:
        findings.append((WARN, f"{name}: no persistence (save '' and appendonly no): a restart forgets {FORGETS}"))
    policy = config.get("maxmemory-policy") or memory.get("maxmemory_policy")
    if policy is None:
        findings.append((WARN, f"{name}: eviction policy could not be checked"))
    elif policy != "noeviction":
        findings.append(
            (WARN, f"{name}: maxmemory-policy {policy}: under memory pressure Redis evicts {FORGETS} "
             "(set noeviction: writes then fail, and the guard fails closed)")
        )  # fmt: skip
    else:
        findings.append((OK, f"{name}: maxmemory-policy noeviction"))
    return findings


def _settings(lines: list[str]) -> list[tuple[str, str]]:
    """`name : value` lines of a `pjsip show` listing."""
    pairs = []
    for line in lines:
        name, sep, value = line.partition(":")
        if sep and name.strip() and " " not in name.strip():
            pairs.append((name.strip(), value.strip()))
    return pairs


def _builtin_codes(lines: list[str]) -> list[tuple[str, str]]:
    """(feature, current code) of `features show`'s built-in table, read by its column positions."""
    header = next((line for line in lines if line.startswith("Builtin Feature")), None)
    if header is None or "Current" not in header:
        return []
    start = header.index("Current")
    table = lines[lines.index(header) + 2 :]
    result = []
    for line in table:
        if not line.strip():
            break
        result.append((line[: header.index("Default")].strip(), line[start:].strip()))
    return result


def report(findings: list[Finding]) -> str:
    width = max((len(f.topic) for f in findings), default=0)
    return "\n".join(f"[{f.level:>4}] {f.topic:<{width}}  {f.text}" for f in findings) + "\n"
