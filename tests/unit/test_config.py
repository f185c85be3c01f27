"""Settings: TOML file, NPV_GUARD_* overrides, secret files, one-line errors naming the key."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from npv_guard import config
from npv_guard.config import ConfigError, file_warnings, load_settings
from npv_guard.core.regimes import SectorBan


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "guard.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_defaults_without_file() -> None:
    settings = load_settings(None, {})
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
    assert settings.redis.timeout_ms == 200
    assert settings.redis.fail_open is False
    assert settings.rules.local_holidays is True
    assert settings.professionals == ()


def test_file_then_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
hash_secret = "from-the-file-0123456789"
[redis]
url = "redis://127.0.0.1:7000/1"
timeout_ms = 150
[rules]
local_holidays = false
banned_sectors = ["energy_renovation"]
[[professionals]]
id = "acme"
name = "ACME"
siren = "123456789"
npvs = ["01 62 00 00 01", "+33948000001"]
""",
    )
    env = {"NPV_GUARD_REDIS_TIMEOUT_MS": "300", "NPV_GUARD_RULES_LOCAL_HOLIDAYS": "yes"}
    settings = load_settings(path, env)
    assert settings.redis.url == "redis://127.0.0.1:7000/1"
    assert settings.redis.timeout_ms == 300
    assert settings.rules.local_holidays is True
    assert settings.rules.banned_sectors == ("energy_renovation",)
    assert settings.professionals[0].npvs == ("0162000001", "0948000001")
    assert settings.hash_secret == "from-the-file-0123456789"


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[redis]\nurl = "redis://127.0.0.1:7001/0"\n')
    assert load_settings(None, {"NPV_GUARD_CONFIG": path}).redis.url == "redis://127.0.0.1:7001/0"


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret-from-a-file-xyz\n")
    assert load_settings(None, {"NPV_GUARD_HASH_SECRET_FILE": str(secret)}).hash_secret == "s3cret-from-a-file-xyz"


def test_professionals_from_environment_json() -> None:
    env = {"NPV_GUARD_PROFESSIONALS": '[{"id": "lab", "npvs": ["+33162000001"]}]'}
    assert load_settings(None, env).professionals[0].id == "lab"


def test_now_from_environment() -> None:
    settings = load_settings(None, {"NPV_GUARD_NOW": "2026-12-01T10:30:00"})
    assert settings.now is not None and settings.now.isoformat() == "2026-12-01T09:30:00+00:00"


@pytest.mark.parametrize(
    ("text", "env", "key"),
    [
        ('[redis]\ntimeout_ms = "fast"\n', {}, "redis.timeout_ms"),
        ("[redis]\ntimeout_ms = -5\n", {}, "redis.timeout_ms"),
        ('[redis]\nfail_open = "no"\n', {}, "redis.fail_open"),
        ('[redis]\nurl = "http://x"\n', {}, "redis.url"),
        ("[redis]\nspeed = 1\n", {}, "redis.speed"),
        ("colour = 1\n", {}, "colour"),
        ("redis = 3\n", {}, "redis"),
        ('[rules]\nbanned_sectors = "energy"\n', {}, "rules.banned_sectors"),
        ('[[professionals]]\nid = "a b"\n', {}, "professionals[0].id"),
        ('[[professionals]]\nid = "a"\nnpvs = ["0612345678"]\n', {}, "professionals[0].npvs[0]"),
        (
            '[[professionals]]\nid = "a"\nnpvs = ["0162000001"]\n'
            '[[professionals]]\nid = "b"\nnpvs = ["+33162000001"]\n',
            {},
            "professionals[1].npvs[0]",
        ),
        ("[calls]\nreject_causes = {NOT_A_CODE = 21}\n", {}, "calls.reject_causes.NOT_A_CODE"),
        ('[calls]\nagent_refusal_code = "*9x"\n', {}, "calls.agent_refusal_code"),
        ('[calls]\nreject_announcement = "beep.wav"\n', {}, "calls.reject_announcement"),
        ("", {"NPV_GUARD_REDIS_TIMEOUT_MS": "soon"}, "redis.timeout_ms"),
        ("", {"NPV_GUARD_REDIS_FAIL_OPEN": "maybe"}, "redis.fail_open"),
        ("", {"NPV_GUARD_NOW": "yesterday"}, "NPV_GUARD_NOW"),
        ("[redis\n", {}, "config file"),
    ],
)
def test_broken_config_names_the_key(tmp_path: Path, text: str, env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text), env)
    message = str(raised.value)
    assert message.startswith(key), message
    assert "\n" not in message


