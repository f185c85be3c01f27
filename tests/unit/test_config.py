"""Settings: TOML file, NPV_GUARD_* overrides, secret files, one-line errors naming the key."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from npv_guard.config import ConfigError, load_settings
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
