"""Settings: one TOML file plus `NPV_GUARD_*` environment variables, read once at start.

Every key of the file can be overridden by `NPV_GUARD_<SECTION>_<KEY>` (top-level keys:
`NPV_GUARD_<KEY>`), and every string key can instead be read from a file named by the same
variable with `_FILE` appended (container secrets). A broken value stops the program with one
line that names the key and the problem.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import math
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import date, datetime
from pathlib import Path
from typing import Any, ClassVar, get_args, get_origin, get_type_hints

from npv_guard.clock import parse_instant
from npv_guard.core.calendar import Window
from npv_guard.core.model import (
    DEFAULT_BANNED_SECTORS,
    DEFAULT_CALLBACK_WORKING_DAYS,
    DEFAULT_CONSENT_EXEMPT_SECTORS,
    DEFAULT_CONSENT_MAX_AGE_DAYS,
    DEFAULT_CONSENT_PROOF_DAYS,
    Policy,
    Professional,
    professional_problem,
    valid_label,
)
from npv_guard.core.numbering import NumberKind
from npv_guard.core.numbering import parse as parse_number
from npv_guard.core.reasons import ReasonCode
from npv_guard.core.regimes import DEFAULT_SECTOR_BANS, SectorBan

ENV_PREFIX = "NPV_GUARD_"
CONFIG_ENV = "NPV_GUARD_CONFIG"
NOW_ENV = "NPV_GUARD_NOW"


class ConfigError(ValueError):
    """A configuration problem, phrased for the operator: `key: problem`."""


# Secrets printed in this project's README, docs and examples: known to anyone, so no secret.
EXAMPLE_SECRETS = frozenset({"change-me-to-a-long-random-string"})
MIN_SECRET_CHARS = 16
# metrics.campaigns: series per campaign stay few; "other" and "none" are the label's own values.
MAX_METRIC_CAMPAIGNS = 100
RESERVED_CAMPAIGN_LABELS = frozenset({"other", "none"})


def _port(key: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(f"{key}: must be 1-65535, got {port}")


def _seconds(key: str, value: float, most: float) -> None:
    """A duration: finite, above zero, at most `most` (nan and inf are refused too)."""
    if not (math.isfinite(value) and 0 < value <= most):
        raise ConfigError(f"{key}: expected more than 0 and at most {most:g} seconds, got {value}")


def _listen(key: str, listen: str) -> None:
    host, _, port = listen.rpartition(":")
    if not (port.isdigit() and host):
        raise ConfigError(f"{key}: expected HOST:PORT, got {listen!r}")
    _port(key, int(port))


def _ban_table(bans: Mapping[str, SectorBan]) -> dict[str, dict[str, str]]:
    return {
        sector: {medium: day.isoformat() for medium, day in (("voice", ban.voice), ("sms", ban.sms)) if day}
        for sector, ban in bans.items()
    }


class _Section:
    """What every settings section declares about its own fields, beside `validate`."""

    # Never quoted in an error; a config file holding one must not be readable by others.
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ()
    # Quoted without their credentials.
    URL_FIELDS: ClassVar[tuple[str, ...]] = ()
    # URLs that are a secret in the config file when they carry credentials (user:password@).
    CREDENTIAL_URL_FIELDS: ClassVar[tuple[str, ...]] = ()

    def validate(self) -> None:
        """The section's own checks, with its keys' full names in the errors."""


@dataclass(frozen=True)
class RulesSettings(_Section):
    """The readings of the law an operator may change; each is explained in docs/rules.md."""

    local_holidays: bool = True
    banned_sectors: tuple[str, ...] = tuple(sorted(DEFAULT_BANNED_SECTORS))
    # How far from the guard's clock a recorded fact (attempt, refusal, withdrawal, STOP) may be
    # dated; consent grants may be older (their collection instant), never later.
    max_write_skew_s: float = 5.0

    # sector -> {"voice": first banned day, "sms": first banned day}; a medium left out: never.
    sector_bans: dict[str, dict[str, str]] = field(default_factory=lambda: _ban_table(DEFAULT_SECTOR_BANS))
    consent_exempt_sectors: tuple[str, ...] = tuple(sorted(DEFAULT_CONSENT_EXEMPT_SECTORS))
    consent_max_age_days: int = DEFAULT_CONSENT_MAX_AGE_DAYS
    consent_proof_days: int = DEFAULT_CONSENT_PROOF_DAYS
    callback_request_working_days: int = DEFAULT_CALLBACK_WORKING_DAYS
    out_of_hours_slot_only: bool = True

    def validate(self) -> None:
        for key in ("banned_sectors", "consent_exempt_sectors"):
            for sector in getattr(self, key):
                if not sector.replace("_", "").isalnum():
                    raise ConfigError(f"rules.{key}: {sector!r} is not a sector name")
        for sector, row in self.sector_bans.items():
            if not sector.replace("_", "").isalnum():
                raise ConfigError(f"rules.sector_bans: {sector!r} is not a sector name")
            for medium, day in row.items():
                if medium not in ("voice", "sms"):
                    raise ConfigError(f"rules.sector_bans.{sector}: {medium!r} is not a medium (voice, sms)")
                try:
                    date.fromisoformat(day)
                except ValueError:
                    raise ConfigError(
                        f"rules.sector_bans.{sector}.{medium}: {day!r} is not a date (YYYY-MM-DD)"
                    ) from None
        for key, low, high in (
            ("consent_max_age_days", 1, 3660),
            ("consent_proof_days", 1096, 36600),
            ("callback_request_working_days", 1, 30),
        ):
            value = getattr(self, key)
            if not low <= value <= high:
                raise ConfigError(f"rules.{key}: expected {low}-{high}, got {value}")
        _seconds("rules.max_write_skew_s", self.max_write_skew_s, 3600)

    def sector_ban_table(self) -> dict[str, SectorBan]:
        """`sector_bans` as the core reads it (validated at load)."""
        return {
            sector: SectorBan(
                voice=date.fromisoformat(row["voice"]) if row.get("voice") else None,
                sms=date.fromisoformat(row["sms"]) if row.get("sms") else None,
            )
            for sector, row in self.sector_bans.items()
        }


@dataclass(frozen=True)
class RedisSettings(_Section):
    url: str = "redis://127.0.0.1:6379/0"
    timeout_ms: int = 200
    fail_open: bool = False
    cluster: bool = False
    key_prefix: str = "npv"
    # Redis Sentinel: the sentinels' host:port; the master is asked of them by name, and asked
    # again after a connection error or a READONLY answer (a failover), without a restart.
    sentinels: tuple[str, ...] = ()
    sentinel_master: str = ""
    # The sentinels' own password (their requirepass); the data nodes' credentials, database and
    # TLS stay in `url`, whose host:port is then not used.
    sentinel_password: str = ""
    # Replicas that must hold a refusal before it counts as stored (else it is journaled).
    wait_replicas: int = 0

    SECRET_FIELDS = ("sentinel_password",)
    URL_FIELDS = ("url",)
    CREDENTIAL_URL_FIELDS = ("url",)

    def validate(self) -> None:
        if not 1 <= self.timeout_ms <= 60000:
            raise ConfigError(f"redis.timeout_ms: expected 1-60000, got {self.timeout_ms}")
        if not 0 <= self.wait_replicas <= 16:
            raise ConfigError(f"redis.wait_replicas: expected 0-16, got {self.wait_replicas}")
        if not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"redis.url: expected redis://, rediss:// or unix://, got {redact_url(self.url)!r}")
        self._validate_sentinels()
        if not self.key_prefix or any(ch in "{}" or ch.isspace() for ch in self.key_prefix):
            # Braces would break the hash tag that keeps a pair's keys in one Cluster slot.
            raise ConfigError(
                f"redis.key_prefix: expected a non-empty name without braces or spaces, got {self.key_prefix[:64]!r}"
            )

    def where(self) -> str:
        """Where the state is, for logs and the doctor (no credentials)."""
        if self.sentinels:
            return f"master {self.sentinel_master!r} through the sentinels {', '.join(self.sentinels)}"
        return redact_url(self.url)

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """`sentinels` as (host, port) pairs (validated at load)."""
        return [_host_port(entry) for entry in self.sentinels]

    def _validate_sentinels(self) -> None:
        if not self.sentinels:
            if self.sentinel_master:
                raise ConfigError("redis.sentinel_master: set, but redis.sentinels lists no sentinel")
            return
        for position, entry in enumerate(self.sentinels):
            try:
                _host_port(entry)
            except ValueError:
                raise ConfigError(f"redis.sentinels[{position}]: expected host:port, got {entry[:100]!r}") from None
        if self.cluster:
            raise ConfigError("redis.sentinels: a Redis Cluster fails over by itself; set either cluster or sentinels")
        # The shape of an id (a name Sentinel accepts): it is also shown in logs and the doctor.
        if not valid_label(self.sentinel_master):
            raise ConfigError(
                f"redis.sentinel_master: expected the master's name in the sentinels' configuration "
                f"(1-64 letters, digits or _.+-), got {self.sentinel_master[:64]!r}"
            )
        if self.url.startswith("unix://"):
            raise ConfigError(
                "redis.url: a unix:// socket cannot be used with redis.sentinels (use redis:// or rediss://)"
            )


@dataclass(frozen=True)
class CallsSettings(_Section):
    """What the call path does with a verdict and with refusals, in both ARI and AGI modes."""

    reject_cause: int = 21  # Q.850 "call rejected": SIP 403 on PJSIP
    # Per reason code Q.850 cause, e.g. {"STATE_UNAVAILABLE" = 34}.
    reject_causes: dict[str, int] = field(default_factory=dict)
    agent_refusal_code: str = "*9"
    consumer_refusal_key: str = "9"
    hangup_on_refusal: bool = False
    # ARI mode: media played as early media before a rejection's hang-up (e.g. "sound:..." or
    # "tone:..."), empty for none.
    reject_announcement: str = ""
    # Longest the announcement may play (a tone: plays until stopped): then the hang-up comes.
    reject_announcement_max_s: float = 10.0

    def cause_for(self, codes: tuple[str, ...]) -> int:
        """The cause of a rejection: the first reason with its own cause, else the default."""
        return next((self.reject_causes[code] for code in codes if code in self.reject_causes), self.reject_cause)

    def validate(self) -> None:
        for code, cause in self.reject_causes.items():
            if code not in ReasonCode.__members__:
                raise ConfigError(f"calls.reject_causes.{code[:64]}: unknown reason code")
            if not 1 <= cause <= 127:
                raise ConfigError(f"calls.reject_causes.{code}: Q.850 cause must be 1-127, got {cause}")
        if not 1 <= self.reject_cause <= 127:
            raise ConfigError(f"calls.reject_cause: Q.850 cause must be 1-127, got {self.reject_cause}")
        for key in ("agent_refusal_code", "consumer_refusal_key"):
            code = getattr(self, key)
            if code and not all(ch in "0123456789*#ABCD" for ch in code):
                raise ConfigError(f"calls.{key}: DTMF digits only (0-9 * # A-D) or empty to switch off, got {code!r}")
        announcement = self.reject_announcement
        if announcement and not announcement.startswith(("sound:", "tone:", "recording:", "number:", "digits:")):
            raise ConfigError(
                f"calls.reject_announcement: expected an ARI media URI (sound:, tone:...), got {announcement!r}"
            )
        _seconds("calls.reject_announcement_max_s", self.reject_announcement_max_s, 120)


@dataclass(frozen=True)
class AriSettings(_Section):
    url: str = "http://127.0.0.1:8088"
    username: str = "npvguard"
    password: str = ""
    app: str = "npv-guard"
    # Where allowed calls go; {number} is the consumer's E.164 number.
    carrier: str = "PJSIP/{number}@carrier"
    ring_timeout_s: int = 60
    reconnect_max_s: float = 30.0

    SECRET_FIELDS = ("password",)
    URL_FIELDS = ("url",)

    def validate(self) -> None:
        if "{number}" not in self.carrier:
            raise ConfigError(f"ari.carrier: must contain {{number}}, got {self.carrier!r}")
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"ari.url: expected http:// or https://, got {redact_url(self.url)!r}")
        if not 1 <= self.ring_timeout_s <= 3600:
            raise ConfigError(f"ari.ring_timeout_s: expected 1-3600 seconds, got {self.ring_timeout_s}")
        _seconds("ari.reconnect_max_s", self.reconnect_max_s, 3600)


@dataclass(frozen=True)
class AgiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = 4573
    max_sessions: int = 500
    header_timeout_s: float = 5.0
    command_timeout_s: float = 5.0
    # When set, Asterisk must call agi://HOST:PORT/<path_secret>/check (and .../refusal): any
    # other local process that does not know it is refused. Empty: no secret in the path.
    path_secret: str = ""

    SECRET_FIELDS = ("path_secret",)

    def validate(self) -> None:
        if not self.host:
            raise ConfigError("agi.host: expected an address, got an empty string")
        _port("agi.port", self.port)
        if not 1 <= self.max_sessions <= 100000:
            raise ConfigError(f"agi.max_sessions: expected 1-100000, got {self.max_sessions}")
        _seconds("agi.header_timeout_s", self.header_timeout_s, 300)
        _seconds("agi.command_timeout_s", self.command_timeout_s, 300)
        secret = self.path_secret
        if secret and not (len(secret) >= MIN_SECRET_CHARS and secret.replace("-", "").replace("_", "").isalnum()):
            # Never echo the value: it is a secret.
            raise ConfigError(
                f"agi.path_secret: expected at least {MIN_SECRET_CHARS} letters, digits, - or _ (it goes in a URL path)"
            )
        if secret and _is_example(secret):
            raise ConfigError("agi.path_secret: this is the documentation's example: choose your own")


@dataclass(frozen=True)
class AmiSettings(_Section):
    """AMI, used only by `npv-guard doctor` to read the loaded dialplan and features."""

    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "npvguard"
    secret: str = ""

    SECRET_FIELDS = ("secret",)

    def validate(self) -> None:
        _port("ami.port", self.port)


@dataclass(frozen=True)
class HttpSettings(_Section):
    # /healthz and /metrics of `run` and `agi`; empty switches the listener off.
    listen: str = "127.0.0.1:9464"

    def validate(self) -> None:
        if self.listen:
            _listen("http.listen", self.listen)


@dataclass(frozen=True)
class ApiSettings(_Section):
    """`npv-guard serve`: the HTTP pre-check API for dialers."""

    listen: str = "127.0.0.1:8470"  # HOST:PORT; loopback unless a reverse proxy fronts it
    max_body_bytes: int = 16384  # a check is a few hundred bytes: anything bigger is refused (413)
    # Each connection's deadlines (npv_guard/httpserver.py): from a request's first byte to its
    # last header, from the headers to the body's last byte, and with no request at all.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    idle_timeout_s: float = 30.0
    # Open connections at most: past it a new one evicts the longest waiting one without a
    # request being answered, or gets a 503 TOO_MANY_CONNECTIONS.
    max_connections: int = 512

    def validate(self) -> None:
        _listen("api.listen", self.listen)
        if not 256 <= self.max_body_bytes <= 1048576:
            raise ConfigError(f"api.max_body_bytes: expected 256-1048576, got {self.max_body_bytes}")
        for key in ("header_timeout_s", "body_timeout_s", "idle_timeout_s"):
            _seconds(f"api.{key}", getattr(self, key), 3600)
        if not 1 <= self.max_connections <= 65535:
            raise ConfigError(f"api.max_connections: expected 1-65535, got {self.max_connections}")


@dataclass(frozen=True)
class SmsSettings(_Section):
    """Text messages through the ARI application (`npv-guard run`), see docs/sms.md."""

    enabled: bool = False
    # Messages Asterisk receives from this endpoint are SMS to check and relay to consumers.
    platform_endpoint: str = "PJSIP/platform"
    # Messages from this endpoint are consumers' replies (STOP).
    carrier_endpoint: str = "PJSIP/carrier"
    # ARI sendMessage destination of an allowed message; {number} is the consumer's E.164 number.
    carrier: str = "pjsip:carrier/sip:{number}@127.0.0.1"
    # Asterisk passes at most 1023 bytes of a MESSAGE body on; longer bodies arrive empty.
    max_body_bytes: int = 1023
    # Replies that withdraw consent, compared without case, accents, spaces and punctuation.
    stop_words: tuple[str, ...] = ("STOP", "STOP SMS", "ARRET", "ARRET SMS", "STOP PUB", "DESABONNER", "UNSUBSCRIBE")
    # Sent once to the consumer after a STOP; {name} is the professional's name. Empty: no reply.
    stop_ack: str = "Votre demande STOP est prise en compte : vous ne recevrez plus de SMS de {name}."
    # Where consumers' replies (STOP included) are passed on, e.g. "pjsip:platform"; empty: not passed on.
    inbound_to: str = ""

    def validate(self) -> None:
        if "{number}" not in self.carrier or not self.carrier.startswith("pjsip:"):
            raise ConfigError(f"sms.carrier: expected a pjsip: URI containing {{number}}, got {self.carrier!r}")
        for key in ("platform_endpoint", "carrier_endpoint"):
            tech, _, resource = getattr(self, key).partition("/")
            if not tech or not resource:
                raise ConfigError(
                    f"sms.{key}: expected TECH/RESOURCE (e.g. PJSIP/platform), got {getattr(self, key)!r}"
                )
        if not 1 <= self.max_body_bytes <= 1023:
            raise ConfigError(
                f"sms.max_body_bytes: expected 1-1023 (Asterisk's MESSAGE limit), got {self.max_body_bytes}"
            )
        if self.inbound_to and not self.inbound_to.startswith("pjsip:"):
            raise ConfigError(f"sms.inbound_to: expected a pjsip: URI or empty, got {self.inbound_to!r}")


@dataclass(frozen=True)
class MetricsSettings(_Section):
    """What /metrics may name. A label takes only configured values: Prometheus keeps one series
    per value, so free-form campaign ids from dialers would grow it without bound."""

    campaigns: tuple[str, ...] = ()  # the campaign ids counted by name; any other is "other"

    def validate(self) -> None:
        if len(self.campaigns) > MAX_METRIC_CAMPAIGNS:
            raise ConfigError(f"metrics.campaigns: at most {MAX_METRIC_CAMPAIGNS} campaigns, got {len(self.campaigns)}")
        for campaign in self.campaigns:
            if not valid_label(campaign) or campaign in RESERVED_CAMPAIGN_LABELS:
                raise ConfigError(
                    f"metrics.campaigns: {campaign[:64]!r} is not a campaign id (1-64 letters, digits or _.+-; "
                    f"not {', '.join(sorted(RESERVED_CAMPAIGN_LABELS))})"
                )


@dataclass(frozen=True)
class LogSettings(_Section):
    level: str = "info"
    audit_file: str = ""  # empty: audit lines go to standard output

    def validate(self) -> None:
        if self.level.lower() not in {"debug", "info", "warning", "error"}:
            raise ConfigError(f"log.level: expected debug, info, warning or error, got {self.level!r}")


@dataclass(frozen=True)
class Settings:
    hash_secret: str = ""
    previous_hash_secrets: tuple[str, ...] = ()
    # Refusals that cannot reach Redis wait here (fsync'd) until replayed.
    journal_path: str = "/var/lib/npv-guard/refusals.journal"
    rules: RulesSettings = field(default_factory=RulesSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    calls: CallsSettings = field(default_factory=CallsSettings)
    ari: AriSettings = field(default_factory=AriSettings)
    agi: AgiSettings = field(default_factory=AgiSettings)
    ami: AmiSettings = field(default_factory=AmiSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    sms: SmsSettings = field(default_factory=SmsSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    log: LogSettings = field(default_factory=LogSettings)
    professionals: tuple[Professional, ...] = ()
    # SHA-256 hex digest of each API bearer token -> the professional it acts for (from
    # [[professionals]] api_token_sha256): kept out of the core, which knows nothing of HTTP.
    api_tokens: dict[str, str] = field(default_factory=dict)
    # Start of the guard's clock when NPV_GUARD_NOW is set (replay mode).
    now: datetime | None = None
    source: str = "defaults"

    def policy(self) -> Policy:
        return Policy(
            local_holidays=self.rules.local_holidays,
            banned_sectors=frozenset(self.rules.banned_sectors),
            sector_bans=self.rules.sector_ban_table(),
            consent_exempt_sectors=frozenset(self.rules.consent_exempt_sectors),
            consent_max_age_days=self.rules.consent_max_age_days,
            consent_proof_days=self.rules.consent_proof_days,
            callback_working_days=self.rules.callback_request_working_days,
            out_of_hours_slot_only=self.rules.out_of_hours_slot_only,
            fail_open=self.redis.fail_open,
            professionals=self.professionals,
        )

    def validate(self) -> None:
        """The top-level keys, then each section's own checks."""
        if _is_example(self.hash_secret):
            # Its length is checked where a store needs it (require_hash_secret): offline
            # commands run without one.
            raise ConfigError("hash_secret: this is the documentation's example secret: choose your own random one")
        for position, old in enumerate(self.previous_hash_secrets):
            _secret(f"previous_hash_secrets[{position}]", old)
            if old == self.hash_secret:
                raise ConfigError(f"previous_hash_secrets[{position}]: the same as hash_secret")
        if not self.journal_path.strip():
            raise ConfigError("journal_path: expected a file path, got an empty string")
        for section in _SECTIONS:
            getattr(self, section).validate()

    def require_hash_secret(self) -> str:
        if len(self.hash_secret) < MIN_SECRET_CHARS:
            raise ConfigError(
                "hash_secret: required to store consumer numbers (at least 16 characters); "
                "set NPV_GUARD_HASH_SECRET, NPV_GUARD_HASH_SECRET_FILE or hash_secret in the config file"
            )
        return self.hash_secret


