"""Redis access, and nothing else: the per-pair history and its atomic scripts.

Data model, per (professional, consumer) pair, all under one hash tag so that one decision
touches one Cluster slot:

    {prefix}:{<professional>|<hmac>}:a   ZSET attempts    member "<ms>:<call id>[|<campaign>|<lead>]"  score ms
    {prefix}:{<professional>|<hmac>}:r   ZSET refusals    member JSON                 score ms
    {prefix}:{<professional>|<hmac>}:c   ZSET consents    member JSON (grant/withdraw) score ms
    {prefix}:{<professional>|<hmac>}:m   ZSET SMS relayed member "<ms>:<message id>"  score ms
    {prefix}:{<professional>|<hmac>}:v   STRING version, bumped by every write

`<hmac>` is HMAC-SHA256(secret, consumer E.164), so no key or value holds a consumer number.
Whether a stored fact still counts is computed from its own instant by the decision core; the
TTLs below only clean up: attempts live 31 days, refusals and relayed SMS 62 days after their own
instant (on the guard's clock, which may replay); a write never shortens a key's life. A consent
event is proof (R. 223-2): kept `consent_proof_days` (3 years) from its own instant and never less
than as long as it may count (an open-ended contract: for ever; a withdrawal: as long as a grant it
ended is kept), then removed when a later event of the pair is written, and the key expires with
its last event (docs/rules.md, "Proof retention"). Relayed SMS are kept for the history only.

Check-and-record, for a call likely allowed: read the snapshot and hold the attempt in one atomic
script, decide in Python on the state read (the rules live in one place), release the hold if
the call is rejected. Otherwise it is optimistic: read a snapshot with its version, decide, then
record the attempt only if the version is unchanged; a concurrent writer makes the record fail
and the caller decides again on fresh state. Either way no two guards can let a fifth attempt
through. The decision's scripts go out pipelined on one connection of the store's own (`_Lane`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
    parse_url,
)
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from npv_guard.core.model import (
    DEFAULT_CONSENT_MAX_AGE_DAYS,
    DEFAULT_CONSENT_PROOF_DAYS,
    Attempt,
    Basis,
    ConsentEvent,
    PairState,
    Refusal,
    RefusalSource,
    Slot,
)

if TYPE_CHECKING:
    from npv_guard.config import RedisSettings, RulesSettings

ATTEMPTS_TTL = timedelta(days=31)
REFUSALS_TTL = timedelta(days=62)
# Attempts older than this before the newest one can never count again.
ATTEMPTS_KEEP = timedelta(days=32)
# A fact older than its retention is still kept this long, so that it shows in the history of
# the command that just wrote it (a journal replay after a long outage, say).
MIN_TTL = timedelta(hours=1)
# The latest consent events read per decision. A withdrawal ends every grant before it, so older
# events matter only as grants still counting: missing one can only make a decision stricter.
CONSENT_EVENTS_READ = 64
# Time allowed per pair of a pipelined snapshot batch (a lead-list scrub), on top of the timeout.
BATCH_READ_S = 0.005

log = logging.getLogger("npv_guard.store")

T = TypeVar("T")


class StoreUnavailable(Exception):
    """Redis could not answer in time; the message says why, without secrets.

    The message names the exchange and the error's type only: it reaches API answers, CLI output
    and verdict reasons, and redis-py's texts carry the server's address (and a script error the
    key names). The full text goes to the debug log.
    """


class NotReplicated(RedisError):
    """The master took a write that fewer replicas than `redis.wait_replicas` acknowledged."""


def _failure(what: str, error: BaseException, how: str = "failed") -> str:
    log.debug("redis %s %s: %s: %s", what, how, type(error).__name__, error)
    return f"redis {what} {how}: {type(error).__name__}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    state: PairState
    version: str
    # The latest attempt stored for the pair, even after the snapshot's instant: a guard whose
    # clock runs a little behind another's must still record its attempt after that one.
    newest_attempt: datetime | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    """An attempt recorded by `Store.snapshot_and_hold`, counted unless released."""

    attempts_key: str
    version_key: str
    member: str
    added: bool  # False: this same attempt was already stored, and a release leaves it


@dataclass(frozen=True, slots=True)
class SentMessage:
    """A text message the guard relayed to the consumer."""

    at: datetime
    message_id: str = ""


@dataclass(frozen=True, slots=True)
class PairHistory:
    """Everything held for a pair, for a supervisor answering a complaint."""

    state: PairState
    ttl_seconds: dict[str, int]
    messages: tuple[SentMessage, ...] = ()


_SNAPSHOT = """
local version = redis.call('GET', KEYS[4]) or '0'
local attempts = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[3], 'WITHSCORES')
local refusals = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[2], ARGV[3], 'WITHSCORES')
local consents = redis.call('ZREVRANGEBYSCORE', KEYS[3], ARGV[3], '-inf', 'WITHSCORES', 'LIMIT', 0, ARGV[4])
local newest = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {version, attempts, refusals, consents, newest[2] or '0'}
"""

# KEYS: attempts, version. ARGV: expected version, ms, member, ttl ms, drop-before ms, version ttl ms.
# The attempts' TTL only grows (it follows the newest attempt's instant).
# Refused too when an attempt later than this one is stored: attempts are recorded in time order.
_RECORD_ATTEMPT = """
local version = redis.call('GET', KEYS[2]) or '0'
if version ~= ARGV[1] then return 0 end
if #redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf', 'LIMIT', 0, 1) > 0 then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[5])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return 1
"""

# The common allowed call in one round trip: the snapshot script's read, then the attempt recorded
# at once, *held* while the Python core decides on the state read before it. A rejected call
# releases its hold (`_RELEASE_ATTEMPT`). Read and write are one atomic step, so no version check is
# needed: guards deciding at the same time each see the holds of those before them, exactly as they
# would see recorded attempts (at worst a hold about to be released makes a concurrent call stricter).
# Not held (-1) when an attempt later than this instant is stored: the caller decides the old way.
# Already held (0) when the same member is stored: the same call recorded twice counts once.
# KEYS: attempts, refusals, consents, version. ARGV: the snapshot's four, then member, ttl ms,
# drop-before ms, version ttl ms (as `_RECORD_ATTEMPT`).
_SNAPSHOT_AND_HOLD = """
local version = redis.call('GET', KEYS[4]) or '0'
local attempts = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[3], 'WITHSCORES')
local refusals = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[2], ARGV[3], 'WITHSCORES')
local consents = redis.call('ZREVRANGEBYSCORE', KEYS[3], ARGV[3], '-inf', 'WITHSCORES', 'LIMIT', 0, ARGV[4])
local newest = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local held = -1
if newest[2] == nil or tonumber(newest[2]) <= tonumber(ARGV[3]) then
  held = redis.call('ZADD', KEYS[1], ARGV[3], ARGV[5])
  if held == 1 then
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[7])
    if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[6]) then redis.call('PEXPIRE', KEYS[1], ARGV[6]) end
    redis.call('INCR', KEYS[4])
    redis.call('PEXPIRE', KEYS[4], ARGV[8])
  end