def test_missing_file_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings("/nonexistent/guard.toml", {})


def test_hash_secret_is_required_for_the_store() -> None:
    with pytest.raises(ConfigError, match="hash_secret"):
        load_settings(None, {}).require_hash_secret()
    with pytest.raises(ConfigError, match="hash_secret"):
        load_settings(None, {"NPV_GUARD_HASH_SECRET": "short"}).require_hash_secret()


# --- no secret in an error ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "env", "secret"),
    [
        ("hash_secret = 1234567890123456789\n", {}, "1234567890123456789"),
        ('previous_hash_secrets = "old-secret-98765"\n', {}, "old-secret-98765"),
        ("[ari]\npassword = 424242\n", {}, "424242"),
        ('[ami]\nsecret = ["ami-s3cret"]\n', {}, "ami-s3cret"),
        ('[redis]\nurl = "http://user:pa55word@127.0.0.1:6379/0"\n', {}, "pa55word"),
        ("", {"NPV_GUARD_REDIS_URL": "tcp://:pa55word@127.0.0.1:6379"}, "pa55word"),
        ("[redis]\nurl = 7\n", {}, "7"),
        ("", {"NPV_GUARD_REDIS_URL": "redis//h?password=pa55word"}, "pa55word"),
    ],
)
def test_config_errors_never_show_a_secret(tmp_path: Path, text: str, env: dict[str, str], secret: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text), env)
    message = str(raised.value)
    assert secret not in message.replace(str(tmp_path), "")
    named = {"hash_secret", "previous_hash_secrets", "ari.password", "ami.secret", "redis.url"}
    assert message.split(":", 1)[0] in named


