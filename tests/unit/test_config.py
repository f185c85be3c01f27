"""Settings: TOML file, NPV_GUARD_* overrides, secret files, one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from npv_guard.config import ConfigError, load_settings


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
        ("[ami]\nsecret = [\"ami-s3cret\"]\n", {}, "ami-s3cret"),
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