end
return {version, attempts, refusals, consents, newest[2] or '0', held}
"""

# KEYS: attempts, version. ARGV: the held member, version ttl ms. A state change like any other:
# the version is bumped, so a snapshot that saw the hold cannot be used to record after it.
_RELEASE_ATTEMPT = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('INCR', KEYS[2])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 1
"""

# KEYS: refusals, consents, version.
# ARGV: ms, refusal member, refusal ttl ms, withdrawal member or '', version ttl ms, consent proof ttl ms.
# TTLs only grow: a back-dated refusal (a journal replay) must not shorten a newer one's life. A
# withdrawal is proof too: the consents key lives at least as long as its retention.
_RECORD_REFUSAL = """
local added = redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[4])
  local ttl = redis.call('PTTL', KEYS[2])
  if (ttl >= 0 and ttl < tonumber(ARGV[6])) or (ttl == -1 and redis.call('ZCARD', KEYS[2]) == 1) then
    redis.call('PEXPIRE', KEYS[2], ARGV[6])
  end
end
redis.call('INCR', KEYS[3])
if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[5]) then redis.call('PEXPIRE', KEYS[3], ARGV[5]) end
return added
"""

# KEYS: consents, version. ARGV: ms, member, version ttl ms, proof retention ms, consent lifetime ms.
# Retention (R. 223-2), judged at the new event's own instant: a grant is kept for the proof period
# and at least while it may count (a contract to its end; open-ended: for ever); a withdrawal for
# the proof period and at least while a grant it ended is kept. Older events are removed; the key
# expires with the last one kept (PERSIST while an open-ended contract is held).
_RECORD_CONSENT = """
local added = redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local now, proof, life = tonumber(ARGV[1]), tonumber(ARGV[4]), tonumber(ARGV[5])
local events = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local grants, withdrawals = {}, {}
for i = 1, #events, 2 do
  local data = cjson.decode(events[i])
  local at = tonumber(events[i + 1])
  if data.granted then
    local keep = at + math.max(proof, life)
    if data.basis == 'contract' then
      if type(data['until']) == 'number' then keep = math.max(at + proof, data['until']) else keep = false end
    end
    grants[#grants + 1] = {events[i], at, keep}
  else
    withdrawals[#withdrawals + 1] = {events[i], at, at + proof}
  end
end
local last, forever, oldest = now, false, nil
for _, g in ipairs(grants) do
  if g[3] and g[3] < now then
    redis.call('ZREM', KEYS[1], g[1])
  else
    if not g[3] then forever = true elseif g[3] > last then last = g[3] end
    if oldest == nil or g[2] < oldest then oldest = g[2] end
  end
end
for _, w in ipairs(withdrawals) do
  if w[3] < now and (oldest == nil or oldest > w[2]) then
    redis.call('ZREM', KEYS[1], w[1])
  elseif w[3] > last then
    last = w[3]
  end
end
if forever then
  redis.call('PERSIST', KEYS[1])
elseif redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], math.max(last - now, 1000))
end
return added
"""


# The Lua sources by name, for tools that time a script alone (bench/: the floors under the guard).
SCRIPTS: Mapping[str, str] = MappingProxyType(
    {
        "snapshot": _SNAPSHOT,
        "snapshot_and_hold": _SNAPSHOT_AND_HOLD,
        "release_attempt": _RELEASE_ATTEMPT,
        "record_attempt": _RECORD_ATTEMPT,
        "record_refusal": _RECORD_REFUSAL,
        "record_consent": _RECORD_CONSENT,
    }
)


def sentinel_manager(
    url: str, sentinels: Sequence[tuple[str, int]], *, password: str = "", timeout: float = 0.2
) -> Sentinel:
    """A redis-py Sentinel for `sentinels`; the data nodes get `url`'s credentials, database and TLS.

    Its `master_for` client asks the sentinels for the master at every new connection, and a
    connection that meets a READONLY answer (the old master demoted) or an error is dropped, so a
    failover is followed without a restart; until it is over, exchanges fail (the guard rejects).
    """
    node: dict[str, Any] = dict(parse_url(url))
    node.pop("host", None)
    node.pop("port", None)
    # The sentinel pool picks its own connection class (SentinelManaged[SSL]Connection).
    if node.pop("connection_class", None) is SSLConnection:
        node["ssl"] = True
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    # One try per sentinel and discovery: the list is the retry. redis-py's default retries with
    # backoff would spend the whole exchange's timeout on the first sentinel that is down.
    sentinel_kwargs: dict[str, Any] = {**options, "retry": Retry(NoBackoff(), 0)}
    if password:
        sentinel_kwargs["password"] = password
    return Sentinel(list(sentinels), sentinel_kwargs=sentinel_kwargs, **options, **node)  # type: ignore[no-untyped-call]


def _ms(instant: datetime) -> int:
    return int(instant.timestamp() * 1000)


def _instant(score: float | str) -> datetime:
    return datetime.fromtimestamp(float(score) / 1000, UTC)


class PairKeys:
    """The four keys of one pair, under one hash tag."""

    __slots__ = ("attempts", "consents", "messages", "refusals", "version")

    def __init__(self, prefix: str, professional: str, digest: str) -> None:
        base = f"{prefix}:{{{professional}|{digest}}}"
        self.attempts = base + ":a"
        self.refusals = base + ":r"
        self.consents = base + ":c"
        self.messages = base + ":m"
        self.version = base + ":v"


RECENT_DIGESTS = 4096