def test_a_redis_url_in_an_error_is_redacted(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'http://\*\*\*@127\.0\.0\.1:6379/0'"):
        load_settings(write(tmp_path, '[redis]\nurl = "http://user:pa55word@127.0.0.1:6379/0"\n'), {})


@pytest.mark.parametrize(
    ("key", "value"),
    [("header_timeout_s", "0"), ("body_timeout_s", "-1"), ("idle_timeout_s", "nan"), ("max_connections", "0"),
     ("header_timeout_s", "inf")],
)  # fmt: skip
def test_api_deadlines_and_cap_are_range_checked(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"^api\.{key}: expected"):
        load_settings(None, {f"NPV_GUARD_API_{key.upper()}": value})


def test_api_deadlines_and_cap_defaults() -> None:
    api = load_settings(None, {}).api
    assert (api.header_timeout_s, api.body_timeout_s, api.idle_timeout_s, api.max_connections) == (10, 10, 30, 512)


# --- ranges: every numeric setting, one line naming the key -------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[agi]\ncommand_timeout_s = -1\n", "agi.command_timeout_s"),
        ("[agi]\ncommand_timeout_s = 0\n", "agi.command_timeout_s"),
        ("[agi]\nheader_timeout_s = nan\n", "agi.header_timeout_s"),
        ("[agi]\nheader_timeout_s = inf\n", "agi.header_timeout_s"),
        ("[agi]\nport = 0\n", "agi.port"),
        ("[agi]\nport = 65536\n", "agi.port"),
        ("[agi]\nmax_sessions = 0\n", "agi.max_sessions"),
        ('[agi]\nhost = ""\n', "agi.host"),
        ('[agi]\npath_secret = "short"\n', "agi.path_secret"),
        ('[agi]\npath_secret = "has a space and is long enough"\n', "agi.path_secret"),
        ("[ari]\nring_timeout_s = -10\n", "ari.ring_timeout_s"),
        ("[ari]\nring_timeout_s = 0\n", "ari.ring_timeout_s"),
        ("[ari]\nreconnect_max_s = -1\n", "ari.reconnect_max_s"),
        ("[ari]\nreconnect_max_s = nan\n", "ari.reconnect_max_s"),
        ('[ari]\nurl = "ftp://127.0.0.1"\n', "ari.url"),
        ("[ami]\nport = 70000\n", "ami.port"),
        ('[http]\nlisten = "127.0.0.1:0"\n', "http.listen"),
        ('[http]\nlisten = "127.0.0.1:99999"\n', "http.listen"),
        ('[api]\nlisten = "127.0.0.1:0"\n', "api.listen"),
        ("[redis]\ntimeout_ms = 0\n", "redis.timeout_ms"),
        ('[redis]\nkey_prefix = "a{b}"\n', "redis.key_prefix"),
        ('[redis]\nkey_prefix = ""\n', "redis.key_prefix"),
        ("[calls]\nreject_cause = 0\n", "calls.reject_cause"),
        ("[calls]\nreject_cause = 128\n", "calls.reject_cause"),
        ("[calls]\nreject_announcement_max_s = nan\n", "calls.reject_announcement_max_s"),
        ("[sms]\nmax_body_bytes = 0\n", "sms.max_body_bytes"),
        ("[rules]\nmax_write_skew_s = 0\n", "rules.max_write_skew_s"),
        ("[rules]\nmax_write_skew_s = -5\n", "rules.max_write_skew_s"),
        ("[rules]\nmax_write_skew_s = nan\n", "rules.max_write_skew_s"),
        ("[rules]\nmax_write_skew_s = 86400\n", "rules.max_write_skew_s"),
        ('journal_path = ""\n', "journal_path"),
        ('previous_hash_secrets = ["a"]\n', "previous_hash_secrets[0]"),
        (
            'hash_secret = "x-0123456789abcdef"\nprevious_hash_secrets = ["x-0123456789abcdef"]',
            "previous_hash_secrets[0]",
        ),
        ('hash_secret = "change-me-to-a-long-random-string"\n', "hash_secret"),
        ('previous_hash_secrets = ["change-me-to-a-long-random-string"]\n', "previous_hash_secrets[0]"),
    ],
)
def test_out_of_range_settings_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text), {})
    message = str(raised.value)
    assert message.startswith(key + ":"), message
    assert "\n" not in message
    if "secret" in key:
        assert "change-me" not in message and "x-0123456789abcdef" not in message  # never echoed


def test_the_same_ranges_apply_to_the_environment() -> None:
    with pytest.raises(ConfigError, match=r"^agi\.command_timeout_s:"):
        load_settings(None, {"NPV_GUARD_AGI_COMMAND_TIMEOUT_S": "-1"})
    with pytest.raises(ConfigError, match=r"^hash_secret:"):
        load_settings(None, {"NPV_GUARD_HASH_SECRET": "change-me-to-a-long-random-string"})


def test_every_secret_printed_in_the_docs_is_refused() -> None:
    """The README's example secret (and any other the docs print) is known to everyone."""
    root = Path(__file__).resolve().parents[2]
    docs = [root / "README.md", *(root / "docs").rglob("*.md"), *(root / "docker").glob("*.md")]
    docs += (root / "docker").glob(".env*")
    toml = re.compile(r'(?:hash_secrets?|path_secret)\s*=\s*\[?"([^"]+)"')
    env = re.compile(r"NPV_GUARD_(?:HASH_SECRET|PREVIOUS_HASH_SECRETS|AGI_PATH_SECRET)=([\w+/=-]{8,})(?:\s|$)")
    found = set()
    for doc in docs:
        text = doc.read_text(encoding="utf-8")
        found |= set(toml.findall(text)) | set(env.findall(text))
    found = {secret for secret in found if not secret.startswith("$(")}  # a shell substitution: no literal
    assert "change-me-to-a-long-random-string" in found
    for secret in found:
        with pytest.raises(ConfigError, match="example"):
            load_settings(None, {"NPV_GUARD_HASH_SECRET": secret})


def test_write_skew_defaults_to_five_seconds() -> None:
    assert load_settings(None, {}).rules.max_write_skew_s == 5.0
    assert load_settings(None, {"NPV_GUARD_RULES_MAX_WRITE_SKEW_S": "30"}).rules.max_write_skew_s == 30.0