_SECTIONS: dict[str, type[_Section]] = {
    "rules": RulesSettings,
    "redis": RedisSettings,
    "calls": CallsSettings,
    "ari": AriSettings,
    "agi": AgiSettings,
    "ami": AmiSettings,
    "http": HttpSettings,
    "api": ApiSettings,
    "sms": SmsSettings,
    "metrics": MetricsSettings,
    "log": LogSettings,
}
_SPECIAL = {"professionals", "api_tokens", "now", "source"}


def load_settings(path: str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from the file (argument, else NPV_GUARD_CONFIG) and the environment."""
    env = os.environ if environ is None else environ
    path = path or env.get(CONFIG_ENV) or None
    document: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as handle:
                document = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError(f"config file {path}: not found") from None
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"config file {path}: {error}") from None
    known = {f.name for f in fields(Settings)} - {"now", "source", "api_tokens"}
    for key in document:
        if key not in known:
            raise ConfigError(f"{key}: unknown key (known: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    hints = get_type_hints(Settings)
    for f in fields(Settings):
        if f.name in _SPECIAL:
            continue
        if f.name in _SECTIONS:
            values[f.name] = _load_section(f.name, _SECTIONS[f.name], document.get(f.name, {}), env)
        else:
            values[f.name] = _value(f.name, hints[f.name], document.get(f.name, MISSING), env, f.name)
    values["professionals"] = _professionals(document.get("professionals", MISSING), env)
    values["api_tokens"] = _api_tokens(document.get("professionals", MISSING), env)
    values["now"] = _now(env.get(NOW_ENV))
    values["source"] = path or "defaults"
    settings = Settings(**{k: v for k, v in values.items() if v is not MISSING})
    settings.validate()
    return settings


def _load_section(name: str, cls: type[Any], table: Any, env: Mapping[str, str]) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: expected a table, got {type(table).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    for key in table:
        if key not in names:
            raise ConfigError(f"{name}.{key}: unknown key (known: {', '.join(sorted(names))})")
    values = {}
    for f in fields(cls):
        value = _value(f"{name}.{f.name}", hints[f.name], table.get(f.name, MISSING), env, f"{name}_{f.name}")
        if value is not MISSING:
            values[f.name] = value
    return cls(**values)


def _value(key: str, kind: Any, from_file: Any, env: Mapping[str, str], env_key: str) -> Any:
    variable = ENV_PREFIX + env_key.upper()
    if variable in env:
        return _coerce(key, kind, env[variable], from_env=True)
    if kind is str and variable + "_FILE" in env:
        secret_path = env[variable + "_FILE"]
        try:
            return Path(secret_path).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigError(f"{key}: cannot read {variable}_FILE {secret_path}: {error.strerror}") from None
    if from_file is MISSING:
        return MISSING
    return _coerce(key, kind, from_file, from_env=False)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(key: str, kind: Any, raw: Any, *, from_env: bool) -> Any:
    origin = get_origin(kind)
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            if from_env and str(raw).strip().lower() in _TRUE | _FALSE:
                return str(raw).strip().lower() in _TRUE
        elif kind is int:
            if isinstance(raw, int) and not isinstance(raw, bool):
                return raw
            if from_env:
                return int(str(raw).strip())
        elif kind is float:
            if isinstance(raw, int | float) and not isinstance(raw, bool):
                return float(raw)
            if from_env:
                return float(str(raw).strip())
        elif kind is str:
            if isinstance(raw, str):
                return raw
        elif origin is tuple:
            items = _split_list(raw) if from_env and isinstance(raw, str) else raw
            if isinstance(items, list) and all(isinstance(item, str) for item in items):
                return tuple(item.strip() for item in items if item.strip())
        elif origin is dict:
            table = json.loads(raw) if from_env and isinstance(raw, str) else raw
            value_kind = get_args(kind)[1]
            if get_origin(value_kind) is dict:  # a table of tables of strings (rules.sector_bans)
                if isinstance(table, dict) and all(
                    isinstance(row, dict) and all(isinstance(v, str) for v in row.values()) for row in table.values()
                ):
                    return {str(k): dict(row) for k, row in table.items()}
            elif isinstance(table, dict) and all(
                isinstance(v, value_kind) and not isinstance(v, bool) for v in table.values()
            ):
                return dict(table)
    except (ValueError, TypeError):
        pass
    raise ConfigError(f"{key}: expected {_describe(kind)}, got {_shown(key, raw)}"[:300])


# Keys whose value is a secret or may hold one: an error names the key and the expected type,
# never the value (URLs are shown without their credentials). Each section names its own.
_TOP_SECRETS = ("hash_secret", "previous_hash_secrets")
SECRET_KEYS = frozenset(
    [*_TOP_SECRETS, *(f"{name}.{key}" for name, cls in _SECTIONS.items() for key in cls.SECRET_FIELDS)]
)
URL_KEYS = frozenset(f"{name}.{key}" for name, cls in _SECTIONS.items() for key in cls.URL_FIELDS)


def _shown(key: str, raw: Any) -> str:
    """A configured value as an error message may quote it."""
    if key in SECRET_KEYS:
        return f"{json_kind(raw, toml=True)} (value not shown)"
    if key in URL_KEYS:
        return repr(redact_url(raw)) if isinstance(raw, str) else json_kind(raw, toml=True)
    return repr(raw)


def json_kind(raw: Any, *, toml: bool = False) -> str:
    """What kind of value a client or a config file gave, for an error that must not quote the
    value itself: in JSON's words (an array, an object), or TOML's (a list, a table)."""
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "a boolean"
    if isinstance(raw, int | float):
        return "a number"
    if isinstance(raw, str):
        return "a string"
    if isinstance(raw, list | tuple):
        return "a list" if toml else "an array"
    if isinstance(raw, dict):
        return "a table" if toml else "an object"
    return type(raw).__name__


def _split_list(raw: str) -> Any:
    text = raw.strip()
    return json.loads(text) if text.startswith("[") else text.split(",")


def _describe(kind: Any) -> str:
    if kind is bool:
        return "true or false"
    if kind is int:
        return "an integer"
    if kind is float:
        return "a number"
    if kind is str:
        return "a string"
    if get_origin(kind) is tuple:
        return "a list of strings"
    if get_origin(get_args(kind)[1]) is dict:
        return 'a table of {voice = "YYYY-MM-DD", sms = "YYYY-MM-DD"} tables'
    return "a table of integers"


def _professionals(raw: Any, env: Mapping[str, str]) -> tuple[Professional, ...]:
    variable = ENV_PREFIX + "PROFESSIONALS"
    if variable in env:
        try:
            raw = json.loads(env[variable])
        except ValueError as error:
            raise ConfigError(f"professionals: {variable} is not JSON: {error}") from None
    if raw is MISSING:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("professionals: expected a list of tables ([[professionals]])")
    result: list[Professional] = []
    owners: dict[str, str] = {}
    for index, entry in enumerate(raw):
        where = f"professionals[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a table with id, name, siren, npvs")
        known = {"id", "name", "siren", "npvs", "platform_numbers", "sms_windows", "api_token_sha256"}
        unknown = set(entry) - known
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown key (known: {', '.join(sorted(known))})")
        ident = entry.get("id")
        problem = professional_problem(ident)
        if problem or not isinstance(ident, str):
            raise ConfigError(f"{where}.id: {problem} , got {ident!r}")
        if any(p.id == ident for p in result):
            raise ConfigError(f"{where}.id: {ident!r} is defined twice")
        name = entry.get("name", "")
        siren = entry.get("siren")
        if not isinstance(name, str):
            raise ConfigError(f"{where}.name: expected a string")
        if siren is not None and not (isinstance(siren, str) and len(siren) == 9 and siren.isdigit()):
            raise ConfigError(f"{where}.siren: expected 9 digits, got {siren!r}")
        nationals = _assigned_numbers(entry, "npvs", where, ident, owners)
        platform_numbers = _assigned_numbers(entry, "platform_numbers", where, ident, owners)
        result.append(
            Professional(ident, name, siren, nationals, platform_numbers, _windows(entry.get("sms_windows"), where))
        )
    return tuple(result)


def _assigned_numbers(
    entry: dict[str, Any], key: str, where: str, ident: str, owners: dict[str, str]
) -> tuple[str, ...]:
    """The national digits of a professional's NPVs or 0937-0939 senders: one owner per number."""
    spellings = entry.get(key, [])
    if not isinstance(spellings, list):
        raise ConfigError(f"{where}.{key}: expected a list of numbers")
    nationals: list[str] = []
    for position, spelled in enumerate(spellings):
        number = parse_number(spelled if isinstance(spelled, str) else None)
        fits = number.is_npv if key == "npvs" else number.kind is NumberKind.PLATFORM
        if not fits or number.national is None:
            what = "an NPV number" if key == "npvs" else "a 0937-0939 platform number"
            raise ConfigError(f"{where}.{key}[{position}]: {spelled!r} is not {what}")
        if number.national in owners:
            raise ConfigError(
                f"{where}.{key}[{position}]: {spelled!r} is already assigned to {owners[number.national]!r}"
            )
        owners[number.national] = ident
        nationals.append(number.national)
    return tuple(nationals)


def _windows(raw: Any, where: str) -> tuple[Window, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw or not all(isinstance(item, str) for item in raw):
        raise ConfigError(f'{where}.sms_windows: expected a list like ["09:00-12:00", "14:00-19:00"]')
    try:
        windows = tuple(sorted((Window.parse(item) for item in raw), key=lambda w: w.start))
    except ValueError as error:
        raise ConfigError(f"{where}.sms_windows: {error}") from None
    if any(later.start < earlier.end for earlier, later in itertools.pairwise(windows)):
        raise ConfigError(f"{where}.sms_windows: windows overlap")
    return windows


_SHA256_HEX = frozenset("0123456789abcdef")


def _api_tokens(raw: Any, env: Mapping[str, str]) -> dict[str, str]:
    """Digest -> professional, from each entry's `api_token_sha256` (the entries are already
    validated by _professionals). Only digests are configured: the file holds no usable secret."""
    variable = ENV_PREFIX + "PROFESSIONALS"
    if variable in env:
        raw = json.loads(env[variable])
    if not isinstance(raw, list):
        return {}
    tokens: dict[str, str] = {}
    for index, entry in enumerate(raw):
        digests = entry.get("api_token_sha256", [])
        where = f"professionals[{index}].api_token_sha256"
        if not isinstance(digests, list):
            raise ConfigError(f"{where}: expected a list of SHA-256 hex digests (npv-guard api-token prints one)")
        for position, digest in enumerate(digests):
            text = digest.strip().lower() if isinstance(digest, str) else ""
            if len(text) != 64 or not set(text) <= _SHA256_HEX:
                # Never echo the value: it may be a real token pasted by mistake.
                raise ConfigError(f"{where}[{position}]: expected 64 hex digits (the token's SHA-256, not the token)")
            if text in tokens:
                raise ConfigError(f"{where}[{position}]: the same digest is already given to {tokens[text]!r}")
            tokens[text] = entry["id"]
    return tokens


def _now(raw: str | None) -> datetime | None:
    if raw is None or not raw.strip():
        return None
    try:
        return parse_instant(raw)
    except ValueError as error:
        raise ConfigError(f"{NOW_ENV}: {error}") from None


def _is_example(secret: str) -> bool:
    lowered = secret.lower()
    return secret in EXAMPLE_SECRETS or "change-me" in lowered or "changeme" in lowered


def _secret(key: str, value: str) -> None:
    # Never echo the value: it is the secret itself.
    if len(value) < MIN_SECRET_CHARS:
        raise ConfigError(f"{key}: at least {MIN_SECRET_CHARS} characters, got {len(value)}")
    if _is_example(value):
        raise ConfigError(f"{key}: this is the documentation's example secret: choose your own random one")


# Keys whose value is a secret: a file holding one must not be readable by others.
_SECRET_KEYS = (
    *((key,) for key in _TOP_SECRETS),
    *((name, key) for name, cls in _SECTIONS.items() for key in (*cls.SECRET_FIELDS, *cls.CREDENTIAL_URL_FIELDS)),
)


def file_warnings(settings: Settings) -> list[str]:
    """Problems of the config file that do not stop the guard: a secret readable by others."""
    path = settings.source
    if path == "defaults":
        return []
    try:
        mode = os.stat(path).st_mode
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return []
    if not mode & (stat.S_IRGRP | stat.S_IROTH):
        return []
    held = []
    for key in _SECRET_KEYS:
        value: Any = document
        for part in key:
            value = value.get(part) if isinstance(value, dict) else None
        if key[-1] in _credential_urls(key) and not (isinstance(value, str) and "@" in value):
            continue  # such a URL holds a secret only with credentials
        if value:
            held.append(".".join(key))
    if not held:
        return []
    return [
        f"config file {path} holds {', '.join(held)} and is readable by group or others "
        f"(mode {stat.S_IMODE(mode):04o}): chmod 600 it, or pass the secrets as NPV_GUARD_*_FILE"
    ]


def _host_port(entry: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` as a pair; ValueError otherwise."""
    host, sep, port = entry.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535 or any(ch.isspace() for ch in host):
        raise ValueError(entry)
    return host, int(port)


def _credential_urls(key: tuple[str, ...]) -> tuple[str, ...]:
    section = _SECTIONS.get(key[0]) if len(key) == 2 else None
    return section.CREDENTIAL_URL_FIELDS if section is not None else ()


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: reachable from this machine only."""
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def redact_url(url: str) -> str:
    """A URL without its credentials (user:password@, and password/secret/token query values),
    for logs, reports and error messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    head, question, query = rest.partition("?")
    if "@" in head:
        head = "***@" + head.rsplit("@", 1)[1]
    if question:
        pairs = []
        for pair in query.split("&"):
            name, equals, _ = pair.partition("=")
            secret = name.lower() in {"password", "pass", "passwd", "secret", "token", "auth"}
            pairs.append(f"{name}=***" if equals and secret else pair)
        query = "&".join(pairs)
    return f"{scheme}{sep}{head}{question}{query}"