class ConsumerHasher:
    """Keyed hash of consumer numbers; older secrets are kept readable during a rotation."""

    def __init__(self, secret: str, previous: Sequence[str] = ()) -> None:
        self._secret = secret.encode()
        self._previous = [old.encode() for old in previous]
        # A decision hashes its consumer for the keys, the journal and the audit line: once.
        self._recent: dict[str, str] = {}

    @staticmethod
    def _digest(secret: bytes, e164: str) -> str:
        return hmac.new(secret, e164.encode(), hashlib.sha256).hexdigest()[:32]

    def digest(self, e164: str) -> str:
        digest = self._recent.get(e164)
        if digest is None:
            if len(self._recent) >= RECENT_DIGESTS:
                self._recent.clear()  # bounded: the consumers of the last few thousand calls
            digest = self._recent[e164] = self._digest(self._secret, e164)
        return digest

    @property
    def has_previous(self) -> bool:
        """Whether older secrets are still read (a rotation in progress)."""
        return bool(self._previous)

    def previous_digests(self, e164: str) -> list[str]:
        return [self._digest(secret, e164) for secret in self._previous]


def _encode_refusal(refusal: Refusal, refusal_id: str) -> str:
    return json.dumps({"id": refusal_id, "source": refusal.source.value, "call": refusal.call_id})


# json.dumps with options builds a new encoder at every call: build each once (same output).
_IDENTITY_JSON = json.JSONEncoder(sort_keys=True).encode
_MEMBER_JSON = json.JSONEncoder(ensure_ascii=False).encode


def _encode_consent(event: ConsentEvent) -> str:
    fields: dict[str, object] = {
        "granted": event.granted,
        "basis": event.basis.value if event.basis else None,
        "proof": event.proof,
        "outside_hours": event.outside_hours,
    }
    # Only when set, so that the members stored before these fields existed keep their identity.
    if event.until is not None:
        fields["until"] = _ms(event.until)
    if event.slot is not None:
        fields["slot"] = [_ms(event.slot.start), _ms(event.slot.end)]
    # The same event stored twice (an import run again) stays one member of the set.
    identity = hashlib.sha256(_IDENTITY_JSON([_ms(event.at), fields]).encode()).hexdigest()[:12]
    return _MEMBER_JSON({"id": identity, **fields})


def _attempt_member(attempt: Attempt) -> str:
    # With a call id the member is deterministic, so recording the same call twice counts once.
    member = f"{_ms(attempt.at)}:{attempt.call_id or '~' + uuid.uuid4().hex[:12]}"
    if attempt.campaign or attempt.lead:
        # Appended, so that a member without labels reads as before (ids cannot hold a '|').
        member += f"|{attempt.campaign}|{attempt.lead}"
    return member


def _decode_attempts(flat: Sequence[Any]) -> list[Attempt]:
    result = []
    for member, score in zip(flat[::2], flat[1::2], strict=True):
        call_id = _text(member).partition(":")[2]
        campaign = lead = ""
        if call_id.count("|") >= 2:  # the labels of the evidence trail, after the call id
            call_id, campaign, lead = call_id.rsplit("|", 2)
        result.append(Attempt(_instant(score), "" if call_id.startswith("~") else call_id, campaign, lead))
    return result


def _decode_refusals(flat: Sequence[Any]) -> list[Refusal]:
    result = []
    for member, score in zip(flat[::2], flat[1::2], strict=True):
        data = json.loads(_text(member))
        result.append(Refusal(_instant(score), RefusalSource(data["source"]), data.get("call", "")))
    return result


def _decode_consents(flat: Sequence[Any]) -> list[ConsentEvent]:
    result = []
    for member, score in zip(flat[::2], flat[1::2], strict=True):
        data = json.loads(_text(member))
        result.append(
            ConsentEvent(
                _instant(score),
                granted=bool(data["granted"]),
                basis=Basis(data["basis"]) if data.get("basis") else None,
                proof=data.get("proof", ""),
                outside_hours=bool(data.get("outside_hours", False)),
                until=_instant(data["until"]) if data.get("until") is not None else None,
                slot=Slot(_instant(data["slot"][0]), _instant(data["slot"][1])) if data.get("slot") else None,
            )
        )
    return result


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _snapshot_args(at: datetime) -> list[int | str]:
    """ARGV of the snapshot script: what may still count at instant `at`, and nothing later."""
    until = _ms(at)
    return [until - _ms_span(ATTEMPTS_KEEP), until - _ms_span(REFUSALS_TTL), until, CONSENT_EVENTS_READ]


# The snapshot script's reply for a pair none of whose keys exists.
_NOTHING_STORED: tuple[bytes, list[Any], list[Any], list[Any], bytes] = (b"0", [], [], [], b"0")
_Keys = tuple[str, ...]  # the keys of a pair the snapshot script reads


def _snapshot_keys(keys: PairKeys) -> _Keys:
    """KEYS of the snapshot script: when none of them exists, it reads `_NOTHING_STORED`."""
    return (keys.attempts, keys.refusals, keys.consents, keys.version)


_EMPTY = PairState()


def _decode_snapshot(raw: Sequence[Any]) -> tuple[str, PairState, datetime | None]:
    if raw is _NOTHING_STORED:
        return "0", _EMPTY, None  # what decoding it gives, for most pairs of a lead list
    version, attempts, refusals, consents, newest = raw
    state = PairState(
        tuple(_decode_attempts(attempts)), tuple(_decode_refusals(refusals)), tuple(_decode_consents(consents))
    )
    newest_ms = float(_text(newest) or 0)
    return _text(version), state, _instant(newest_ms) if newest_ms else None