def test_a_config_file_holding_a_secret_readable_by_others_is_warned_about(tmp_path: Path) -> None:
    path = write(tmp_path, 'hash_secret = "a-real-secret-0123456789"\n[ari]\npassword = "p"\n')
    Path(path).chmod(0o644)
    [warning] = file_warnings(load_settings(path, {}))
    assert "hash_secret, ari.password" in warning and "0644" in warning and "a-real-secret" not in warning
    Path(path).chmod(0o600)
    assert file_warnings(load_settings(path, {})) == []
    plain = write(tmp_path, "[redis]\ntimeout_ms = 300\n")
    Path(plain).chmod(0o644)
    assert file_warnings(load_settings(plain, {})) == []  # no secret in it: nothing to protect


def test_the_law_of_2026_settings_have_conservative_defaults() -> None:
    policy = load_settings(None, {}).policy()
    assert policy.consent_max_age_days == 365 and policy.consent_proof_days == 1096
    assert policy.callback_working_days == 5 and policy.out_of_hours_slot_only is True
    assert policy.consent_exempt_sectors == frozenset({"press"})
    assert policy.sector_bans["home_adaptation"] == SectorBan(voice=date(2026, 8, 11), sms=date(2025, 7, 2))
    assert policy.sector_bans["energy_renovation"] == SectorBan(voice=date(2020, 7, 26), sms=date(2025, 7, 2))


def test_sector_bans_from_a_file_and_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "guard.toml"
    config.write_text(
        '[rules]\nbanned_sectors = ["home_adaptation"]\nout_of_hours_slot_only = false\n'
        '[rules.sector_bans]\nhome_adaptation = {voice = "2027-01-01"}\n',
        encoding="utf-8",
    )
    policy = load_settings(str(config), {}).policy()
    assert policy.sector_bans == {"home_adaptation": SectorBan(voice=date(2027, 1, 1), sms=None)}
    assert policy.out_of_hours_slot_only is False
    env = {
        "NPV_GUARD_RULES_SECTOR_BANS": '{"solar": {"sms": "2025-01-01"}}',
        "NPV_GUARD_RULES_CONSENT_MAX_AGE_DAYS": "200",
    }
    from_env = load_settings(str(config), env).policy()
    assert from_env.sector_bans == {"solar": SectorBan(voice=None, sms=date(2025, 1, 1))}
    assert from_env.consent_max_age_days == 200


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"NPV_GUARD_RULES_SECTOR_BANS": '{"a": {"fax": "2025-01-01"}}'}, "rules.sector_bans.a"),
        ({"NPV_GUARD_RULES_SECTOR_BANS": '{"a": {"sms": "soon"}}'}, "rules.sector_bans.a.sms"),
        ({"NPV_GUARD_RULES_SECTOR_BANS": '{"a": 3}'}, "rules.sector_bans"),
        ({"NPV_GUARD_RULES_CONSENT_MAX_AGE_DAYS": "0"}, "rules.consent_max_age_days"),
        ({"NPV_GUARD_RULES_CONSENT_PROOF_DAYS": "365"}, "rules.consent_proof_days"),
        ({"NPV_GUARD_RULES_CALLBACK_REQUEST_WORKING_DAYS": "0"}, "rules.callback_request_working_days"),
        ({"NPV_GUARD_RULES_CONSENT_EXEMPT_SECTORS": "press,bad sector"}, "rules.consent_exempt_sectors"),
    ],
)
def test_bad_law_settings_name_their_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=f"^{key}"):
        load_settings(None, env)


def test_each_section_names_its_secret_and_url_keys() -> None:
    # Declared by the sections (SECRET_FIELDS, URL_FIELDS): the same keys as before they moved.
    secrets = ["agi.path_secret", "ami.secret", "ari.password", "hash_secret", "previous_hash_secrets"]
    secrets.append("redis.sentinel_password")  # added with Redis Sentinel
    assert sorted(config.SECRET_KEYS) == secrets
    assert sorted(config.URL_KEYS) == ["ari.url", "redis.url"]
    assert sorted(config._SECRET_KEYS) == sorted(
        [("hash_secret",), ("previous_hash_secrets",), ("ari", "password"), ("ami", "secret"),
         ("agi", "path_secret"), ("redis", "sentinel_password"), ("redis", "url")]
    )  # fmt: skip


