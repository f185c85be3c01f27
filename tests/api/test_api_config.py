"""The API's settings: the [api] section, token digests in [[professionals]], and the tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from npv_guard.api.auth import TokenBook, mint_token, token_digest
from npv_guard.config import ConfigError, load_settings

DIGEST = token_digest("npvg_example")


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "guard.toml"
    path.write_text(text)
    return str(path)


def test_defaults_listen_on_loopback_8470() -> None:
    settings = load_settings(None, {})
    assert settings.api.listen == "127.0.0.1:8470"
    assert settings.api.max_body_bytes == 16384
    assert settings.api_tokens == {}


def test_digests_map_to_their_professional(tmp_path: Path) -> None:
    other = token_digest("npvg_other")
    path = write(
        tmp_path,
        f'[[professionals]]\nid = "acme"\nnpvs = ["0162000001"]\napi_token_sha256 = ["{DIGEST.upper()}", "{other}"]\n'
        '[[professionals]]\nid = "beta"\nnpvs = ["0162000004"]\n',
    )
    settings = load_settings(path, {})
    assert settings.api_tokens == {DIGEST: "acme", other: "acme"}
    assert [p.id for p in settings.professionals] == ["acme", "beta"]


def test_digests_from_the_environment() -> None:
    professionals = [{"id": "acme", "npvs": ["0162000001"], "api_token_sha256": [DIGEST]}]
    settings = load_settings(None, {"NPV_GUARD_PROFESSIONALS": json.dumps(professionals)})
    assert settings.api_tokens == {DIGEST: "acme"}


def test_api_section_and_its_environment_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, '[api]\nlisten = "127.0.0.1:9000"\nmax_body_bytes = 4096\n')
    settings = load_settings(path, {"NPV_GUARD_API_LISTEN": "127.0.0.2:9001"})
    assert settings.api.listen == "127.0.0.2:9001" and settings.api.max_body_bytes == 4096
    assert load_settings(None, {"NPV_GUARD_API_MAX_BODY_BYTES": "2048"}).api.max_body_bytes == 2048


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[[professionals]]\nid = "acme"\napi_token_sha256 = "abc"\n', "professionals[0].api_token_sha256"),
        (
            '[[professionals]]\nid = "acme"\napi_token_sha256 = ["npvg_secret-token"]\n',
            "professionals[0].api_token_sha256[0]",
        ),
        ('[[professionals]]\nid = "acme"\napi_token_sha256 = [42]\n', "professionals[0].api_token_sha256[0]"),
        (
            f'[[professionals]]\nid = "a"\napi_token_sha256 = ["{DIGEST}"]\n'
            f'[[professionals]]\nid = "b"\napi_token_sha256 = ["{DIGEST}"]\n',
            "professionals[1].api_token_sha256[0]",
        ),
        ('[[professionals]]\nid = "acme"\napi_token = ["x"]\n', "professionals[0].api_token"),
        ('[api]\nlisten = "8470"\n', "api.listen"),
        ('[api]\nlisten = "127.0.0.1:70000"\n', "api.listen"),
        ("[api]\nmax_body_bytes = 10\n", "api.max_body_bytes"),
        ('[api]\nmax_body_bytes = "big"\n', "api.max_body_bytes"),
        ("[api]\ntimeout = 3\n", "api.timeout"),
    ],
)
def test_broken_values_name_their_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as problem:
        load_settings(write(tmp_path, text), {})
    assert str(problem.value).startswith(key)
    assert "npvg_secret-token" not in str(problem.value)  # a pasted token is never echoed


def test_token_book_accepts_only_its_bearer_tokens() -> None:
    token = mint_token()
    book = TokenBook({token_digest(token): "acme"})
    assert book.professional_for(f"Bearer {token}") == "acme"
    assert book.professional_for(f"bearer   {token}  ") == "acme"
    for header in (None, "", token, f"Basic {token}", f"Bearer {token}x", "Bearer ", f"Bearer {DIGEST}"):
        assert book.professional_for(header) is None, header
    assert token.startswith("npvg_") and mint_token() != token