def _pack(*parts: bytes | str | int) -> bytes:
    """One command in the Redis protocol (RESP), as redis-py packs it for these argument types."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


_PING = _pack(b"PING")
# Replies a lane's connection may owe before it is replaced (calls that gave up included).
MAX_IN_FLIGHT = 10_000


class _Lane:
    """The decision's commands on a single server, pipelined on one connection of the store's own.

    Per command, redis-py's asyncio client takes a connection from its pool (locking, bookkeeping,
    event dispatch), starts a task for every write under a socket timeout, and reads its reply on
    that connection alone; for the scripts of a decision that was as much CPU as the guard's own
    Python, and a connection per call in flight (docs/performance.md). Here every command goes
    out on one connection, the commands of one event-loop turn in one write, and one reader task
    hands the replies, in order, to their callers: many replies per read on both sides.

    The store's timeout bounds each call: a call that gives up leaves its reply to be read and
    dropped. A failed connection fails every call waiting on it and is replaced by the next call.
    Built only on redis-py's plain pool and connection classes (its connect: TLS, AUTH, SELECT);
    any other client (a Cluster, Sentinel) keeps redis-py's own path.
    """

    _PLAIN = (Connection, SSLConnection, UnixDomainSocketConnection)

    def __init__(self, pool: ConnectionPool) -> None:
        self._class = pool.connection_class
        self._kwargs = {**pool.connection_kwargs, "socket_timeout": None}
        self._conn: AbstractConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: deque[asyncio.Future[Any]] = deque()
        self._outgoing: list[bytes] = []
        self._lock = asyncio.Lock()
        self._closing: asyncio.Task[None] | None = None  # a failed connection's disconnect, held on to

    @classmethod
    def of(cls, client: aioredis.Redis | RedisCluster) -> _Lane | None:
        pool = getattr(client, "connection_pool", None)
        if type(pool) is ConnectionPool and pool.connection_class in cls._PLAIN:
            return cls(pool)
        return None

    async def evalsha(self, script: AsyncScript, keys: Sequence[str], args: Sequence[int | str]) -> Any:
        command = _pack(b"EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return await self.call(command)
        except NoScriptError:  # a restarted Redis, or the first call: load it, then once more
            source = script.script
            await self.call(_pack(b"SCRIPT", b"LOAD", source if isinstance(source, bytes | str) else bytes(source)))
            return await self.call(command)

    async def call(self, command: bytes) -> Any:
        reused = self._conn is not None
        try:
            return await self._send(command)
        except (RedisConnectionError, OSError):
            if not reused:
                raise
            # A connection the server closed meanwhile (a restart, a failover): once more on a new
            # one, as redis-py retries. The scripts are safe to repeat: a hold's member is the same,
            # so a hold that did land the first time counts once.
            return await self._send(command)

    async def _send(self, command: bytes) -> Any:
        conn = self._conn if self._conn is not None else await self._connect()
        if len(self._pending) >= MAX_IN_FLIGHT:
            # Redis has stopped answering on this connection while calls keep timing out on it:
            # start afresh rather than keep their futures and their commands.
            self._fail(conn, RedisConnectionError("too many replies outstanding"))
            conn = await self._connect()
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(reply)
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._flush, conn)
        self._outgoing.append(command)
        return await reply

    def _flush(self, conn: AbstractConnection) -> None:
        if conn is not self._conn:
            return  # that connection failed meanwhile: its calls were failed with it
        data, self._outgoing = b"".join(self._outgoing), []
        try:
            # The stream's own write (no drain: the replies come back as fast as Redis reads).
            conn._writer.write(data)  # type: ignore[union-attr]
        except Exception as error:
            self._fail(conn, RedisConnectionError(f"write failed: {type(error).__name__}"))

    async def _connect(self) -> AbstractConnection:
        async with self._lock:
            if self._conn is None:
                conn = self._class(**self._kwargs)
                await conn.connect()  # type: ignore[no-untyped-call]  # (redis-py leaves it unannotated)
                self._conn = conn
                self._reader = asyncio.get_running_loop().create_task(self._read(conn))
            return self._conn

    async def _read(self, conn: AbstractConnection) -> None:
        while True:
            try:
                result: Any = await conn.read_response(disconnect_on_error=False)
                failed = False
            except RedisError as error:
                if not isinstance(error, ResponseError):  # a connection error: nothing more to read
                    self._fail(conn, error)
                    return
                result, failed = error, True
            except BaseException as error:  # OSError, cancelled by close()
                self._fail(conn, RedisConnectionError(f"read failed: {type(error).__name__}"))
                if not isinstance(error, Exception):
                    raise
                return
            reply = self._pending.popleft() if self._pending else None
            if reply is not None and not reply.done():  # done: its caller gave up (a timeout)
                if failed:
                    reply.set_exception(result)
                else:
                    reply.set_result(result)

    def _fail(self, conn: AbstractConnection, error: Exception, *, disconnect: bool = True) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        pending, self._pending = self._pending, deque()
        for reply in pending:
            if not reply.done():
                reply.set_exception(error)
        self._outgoing = []
        if disconnect:
            self._closing = asyncio.get_running_loop().create_task(conn.disconnect(nowait=True))

    async def close(self) -> None:
        conn, reader = self._conn, self._reader
        if conn is not None:
            self._fail(conn, RedisConnectionError("store closed"), disconnect=False)
            await conn.disconnect(nowait=True)
        if reader is not None:
            reader.cancel()


class PairStore(Protocol):
    """What the guard needs of a store. `Store` (Redis) is the one in production;
    `npv_guard.testing.MemoryStore` has the same semantics in memory, for tests.

    A failed exchange raises `StoreUnavailable`. `snapshot` reads the pair as it stood at an
    instant with a version; `record_attempt` counts an attempt only if the version is still the
    snapshot's and no later attempt is stored; `snapshot_and_hold` reads the pair and counts the
    attempt in one atomic step (None: not held, record it the two-step way), `release` takes a
    hold back; `record_refusal` stores a refusal once per id.
    """

    def digest(self, consumer: str) -> str: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...
    async def snapshot(self, professional: str, consumer: str, at: datetime) -> Snapshot: ...
    async def snapshots(self, professional: str, consumers: Sequence[str], at: datetime) -> list[Snapshot]: ...
    async def record_attempt(
        self, professional: str, consumer: str, attempt: Attempt, expected_version: str
    ) -> bool: ...
    async def snapshot_and_hold(
        self, professional: str, consumer: str, attempt: Attempt
    ) -> tuple[Snapshot, Hold | None]: ...
    async def release(self, hold: Hold) -> None: ...
    async def record_refusal(
        self, professional: str, digest: str, refusal: Refusal, withdrawal: ConsentEvent | None, refusal_id: str
    ) -> None: ...
    async def record_message(self, professional: str, consumer: str, message: SentMessage) -> None: ...
    async def record_consent(self, professional: str, consumer: str, event: ConsentEvent) -> None: ...
    async def record_consents(self, professional: str, rows: Iterable[tuple[str, ConsentEvent]]) -> int: ...
    async def history(self, professional: str, consumer: str) -> PairHistory: ...


class Store:
    """The pair histories in Redis (single server, Sentinel-fronted or Cluster)."""

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        hasher: ConsumerHasher,
        *,
        prefix: str = "npv",
        timeout: float = 0.2,
        clock: Callable[[], datetime] | None = None,
        consent_proof_days: int = DEFAULT_CONSENT_PROOF_DAYS,
        consent_max_age_days: int = DEFAULT_CONSENT_MAX_AGE_DAYS,
        wait_replicas: int = 0,
    ) -> None:
        self._client = client
        # Replicas that must hold a refusal before Redis acknowledges it (WAIT), so that a
        # failover to one of them cannot lose it; 0: the master's word is enough.
        self._wait_replicas = wait_replicas
        # The guard's clock: a fact's TTL runs from its own instant as that clock sees it.
        self._now = clock or (lambda: datetime.now(UTC))
        self._consent_proof = timedelta(days=consent_proof_days)
        self._consent_retention = [
            _ms_span(self._consent_proof),
            _ms_span(timedelta(days=consent_max_age_days)),
        ]
        self._hasher = hasher
        self._prefix = prefix
        self._timeout = timeout
        self._snapshot = client.register_script(_SNAPSHOT)
        self._snapshot_loaded = False  # by `snapshots`, which sends raw EVALSHA in pipelines
        self._record_attempt = client.register_script(_RECORD_ATTEMPT)
        self._record_refusal = client.register_script(_RECORD_REFUSAL)
        self._record_consent = client.register_script(_RECORD_CONSENT)
        self._snapshot_and_hold = client.register_script(_SNAPSHOT_AND_HOLD)
        self._release_attempt = client.register_script(_RELEASE_ATTEMPT)
        self._init_lock = asyncio.Lock()
        self._lane = _Lane.of(client)
        # Told of every failed exchange, where it fails (the guard's npv_guard_redis_errors_total).
        self.on_error: Callable[[], None] | None = None
        # Only a Cluster client has slots to discover first (an isinstance on it is not free: once here).
        self._initialised = not isinstance(client, RedisCluster)
        # Behind Sentinel: the sentinels' own connections, closed with the store.
        self._sentinel: Sentinel | None = None

    @classmethod
    def connect(
        cls,
        url: str,
        hasher: ConsumerHasher,
        *,
        cluster: bool = False,
        prefix: str = "npv",
        timeout: float = 0.2,
        clock: Callable[[], datetime] | None = None,
        consent_proof_days: int = DEFAULT_CONSENT_PROOF_DAYS,
        consent_max_age_days: int = DEFAULT_CONSENT_MAX_AGE_DAYS,
        sentinels: Sequence[tuple[str, int]] = (),
        sentinel_master: str = "",
        sentinel_password: str = "",
        wait_replicas: int = 0,
    ) -> Store:
        sentinel: Sentinel | None = None
        client: aioredis.Redis | RedisCluster
        if sentinels:
            sentinel = sentinel_manager(url, sentinels, password=sentinel_password, timeout=timeout)
            client = sentinel.master_for(sentinel_master, health_check_interval=10)
        elif cluster:
            client = RedisCluster.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        else:
            client = aioredis.Redis.from_url(
                url, health_check_interval=10, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        store = cls(
            client,
            hasher,
            prefix=prefix,
            timeout=timeout,
            clock=clock,
            consent_proof_days=consent_proof_days,
            consent_max_age_days=consent_max_age_days,
            wait_replicas=wait_replicas,
        )
        store._sentinel = sentinel
        return store

    @property
    def client(self) -> aioredis.Redis | RedisCluster:
        """The redis-py client the store was built with (for tools timing Redis without the store)."""
        return self._client

    @classmethod
    def from_settings(
        cls,
        redis: RedisSettings,
        hasher: ConsumerHasher,
        *,
        rules: RulesSettings | None = None,
        clock: Callable[[], datetime] | None = None,
        min_timeout_s: float = 0.0,
    ) -> Store:
        """The store as every part of the guard builds it from its settings (the servers, the
        CLI, the doctor): one place, so that a connection option is never set in one and not
        the others. `rules` gives the consent retention; `min_timeout_s` a floor for a
        diagnostic that must not fail on a tight call-path timeout."""
        return cls.connect(
            redis.url,
            hasher,
            cluster=redis.cluster,
            sentinels=redis.sentinel_addresses(),
            sentinel_master=redis.sentinel_master,
            sentinel_password=redis.sentinel_password,
            wait_replicas=redis.wait_replicas,
            prefix=redis.key_prefix,
            timeout=max(redis.timeout_ms / 1000, min_timeout_s),
            clock=clock,
            consent_proof_days=rules.consent_proof_days if rules else DEFAULT_CONSENT_PROOF_DAYS,
            consent_max_age_days=rules.consent_max_age_days if rules else DEFAULT_CONSENT_MAX_AGE_DAYS,
        )

    def _ttl(self, at: datetime, retention: timedelta) -> int:
        """Milliseconds until `at` + `retention` on the guard's clock, at least MIN_TTL."""
        return max(_ms_span(MIN_TTL), _ms(at + retention) - _ms(self._now()))

    async def close(self) -> None:
        if self._lane is not None:
            await self._lane.close()
        await self._client.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()

    async def run_script(self, name: str, keys: Sequence[str], args: Sequence[int | str]) -> Any:
        """One of `SCRIPTS` by name, sent as the store sends it, its raw reply: for tools that time a
        script alone under the guard (bench/). Not for deciding: the store's methods do that."""
        scripts = {
            "snapshot": self._snapshot,
            "snapshot_and_hold": self._snapshot_and_hold,
            "release_attempt": self._release_attempt,
            "record_attempt": self._record_attempt,
        }
        return await self._call(name, lambda: self._script(scripts[name], keys, args))

    async def _script(self, script: AsyncScript, keys: Sequence[str], args: Sequence[int | str]) -> Any:
        if self._lane is None:
            return await script(keys=keys, args=args)
        return await self._lane.evalsha(script, keys, args)

    def keys(self, professional: str, consumer: str) -> PairKeys:
        return PairKeys(self._prefix, professional, self._hasher.digest(consumer))

    async def _call(
        self, what: str, action: Callable[[], Awaitable[T]], *, idempotent: bool = False, within: float | None = None
    ) -> T:
        """Run one Redis exchange within the timeout; any failure becomes StoreUnavailable.

        Idempotent reads get one immediate second chance: a connection dropped by a Redis restart
        or a Cluster failover is usually replaced on the next try. `within` overrides the
        per-exchange timeout for a pipelined batch.
        """
        limit = self._timeout if within is None else within
        tries = 2 if idempotent else 1
        for attempt in range(tries):
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps every exchange in a
                # task of its own, a cost the profile showed on every decision.
                if not self._initialised:
                    async with asyncio.timeout(self._timeout):
                        await self._initialise()
                async with asyncio.timeout(limit):
                    return await action()
            except TimeoutError:
                failure = f"redis did not answer {what} within {limit * 1000:.0f} ms"
            except (RedisError, OSError) as error:
                failure = _failure(what, error)
            except Exception as error:  # redis-py's own bugs must not escape either
                failure = _failure(what, error, "failed unexpectedly")
            if attempt + 1 == tries:
                break
        self._failed()
        raise StoreUnavailable(failure)

    def _failed(self) -> None:
        if self.on_error is not None:
            self.on_error()

    async def _initialise(self) -> None:
        # redis-py's cluster client discovers its slots lazily, and concurrent first commands can
        # race inside that discovery: do it once, under a lock.
        async with self._init_lock:
            if not self._initialised and isinstance(self._client, RedisCluster):
                await self._client.initialize()
                self._initialised = True

    async def ping(self) -> bool:
        # On the decisions' connections when they have a lane: a health check tests (and opens) those.
        lane = self._lane
        if lane is not None:
            return bool(await self._call("ping", lambda: lane.call(_PING), idempotent=True))
        return bool(await self._call("ping", self._client.ping, idempotent=True))

    # For the guards' registry and the call leases (npv_guard/leases.py): same client, same prefix,
    # same timeout and failure accounting.
    @property
    def redis(self) -> aioredis.Redis | RedisCluster:
        return self._client

    @property
    def prefix(self) -> str:
        return self._prefix

    async def exchange(self, what: str, action: Callable[[], Awaitable[T]], *, idempotent: bool = False) -> T:
        return await self._call(what, action, idempotent=idempotent)

    async def snapshot(self, professional: str, consumer: str, at: datetime) -> Snapshot:
        """The pair's state as seen at instant `at` (later facts are not read)."""
        keys = self.keys(professional, consumer)
        version, state, newest = await self._read(keys, at)
        for digest in self._hasher.previous_digests(consumer):
            _, old, _ = await self._read(PairKeys(self._prefix, professional, digest), at)
            state = PairState(
                state.attempts + old.attempts, state.refusals + old.refusals, state.consents + old.consents
            )
        return Snapshot(state, version, newest)

    async def _read(self, keys: PairKeys, at: datetime) -> tuple[str, PairState, datetime | None]:
        args = _snapshot_args(at)
        raw = await self._call(
            "snapshot",
            lambda: self._script(self._snapshot, _snapshot_keys(keys), args),
            idempotent=True,
        )
        return _decode_snapshot(raw)

    async def snapshots(self, professional: str, consumers: Sequence[str], at: datetime) -> list[Snapshot]:
        """`snapshot` for many consumers of one professional at one instant, in order: the same
        script, pipelined (one round trip per batch, per node in a Cluster). Reads only."""
        if not consumers:
            return []
        args = _snapshot_args(at)
        # One script run per digest: the current one, then the older secrets' (as in `snapshot`).
        digests = [[self._hasher.digest(c), *self._hasher.previous_digests(c)] for c in consumers]
        commands: list[_Keys] = []
        for per_consumer in digests:
            for digest in per_consumer:
                commands.append(_snapshot_keys(PairKeys(self._prefix, professional, digest)))
        sha = self._snapshot.sha

        async def pipelined(command: Callable[[Any, _Keys], object], batch: list[_Keys]) -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for keys in batch:
                command(pipe, keys)
            return list(await pipe.execute())

        def evalsha(pipe: Any, keys: _Keys) -> object:
            # A raw EVALSHA: redis-py's cluster pipeline refuses its `evalsha` method but routes the
            # raw command by its keys (all under one hash tag), so one code path serves both.
            return pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)

        async def scripts(batch: list[_Keys]) -> list[Any]:
            # Loaded up front (on every primary in a Cluster), and again when a node answers
            # NOSCRIPT: a restarted Redis, a failover to a replica that never loaded it.
            if not self._snapshot_loaded:
                await self._client.script_load(_SNAPSHOT)
                self._snapshot_loaded = True
            try:
                return await pipelined(evalsha, batch)
            except NoScriptError:
                await self._client.script_load(_SNAPSHOT)
                return await pipelined(evalsha, batch)

        async def send() -> list[Any]:
            # Most pairs of a lead list have nothing stored. One EXISTS over the script's keys (one
            # integer to parse: a third of the client's cost of a script reply) tells them apart and
            # only the others run the script; a pair with none of its keys reads exactly as the
            # script reads it. Each pair's read stays atomic; a batch never was.
            found = await pipelined(lambda pipe, keys: pipe.execute_command("EXISTS", *keys), commands)
            stored = [keys for keys, count in zip(commands, found, strict=True) if count]
            replies = iter(await scripts(stored) if stored else [])
            return [next(replies) if count else _NOTHING_STORED for count in found]

        raws = await self._call(
            "snapshot batch", send, idempotent=True, within=max(self._timeout, BATCH_READ_S * len(commands))
        )
        return _merged_snapshots(digests, raws)

    async def snapshot_and_hold(
        self, professional: str, consumer: str, attempt: Attempt
    ) -> tuple[Snapshot, Hold | None]:
        """`snapshot` at `attempt.at` and, in the same atomic step, the attempt recorded: one round
        trip for a call the rules then allow. The caller decides on the snapshot (which does not
        hold the attempt itself) and must `release` the hold of a call it rejects.

        No hold (None) when an attempt later than `attempt.at` is already stored, or when older
        secrets must be read too (a rotation): the caller then records with `record_attempt`."""
        if self._hasher.has_previous:
            return await self.snapshot(professional, consumer, attempt.at), None
        keys = self.keys(professional, consumer)
        member = _attempt_member(attempt)
        at = _ms(attempt.at)
        args: list[int | str] = [*_snapshot_args(attempt.at), member, self._ttl(attempt.at, ATTEMPTS_TTL)]
        args += [at - _ms_span(ATTEMPTS_KEEP), _ms_span(REFUSALS_TTL)]
        raw = await self._call(
            "snapshot and hold", lambda: self._script(self._snapshot_and_hold, _snapshot_keys(keys), args)
        )
        version, state, newest = _decode_snapshot(raw[:5])
        held = int(raw[5])
        hold = Hold(keys.attempts, keys.version, member, added=held == 1) if held >= 0 else None
        return Snapshot(state, version, newest), hold

    async def release(self, hold: Hold) -> None:
        """Take back a held attempt (its call was rejected). Safe to repeat."""
        if not hold.added:
            return
        args: list[int | str] = [hold.member, _ms_span(REFUSALS_TTL)]
        await self._call(
            "release attempt",
            lambda: self._script(self._release_attempt, [hold.attempts_key, hold.version_key], args),
            idempotent=True,
        )

    async def record_attempt(self, professional: str, consumer: str, attempt: Attempt, expected_version: str) -> bool:
        """Count an attempt if nothing was written for the pair since the snapshot `expected_version`."""
        keys = self.keys(professional, consumer)
        at = _ms(attempt.at)
        args: list[int | str] = [
            expected_version,
            at,
            _attempt_member(attempt),
            self._ttl(attempt.at, ATTEMPTS_TTL),
            at - _ms_span(ATTEMPTS_KEEP),
            _ms_span(REFUSALS_TTL),
        ]
        done = await self._call(
            "record attempt", lambda: self._script(self._record_attempt, [keys.attempts, keys.version], args)
        )
        return bool(done)

    def digest(self, consumer: str) -> str:
        return self._hasher.digest(consumer)

    async def record_refusal(
        self, professional: str, digest: str, refusal: Refusal, withdrawal: ConsentEvent | None, refusal_id: str
    ) -> None:
        """Store a refusal (and the consent withdrawal it implies). The same `refusal_id` stores once."""
        keys = PairKeys(self._prefix, professional, digest)
        args: list[int | str] = [
            _ms(refusal.at),
            _encode_refusal(refusal, refusal_id),
            self._ttl(refusal.at, REFUSALS_TTL),
            _encode_consent(withdrawal) if withdrawal else "",
            _ms_span(REFUSALS_TTL),
            self._ttl(refusal.at, self._consent_proof),
        ]
        refusal_keys = [keys.refusals, keys.consents, keys.version]
        if not self._wait_replicas:
            await self._call("record refusal", lambda: self._record_refusal(keys=refusal_keys, args=args))
            return

        async def replicated() -> None:
            # One connection for the write and its WAIT: WAIT counts the replicas that hold this
            # connection's writes. Short of them, the refusal is not acknowledged from Redis (a
            # failover could lose it) and the caller journals it; the replay stores it once.
            pipe = self._client.pipeline(transaction=False)
            await self._record_refusal(keys=refusal_keys, args=args, client=pipe)  # type: ignore[arg-type]
            pipe.execute_command("WAIT", self._wait_replicas, max(1, int(self._timeout * 500)))
            acks = (await pipe.execute())[-1]
            if int(acks) < self._wait_replicas:
                raise NotReplicated(f"{acks} of {self._wait_replicas} replicas acknowledged")

        await self._call("record refusal", replicated)

    async def record_message(self, professional: str, consumer: str, message: SentMessage) -> None:
        """Note a relayed SMS for the history; the version is left alone, since no rule reads it."""
        key = self.keys(professional, consumer).messages
        member = f"{_ms(message.at)}:{message.message_id}"

        async def write() -> None:
            pipe = self._client.pipeline(transaction=False)
            pipe.zadd(key, {member: _ms(message.at)})
            pipe.pexpire(key, self._ttl(message.at, REFUSALS_TTL))
            await pipe.execute()

        await self._call("record message", write, idempotent=True)

    async def record_consent(self, professional: str, consumer: str, event: ConsentEvent) -> None:
        keys = self.keys(professional, consumer)
        args: list[int | str] = [_ms(event.at), _encode_consent(event), _ms_span(REFUSALS_TTL)]
        args += self._consent_retention
        await self._call("record consent", lambda: self._record_consent(keys=[keys.consents, keys.version], args=args))

    async def record_consents(self, professional: str, rows: Iterable[tuple[str, ConsentEvent]]) -> int:
        """Bulk grant (import): one pipelined round trip for the whole batch."""
        batch = list(rows)
        if not batch:
            return 0
        version_ttl = _ms_span(REFUSALS_TTL)

        async def send() -> int:
            # Per row, the consent lands before the version bump, so a racing decision can only be
            # stricter. Each row is one EVALSHA of the consent script (which also applies the proof
            # retention). Cluster pipelines refuse redis-py's script objects but route a raw
            # EVALSHA by its keys (one hash tag per pair), the script loaded on every primary first.
            pipe = self._client.pipeline(transaction=False)
            if not isinstance(pipe, Pipeline):
                await self._client.script_load(_RECORD_CONSENT)
            for consumer, event in batch:
                keys = self.keys(professional, consumer)
                args: list[int | str] = [_ms(event.at), _encode_consent(event), version_ttl, *self._consent_retention]
                if isinstance(pipe, Pipeline):
                    await self._record_consent(keys=[keys.consents, keys.version], args=args, client=pipe)
                else:
                    pipe.execute_command("EVALSHA", self._record_consent.sha, 2, keys.consents, keys.version, *args)
            results = await pipe.execute()
            return len(results)  # rows stored

        try:
            stored = await asyncio.wait_for(send(), max(self._timeout, 0.02 * len(batch)))
        except TimeoutError:
            self._failed()
            raise StoreUnavailable("redis did not finish a consent batch in time") from None
        except Exception as error:  # any client failure, redis-py's own bugs included
            self._failed()
            raise StoreUnavailable(_failure("consent batch", error)) from None
        return stored

    async def history(self, professional: str, consumer: str) -> PairHistory:
        """Everything stored for the pair, under the current secret and the previous ones (as
        `snapshot` reads it); the TTLs are the current secret's keys' (-2: no such key)."""
        client = self._client
        digests = [self._hasher.digest(consumer), *self._hasher.previous_digests(consumer)]

        async def read_one(keys: PairKeys) -> tuple[Any, ...]:
            return tuple(
                await asyncio.gather(
                    client.zrange(keys.attempts, 0, -1, withscores=True),
                    client.zrange(keys.refusals, 0, -1, withscores=True),
                    client.zrange(keys.consents, 0, -1, withscores=True),
                    client.zrange(keys.messages, 0, -1, withscores=True),
                    client.pttl(keys.attempts),
                    client.pttl(keys.refusals),
                    client.pttl(keys.consents),
                    client.pttl(keys.messages),
                )
            )

        async def read() -> list[tuple[Any, ...]]:
            return [await read_one(PairKeys(self._prefix, professional, digest)) for digest in digests]

        replies = await self._call("history", read, idempotent=True)

        def flat(pairs: Sequence[tuple[Any, float]]) -> list[Any]:
            return [item for pair in pairs for item in pair]

        attempts: list[Attempt] = []
        refusals: list[Refusal] = []
        consents: list[ConsentEvent] = []
        sent: list[SentMessage] = []
        for reply in replies:
            attempts.extend(_decode_attempts(flat(reply[0])))
            refusals.extend(_decode_refusals(flat(reply[1])))
            consents.extend(_decode_consents(flat(reply[2])))
            sent.extend(SentMessage(_instant(score), _text(member).partition(":")[2]) for member, score in reply[3])
        state = PairState(
            tuple(sorted(attempts, key=lambda a: a.at)),
            tuple(sorted(refusals, key=lambda r: r.at)),
            tuple(sorted(consents, key=lambda c: c.at)),
        )
        names = ("attempts", "refusals", "consents", "messages")
        ttls = replies[0][4:]
        return PairHistory(
            state,
            {name: int(ttl) // 1000 if ttl >= 0 else int(ttl) for name, ttl in zip(names, ttls, strict=True)},
            tuple(sorted(sent, key=lambda m: m.at)),
        )

    async def read_snapshots(self, professional: str, consumers: Sequence[str], at: datetime) -> list[Snapshot]:
        """`snapshots`, read by `_SNAPSHOT_BATCH`: one script run per `SNAPSHOT_BATCH_PAIRS` pairs
        instead of an EXISTS per pair (and the snapshot script per pair that has keys), so the
        client packs and parses a few commands per batch, not one or two per pair. Every pair is
        read exactly as the snapshot script reads it. On a Cluster (pairs are spread over slots
        and nodes) it is `snapshots`. Reads only."""
        if not consumers:
            return []
        if isinstance(self._client, RedisCluster):
            return await self.snapshots(professional, consumers, at)
        args = _snapshot_args(at)
        hasher = self._hasher
        digests = [[hasher.digest(c), *hasher.previous_digests(c)] for c in consumers]
        keys: list[str] = []
        head = f"{self._prefix}:{{{professional}|"
        for per_consumer in digests:
            for digest in per_consumer:
                base = f"{head}{digest}}}"  # PairKeys' own spelling, in `_snapshot_keys`' order
                keys += (base + ":a", base + ":r", base + ":c", base + ":v")
        step = 4 * SNAPSHOT_BATCH_PAIRS
        chunks = [keys[start : start + step] for start in range(0, len(keys), step)]
        script = self._client.register_script(_SNAPSHOT_BATCH)
        lane = self._lane

        async def pipelined() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for chunk in chunks:
                pipe.execute_command("EVALSHA", script.sha, len(chunk), *chunk, *args)
            return list(await pipe.execute())

        async def send() -> list[Any]:
            if lane is not None:  # one write for every chunk, NOSCRIPT handled by the lane
                return list(await asyncio.gather(*(lane.evalsha(script, chunk, args) for chunk in chunks)))
            try:
                return await pipelined()
            except NoScriptError:  # a restarted Redis, a failover, the first batch
                await self._client.script_load(_SNAPSHOT_BATCH)
                return await pipelined()

        replies = await self._call(
            "snapshot batch", send, idempotent=True, within=max(self._timeout, BATCH_READ_S * len(digests))
        )
        raws: list[Sequence[Any]] = [_NOTHING_STORED] * (len(keys) // 4)
        for number, reply in enumerate(replies):
            offset = number * SNAPSHOT_BATCH_PAIRS - 1  # the script numbers its pairs from 1
            for index, raw in zip(reply[::2], reply[1::2], strict=True):
                raws[offset + int(index)] = raw
        return _merged_snapshots(digests, raws)


def _merged_snapshots(digests: Sequence[Sequence[Any]], raws: Sequence[Sequence[Any]]) -> list[Snapshot]:
    """One snapshot per consumer from the raw replies of its keys, in order: the current secret's
    pair first (the snapshot's version and newest are its own), the facts of older secrets' pairs added."""
    result = []
    position = 0
    for per_consumer in digests:
        version, state, newest = _decode_snapshot(raws[position])
        for old_raw in raws[position + 1 : position + len(per_consumer)]:
            old = _decode_snapshot(old_raw)[1]
            state = PairState(
                state.attempts + old.attempts, state.refusals + old.refusals, state.consents + old.consents
            )
        position += len(per_consumer)
        result.append(Snapshot(state, version, newest))
    return result


def _ms_span(span: timedelta) -> int:
    return int(span.total_seconds() * 1000)


# The snapshot script over many pairs at once (`Store.read_snapshots`): KEYS are the snapshot
# script's four keys of each pair, pair after pair; ARGV the snapshot script's. Only the pairs with
# a key are read (a pair with none reads as `_NOTHING_STORED`), each as `_SNAPSHOT` reads it; the
# reply is flat: a pair's number (from 1), its snapshot reply, and so on.
_SNAPSHOT_BATCH = """
local out = {}
local pair = 0
for i = 1, #KEYS, 4 do
  pair = pair + 1
  if redis.call('EXISTS', KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3]) > 0 then
    local version = redis.call('GET', KEYS[i + 3]) or '0'
    local attempts = redis.call('ZRANGEBYSCORE', KEYS[i], ARGV[1], ARGV[3], 'WITHSCORES')
    local refusals = redis.call('ZRANGEBYSCORE', KEYS[i + 1], ARGV[2], ARGV[3], 'WITHSCORES')
    local consents = redis.call('ZREVRANGEBYSCORE', KEYS[i + 2], ARGV[3], '-inf', 'WITHSCORES', 'LIMIT', 0, ARGV[4])
    local newest = redis.call('ZREVRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    out[#out + 1] = pair
    out[#out + 1] = {version, attempts, refusals, consents, newest[2] or '0'}
  end
end
return out
"""
# Pairs per run of `_SNAPSHOT_BATCH`: each run holds Redis for a fraction of a millisecond (the
# live guards' commands wait that long at worst), and a batch of the scrub's is a few runs sent
# in one write.
SNAPSHOT_BATCH_PAIRS = 500