def test_a_redis_url_is_a_secret_of_the_file_only_with_credentials(tmp_path: Path) -> None:
    for url, warned in (("redis://:pw@127.0.0.1:6379/0", True), ("redis://127.0.0.1:6379/0", False)):
        path = tmp_path / "guard.toml"
        path.write_text(f'[redis]\nurl = "{url}"\n', encoding="utf-8")
        path.chmod(0o644)
        warnings = file_warnings(load_settings(str(path), {}))
        assert bool(warnings) is warned and all("redis.url" in w for w in warnings)


def test_one_wording_for_the_kind_of_a_value() -> None:
    kinds = [None, True, 3, 2.5, "x", [1], {"a": 1}]
    assert [config.json_kind(v) for v in kinds] == [
        "null", "a boolean", "a number", "a number", "a string", "an array", "an object"
    ]  # fmt: skip
    assert [config.json_kind(v, toml=True) for v in kinds[-2:]] == ["a list", "a table"]


# --- Redis Sentinel -------------------------------------------------------------------------------


def test_sentinels_from_the_file_and_the_environment(tmp_path: Path) -> None:
    text = '[redis]\nsentinels = ["127.0.0.1:26379", "[::1]:26380"]\nsentinel_master = "npv"\nwait_replicas = 1\n'
    redis = load_settings(write(tmp_path, text), {}).redis
    assert redis.sentinel_addresses() == [("127.0.0.1", 26379), ("::1", 26380)]
    assert (redis.sentinel_master, redis.wait_replicas) == ("npv", 1)
    assert redis.where() == "master 'npv' through the sentinels 127.0.0.1:26379, [::1]:26380"
    env = {"NPV_GUARD_REDIS_SENTINELS": "127.0.0.1:1,127.0.0.1:2", "NPV_GUARD_REDIS_SENTINEL_MASTER": "m"}
    assert load_settings(None, env).redis.sentinel_addresses() == [("127.0.0.1", 1), ("127.0.0.1", 2)]


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"NPV_GUARD_REDIS_SENTINELS": "127.0.0.1"}, r"^redis\.sentinels\[0\]: expected host:port, got '127\.0\.0\.1'"),
        ({"NPV_GUARD_REDIS_SENTINELS": "h:99999", "NPV_GUARD_REDIS_SENTINEL_MASTER": "m"}, r"^redis\.sentinels\[0\]"),
        ({"NPV_GUARD_REDIS_SENTINELS": "h:1"}, r"^redis\.sentinel_master: expected the master's name"),
        ({"NPV_GUARD_REDIS_SENTINEL_MASTER": "m"}, r"^redis\.sentinel_master: set, but redis\.sentinels lists no"),
        ({"NPV_GUARD_REDIS_SENTINELS": "h:1", "NPV_GUARD_REDIS_SENTINEL_MASTER": "m", "NPV_GUARD_REDIS_CLUSTER": "1"},
         r"^redis\.sentinels: a Redis Cluster fails over by itself"),
        ({"NPV_GUARD_REDIS_SENTINELS": "h:1", "NPV_GUARD_REDIS_SENTINEL_MASTER": "m",
          "NPV_GUARD_REDIS_URL": "unix:///run/redis.sock"}, r"^redis\.url: a unix:// socket cannot be used"),
        ({"NPV_GUARD_REDIS_WAIT_REPLICAS": "17"}, r"^redis\.wait_replicas: expected 0-16, got 17"),
    ],
)  # fmt: skip
def test_sentinel_settings_are_checked(env: dict[str, str], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        load_settings(None, env)


def test_the_sentinel_password_is_a_secret(tmp_path: Path) -> None:
    path = write(tmp_path, '[redis]\nsentinel_password = "pa55word-of-the-sentinels"\n')
    Path(path).chmod(0o644)
    assert "redis.sentinel_password" in file_warnings(load_settings(path, {}))[0]
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, "[redis]\nsentinel_password = 12\n"), {})
    assert "12" not in str(raised.value) and "value not shown" in str(raised.value)
