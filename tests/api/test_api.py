"""`npv-guard serve` as a dialer uses it: a real process on loopback, a real redis-server."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest

from npv_guard.api.app import CHECK_FIELDS, ERRORS
from tests.support.api_server import ApiServer
from tests.support.process import EXE
from tests.support.redis_servers import RedisServer

pytestmark = pytest.mark.redis

ACME_NPV = "01 62 00 00 01"
BETA_NPV = "+33162000004"
TUESDAY = "2026-12-01T10:30:00"  # Paris wall time, opt-in regime in force; the server's clock starts there
LATER = "2026-12-01T11:30:00"  # after every fact the module's tests record at the server's clock
BEFORE_OPT_IN = "2026-06-02T10:30:00"  # a Tuesday before 2026-08-11: no consent needed
VERDICT_KEYS = {
    "verdict", "reasons", "caller", "callee", "caller_kind", "professional", "territory", "timezone",
    "local_time", "at", "regime", "not_evaluated", "next_allowed_at",
}  # fmt: skip


def check(api: ApiServer, callee: str, **fields: Any) -> tuple[int, dict[str, str], Any]:
    """A check on TUESDAY; a recorded one at the server's clock (which started on TUESDAY)."""
    body = {"caller": ACME_NPV, "callee": callee, "at": TUESDAY, **fields}
    if fields.get("record") and "at" not in fields:
        del body["at"]  # an attempt is dated by the server's clock
    return api.request("POST", "/v1/check", body)


def codes(answer: dict[str, Any]) -> set[str]:
    return {reason["code"] for reason in answer["reasons"]}


def grant(api: ApiServer, callee: str, **fields: Any) -> dict[str, Any]:
    status, _, answer = api.request("POST", "/v1/consents", {"callee": callee, "at": "2026-11-02T12:00:00", **fields})
    assert status == 200, answer
    return dict(answer)


def cli(api: ApiServer, *args: str) -> subprocess.CompletedProcess[str]:
    """The command line against the same config (Redis, secret, prefix) as the server."""
    return subprocess.run([EXE, *args], env=api.env(), capture_output=True, text=True, timeout=30, check=False)


# --- POST /v1/check ------------------------------------------------------------------------------


def test_check_allows_with_consent_and_answers_the_cli_verdict(api: ApiServer, consumer: str) -> None:
    grant(api, consumer)
    status, headers, answer = check(api, consumer)
    assert status == 200
    assert answer["verdict"] == "allow" and answer["reasons"] == []
    assert set(answer) == VERDICT_KEYS  # no `recorded` without record
    assert answer["professional"] == "acme" and answer["local_time"] == "2026-12-01T10:30:00+01:00"
    assert headers["x-call-id"]
    cli_answer = cli(api, "check", "--caller", ACME_NPV, "--callee", consumer, "--at", TUESDAY, "--json")
    assert json.loads(cli_answer.stdout) == answer


def test_check_rejection_is_http_200_with_reasons(api: ApiServer, consumer: str) -> None:
    status, _, answer = check(api, consumer)
    assert status == 200
    assert answer["verdict"] == "reject"
    assert codes(answer) == {"NO_CONSENT"}
    assert answer["next_allowed_at"] is None  # a missing consent does not expire by itself


def test_offline_check_is_exactly_check_json(api: ApiServer, consumer: str) -> None:
    body = {"caller": "0612345678", "callee": consumer, "at": "2026-12-06T21:00:00", "offline": True}
    status, _, answer = api.request("POST", "/v1/check", body)
    assert status == 200
    assert codes(answer) == {"CALLER_NOT_NPV", "WEEKEND", "OUTSIDE_HOURS"}
    assert answer["not_evaluated"] == ["frequency_cap", "refusal_block", "consent"]
    result = cli(
        api, "check", "--caller", "0612345678", "--callee", consumer, "--at", "2026-12-06T21:00:00",
        "--professional", "acme", "--offline", "--json",
    )  # fmt: skip
    assert json.loads(result.stdout) == answer


def test_record_counts_attempts_until_the_frequency_cap(api: ApiServer, consumer: str) -> None:
    grant(api, consumer)
    call_ids = []
    for _ in range(4):
        status, headers, answer = check(api, consumer, record=True)
        assert status == 200 and answer["verdict"] == "allow" and answer["recorded"] is True, answer
        call_ids.append(headers["x-call-id"])
    status, _, answer = check(api, consumer, record=True)
    assert status == 200
    assert answer["verdict"] == "reject" and answer["recorded"] is False
    assert codes(answer) == {"FREQUENCY_CAP"}
    assert set(answer["next_allowed_at"]) == {"utc", "local"}
    assert answer["next_allowed_at"]["utc"] > "2026-12-01T09:30:00Z"
    _, _, history = api.request("GET", f"/v1/history?callee={consumer}")
    assert [attempt["call_id"] for attempt in history["attempts"]] == call_ids


def test_check_without_record_counts_nothing(api: ApiServer, consumer: str) -> None:
    grant(api, consumer)
    for _ in range(6):
        assert check(api, consumer)[2]["verdict"] == "allow"
    assert api.request("GET", f"/v1/history?callee={consumer}")[2]["attempts"] == []


def test_unparseable_numbers_are_a_reject_verdict(api: ApiServer) -> None:
    status, _, answer = api.request("POST", "/v1/check", {"caller": "not a number", "callee": "???", "at": TUESDAY})
    assert status == 200
    assert answer["verdict"] == "reject"
    assert {"CALLER_INVALID", "CONSUMER_INVALID"} <= codes(answer)


def test_token_cannot_use_another_professionals_npv(api: ApiServer, consumer: str) -> None:
    status, _, answer = api.request("POST", "/v1/check", {"caller": BETA_NPV, "callee": consumer, "at": TUESDAY})
    assert status == 200
    assert answer["verdict"] == "reject" and "CALLER_NOT_ASSIGNED" in codes(answer)
    assert answer["professional"] == "acme"


def test_check_decisions_are_audited_without_the_number(api: ApiServer, consumer: str) -> None:
    _, headers, _ = check(api, consumer)
    lines = [line for line in api.audit("decision") if line["call_id"] == headers["x-call-id"]]
    assert len(lines) == 1
    assert lines[0]["mode"] == "api" and lines[0]["reasons"] == ["NO_CONSENT"]
    api.request("GET", f"/v1/history?callee={consumer}")
    e164 = "+33" + consumer[1:]
    for text in (api.audit_path.read_text(), api.log()):
        assert consumer not in text and e164 not in text


# --- refusals and consents -----------------------------------------------------------------------


def test_refusal_then_check_gives_the_refusal_reasons(api: ApiServer, consumer: str) -> None:
    grant(api, consumer)
    status, _, refusal = api.request("POST", "/v1/refusals", {"callee": consumer})
    assert status == 200
    assert refusal["at"].startswith("2026-12-01T09:")  # the server's clock
    assert refusal == {
        "recorded": True, "journaled": False, "professional": "acme", "at": refusal["at"],
        "source": "operator", "blocked_until": refusal["blocked_until"], "withdraws_consent": True,
    }  # fmt: skip
    assert refusal["blocked_until"].startswith("2027-01-")
    answer = check(api, consumer, at=LATER)[2]
    assert codes(answer) == {"REFUSAL_BLOCK", "CONSENT_WITHDRAWN"}
    history = api.request("GET", f"/v1/history?callee={consumer}")[2]
    assert [r["source"] for r in history["refusals"]] == ["operator"]
    audited = [line for line in api.audit("refusal") if line["at"].startswith(refusal["at"][:19])]
    assert audited and audited[-1]["mode"] == "api" and audited[-1]["recorded"] is True


def test_refusal_source_is_kept(api: ApiServer, consumer: str) -> None:
    status, _, refusal = api.request("POST", "/v1/refusals", {"callee": consumer, "source": "sms"})
    assert status == 200 and refusal["source"] == "sms"


def test_consent_grant_and_withdraw_change_the_verdict(api: ApiServer, consumer: str) -> None:
    assert codes(check(api, consumer)[2]) == {"NO_CONSENT"}
    granted = grant(api, consumer, basis="contract", proof="signed 2026-11-02")
    assert granted == {
        "recorded": True, "professional": "acme", "granted": True, "basis": "contract",
        "at": "2026-11-02T11:00:00Z", "outside_hours": False, "until": None, "slot": None,
    }  # fmt: skip
    assert check(api, consumer)[2]["verdict"] == "allow"
    status, _, withdrawn = api.request("DELETE", "/v1/consents", {"callee": consumer, "proof": "letter"})
    assert status == 200 and withdrawn["granted"] is False and withdrawn["basis"] is None
    assert codes(check(api, consumer, at=LATER)[2]) == {"CONSENT_WITHDRAWN"}
    # Before the opt-in regime no consent was needed at all.
    assert check(api, consumer, at=BEFORE_OPT_IN)[2]["verdict"] == "allow"


def test_outside_hours_consent(api: ApiServer, consumer: str) -> None:
    # Law change: since 2026-08-11 a blanket out-of-hours consent is stored but no longer lifts
    # the hours (it used to be allowed here); only an agreed callback slot does.
    assert codes(check(api, consumer, at="2026-12-01T21:00:00")[2]) == {"OUTSIDE_HOURS", "NO_CONSENT"}
    grant(api, consumer, outside_hours=True)
    blanket = check(api, consumer, at="2026-12-01T21:00:00")[2]
    assert codes(blanket) == {"OUTSIDE_HOURS"} and "no longer lifts" in blanket["reasons"][0]["message"]
    granted = grant(api, consumer, slot="2026-12-01T21:00:00/2026-12-01T21:15:00")
    assert granted["slot"] == {"start": "2026-12-01T20:00:00Z", "end": "2026-12-01T20:15:00Z"}
    assert check(api, consumer, at="2026-12-01T21:00:00")[2]["verdict"] == "allow"
    assert check(api, consumer, at="2026-12-01T21:14:59")[2]["verdict"] == "allow"
    assert codes(check(api, consumer, at="2026-12-01T21:15:00")[2]) == {"OUTSIDE_HOURS"}


def test_contract_end_and_callback_request(api: ApiServer, consumer: str) -> None:
    granted = grant(api, consumer, basis="contract", until="2026-12-01T11:00:00")
    assert granted["until"] == "2026-12-01T10:00:00Z"
    assert check(api, consumer, at="2026-12-01T10:59:59", sector="energy_renovation")[2]["verdict"] == "allow"
    assert codes(check(api, consumer, at="2026-12-01T11:00:00", sector="energy_renovation")[2]) == {
        "NO_CONSENT", "SECTOR_BANNED",
    }  # fmt: skip
    grant(api, consumer, basis="callback_request", at="2026-12-01T10:30:00")  # the server's clock
    assert check(api, consumer, at="2026-12-07T11:00:00", sector="energy_renovation")[2]["verdict"] == "allow"
    assert codes(check(api, consumer, at="2026-12-08T11:00:00")[2]) == {"NO_CONSENT"}


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"until": "2027-01-01T00:00:00"}, "contract basis only"),
        ({"basis": "contract", "until": "2026-11-01T00:00:00"}, "not after it is recorded"),
        ({"slot": "2026-12-01T21:00:00"}, "START/END"),
        ({"slot": "2026-12-01T21:00:00/2026-12-01T20:00:00"}, "ends before it starts"),
        ({"slot": 3}, "expected a string"),
    ],
)
def test_bad_grant_terms_are_400(api: ApiServer, consumer: str, fields: dict[str, Any], problem: str) -> None:
    body = {"callee": consumer, "at": "2026-11-02T12:00:00", **fields}
    status, _, answer = api.request("POST", "/v1/consents", body)
    assert status == 400 and answer["error"]["code"] == "BAD_REQUEST" and problem in answer["error"]["message"]


def test_history_is_exactly_history_json(api: ApiServer, consumer: str) -> None:
    grant(api, consumer, proof="web form")
    check(api, consumer, record=True)
    status, _, answer = api.request("GET", f"/v1/history?callee={consumer}&professional=acme")
    assert status == 200
    assert len(answer["attempts"]) == 1 and answer["consents"][0]["proof"] == "web form"
    result = cli(api, "history", "--professional", "acme", "--callee", consumer, "--json")
    from_cli = json.loads(result.stdout)
    # The TTLs are read a moment apart: they may cross a second boundary between the two reads.
    ttl_cli, ttl_api = from_cli.pop("ttl_seconds"), answer.pop("ttl_seconds")
    assert from_cli == answer
    assert ttl_cli.keys() == ttl_api.keys() and all(abs(ttl_cli[k] - ttl_api[k]) <= 1 for k in ttl_api)


# --- authentication and scoping ------------------------------------------------------------------


def _calls(consumer: str, professional: str | None) -> Iterator[tuple[str, str, dict[str, Any] | None]]:
    named = {"professional": professional} if professional else {}
    yield "POST", "/v1/check", {"caller": BETA_NPV, "callee": consumer, "at": TUESDAY, **named}
    yield "POST", "/v1/refusals", {"callee": consumer, **named}
    yield "POST", "/v1/consents", {"callee": consumer, **named}
    yield "DELETE", "/v1/consents", {"callee": consumer, **named}
    query = f"&professional={professional}" if professional else ""
    yield "GET", f"/v1/history?callee={consumer}{query}", None


def test_a_token_cannot_act_for_another_professional(api: ApiServer, consumer: str) -> None:
    for method, path, body in _calls(consumer, "beta"):
        status, _, answer = api.request(method, path, body, professional="acme")
        assert status == 403, (method, path, answer)
        assert answer["error"]["code"] == "FORBIDDEN_PROFESSIONAL"
    # Nothing was written for beta (nor for acme).
    history = api.request("GET", f"/v1/history?callee={consumer}", professional="beta")[2]
    assert history["refusals"] == [] and history["consents"] == []


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer npvg_not-a-token", "Basic YWNtZTpzZWNyZXQ=", "garbage"],
)
def test_missing_or_unknown_token_is_401_on_every_endpoint(
    api: ApiServer, consumer: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for method, path, body in _calls(consumer, None):
        status, answer_headers, answer = api.request(method, path, body, professional=None, headers=headers)
        assert status == 401, (method, path)
        assert answer_headers["www-authenticate"] == "Bearer"
        assert answer["error"]["code"] == "UNAUTHORIZED"


def test_the_right_token_acts_for_its_professional(api: ApiServer, consumer: str) -> None:
    for method, path, body in _calls(consumer, "beta"):
        status, _, answer = api.request(method, path, body, professional="beta")
        assert status == 200, (method, path, answer)
        assert answer["professional"] == "beta"
    history = api.request("GET", f"/v1/history?callee={consumer}", professional="beta")[2]
    assert len(history["refusals"]) == 1
    # The refusal's own withdrawal (opt-in), the grant and the withdrawal.
    assert sorted(c["granted"] for c in history["consents"]) == [False, False, True]


def test_openapi_and_health_need_no_token(api: ApiServer) -> None:
    status, _, document = api.request("GET", "/v1/openapi.json", professional=None)
    assert status == 200 and document["openapi"].startswith("3.1")
    assert set(document["components"]["schemas"]["CheckRequest"]["properties"]) == CHECK_FIELDS
    assert set(document["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]) == set(
        ERRORS
    )
    deadline = time.monotonic() + 10
    while (health := api.request("GET", "/healthz", professional=None))[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert health[0] == 200 and health[2] == {"ready": True, "redis": True}


# --- errors --------------------------------------------------------------------------------------


def error_of(answer: tuple[int, dict[str, str], Any]) -> tuple[int, str, str]:
    status, headers, body = answer
    assert headers["content-type"].startswith("application/json"), body
    return status, body["error"]["code"], body["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"caller": 162000001, "callee": "0612345678"}, "caller"),
        ({"caller": ACME_NPV, "callee": None}, "callee"),
        ({"caller": ACME_NPV}, "callee"),
        ({"caller": ACME_NPV, "callee": "0612345678", "record": "yes"}, "record"),
        ({"caller": ACME_NPV, "callee": "0612345678", "automated": 1}, "automated"),
        ({"caller": ACME_NPV, "callee": "0612345678", "at": "tomorrow"}, "at"),
        ({"caller": ACME_NPV, "callee": "0612345678", "at": "9999-12-31T23:59:59-23:59"}, "at"),
        ({"caller": ACME_NPV, "callee": "0612345678", "at": 20261201}, "at"),
        ({"caller": ACME_NPV, "callee": "0612345678", "sector": ["energy"]}, "sector"),
        ({"caller": ACME_NPV, "callee": "0612345678", "professional": 7}, "professional"),
        ({"caller": ACME_NPV, "callee": "0612345678", "recrod": True}, "recrod"),
        ({"caller": ACME_NPV, "callee": "0612345678", "record": True, "offline": True}, "offline"),
    ],
)
def test_wrong_types_are_400_naming_the_field(api: ApiServer, body: dict[str, Any], field: str) -> None:
    status, code, message = error_of(api.request("POST", "/v1/check", body))
    assert (status, code) == (400, "BAD_REQUEST")
    assert field in message


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/refusals", {"callee": "0612345678", "source": "robot"}, "source"),
        ("/v1/consents", {"callee": "0612345678", "basis": "maybe"}, "basis"),
        ("/v1/consents", {"callee": "0612345678", "outside_hours": "true"}, "outside_hours"),
        ("/v1/consents", {"number": "0612345678"}, "number"),
    ],
)
def test_other_endpoints_check_types_too(api: ApiServer, path: str, body: dict[str, Any], field: str) -> None:
    status, code, message = error_of(api.request("POST", path, body))
    assert (status, code) == (400, "BAD_REQUEST") and field in message


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "INVALID_JSON"),
        (b"", "INVALID_JSON"),
        (b"\xff\xfe\x00garbage", "INVALID_JSON"),
        (b"[" * 5000 + b"]" * 5000, "INVALID_JSON"),  # deeper than the parser's recursion limit
        (b'["caller", "callee"]', "BAD_REQUEST"),
        (b"null", "BAD_REQUEST"),
        (b'{"caller": "\\ud800", "callee": "0612345678"}', "BAD_REQUEST"),  # a lone surrogate
    ],
)
def test_bad_json_is_400_json(api: ApiServer, raw: bytes, code: str) -> None:
    status, got, _ = error_of(api.request("POST", "/v1/check", raw=raw))
    assert (status, got) == (400, code)


def test_body_too_big_is_413_json(api: ApiServer) -> None:
    big = {"caller": ACME_NPV, "callee": "0612345678", "sector": "x" * 20_000}
    assert error_of(api.request("POST", "/v1/check", big))[:2] == (413, "PAYLOAD_TOO_LARGE")


def test_chunked_body_too_big_is_413_json(api: ApiServer) -> None:
    # No Content-Length: the limit must hold while reading.
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    chunks = [b'{"caller": "0162000001", "callee": "0612345678", "sector": "'] + [b"x" * 1024] * 20 + [b'"}']
    connection.request(
        "POST", "/v1/check", body=iter(chunks), encode_chunked=True,
        headers={"Authorization": f"Bearer {api.tokens['acme']}", "Content-Type": "application/json"},
    )  # fmt: skip
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    assert response.status == 413 and body["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_wrong_content_type_is_415(api: ApiServer) -> None:
    answer = api.request(
        "POST", "/v1/check", raw=b"caller=0162000001", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert error_of(answer)[:2] == (415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize("path", ["/", "/v1/checks", "/v1/history/0612345678", "/v2/check"])
def test_unknown_path_is_404_json(api: ApiServer, path: str) -> None:
    assert error_of(api.request("GET", path))[:2] == (404, "NOT_FOUND")


def test_wrong_method_is_405_json(api: ApiServer) -> None:
    status, headers, body = api.request("GET", "/v1/check")
    assert status == 405 and body["error"]["code"] == "METHOD_NOT_ALLOWED" and headers["allow"] == "POST"


def test_number_that_cannot_be_placed_is_400_invalid_number(api: ApiServer) -> None:
    for method, path, body in (
        ("POST", "/v1/refusals", {"callee": "+4420794600"}),
        ("POST", "/v1/consents", {"callee": "0800123456"}),
        ("GET", "/v1/history?callee=garbage", None),
    ):
        assert error_of(api.request(method, path, body))[:2] == (400, "INVALID_NUMBER"), path


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/check", {"caller": ACME_NPV, "record": True, "at": "2026-12-01T10:00:00"}),  # back-dated
        ("POST", "/v1/check", {"caller": ACME_NPV, "record": True, "at": "2026-12-02T10:30:00"}),
        ("POST", "/v1/refusals", {"at": "2026-12-02T10:30:00"}),  # would expire before it counts
        ("POST", "/v1/refusals", {"at": "2026-11-30T10:30:00"}),
        ("POST", "/v1/consents", {"at": "2026-12-25T10:00:00"}),  # a grant from the future
        ("DELETE", "/v1/consents", {"at": "2026-11-20T12:00:00"}),
        ("DELETE", "/v1/consents", {"at": "2026-12-25T12:00:00"}),
    ],
)
def test_facts_dated_away_from_the_servers_clock_are_400(
    api: ApiServer, consumer: str, method: str, path: str, body: dict[str, Any]
) -> None:
    grant(api, consumer)
    before = api.request("GET", f"/v1/history?callee={consumer}")[2]
    status, code, message = error_of(api.request(method, path, {"callee": consumer, **body}))
    assert (status, code) == (400, "INSTANT_OUT_OF_RANGE") and "guard's clock" in message
    assert api.request("GET", f"/v1/history?callee={consumer}")[2] == {**before, "ttl_seconds": ANY}


def test_a_past_at_stays_allowed_for_reads_and_grants(api: ApiServer, consumer: str) -> None:
    # A consent collected in January (a consent lasts a year: docs/rules.md), recorded now.
    assert grant(api, consumer, at="2026-01-05T10:00:00")["at"] == "2026-01-05T09:00:00Z"
    status, _, answer = check(api, consumer, at="2026-11-03T10:30:00")
    assert status == 200 and answer["verdict"] == "allow"


def test_history_reads_the_previous_secrets(redis_server: RedisServer, consumer: str) -> None:
    """After a rotation the API's history shows what the decision counts: the refusal stored
    under the old secret, as `npv-guard history` does."""
    old = "old-api-secret-0123456789"
    server = ApiServer(redis_server.url, key_prefix=f"api-{uuid.uuid4().hex[:8]}", now=TUESDAY)
    server.config.write_text(f"previous_hash_secrets = [{json.dumps(old)}]\n" + server.config.read_text())
    try:
        under_old = {**server.env(), "NPV_GUARD_HASH_SECRET": old, "NPV_GUARD_PREVIOUS_HASH_SECRETS": ""}
        pair = ["--professional", "acme", "--callee", consumer]
        recorded = subprocess.run([EXE, "refusal", "record", *pair, "--source", "agent", "--json"], env=under_old,
                                  capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
        assert recorded.returncode == 0, recorded.stderr
        server.start()
        status, _, history = server.request("GET", f"/v1/history?callee={consumer}")
        assert status == 200
        assert [(r["at"], r["source"]) for r in history["refusals"]] == [(json.loads(recorded.stdout)["at"], "agent")]
        from_cli = json.loads(cli(server, "history", *pair, "--json").stdout)
        assert from_cli["refusals"] == history["refusals"] and from_cli["consents"] == history["consents"]
    finally:
        server.cleanup()


def test_history_query_errors(api: ApiServer) -> None:
    assert error_of(api.request("GET", "/v1/history"))[:2] == (400, "BAD_REQUEST")
    assert error_of(api.request("GET", "/v1/history?callee=0612345678&callee=0612345679"))[:2] == (400, "BAD_REQUEST")
    assert error_of(api.request("GET", "/v1/history?callee=0612345678&at=now"))[:2] == (400, "BAD_REQUEST")


# --- the commands around the API -----------------------------------------------------------------


def test_api_token_prints_a_token_and_its_digest(api: ApiServer) -> None:
    result = cli(api, "api-token", "--professional", "acme", "--json")
    assert result.returncode == 0, result.stderr
    minted = json.loads(result.stdout)
    assert minted["professional"] == "acme"
    assert hashlib.sha256(minted["token"].encode()).hexdigest() == minted["api_token_sha256"]
    assert minted["token"] != json.loads(cli(api, "api-token", "--professional", "acme", "--json").stdout)["token"]
    text = cli(api, "api-token", "--professional", "acme").stdout
    assert f'api_token_sha256 = ["{minted["api_token_sha256"]}"]' not in text  # a fresh token each time
    assert "api_token_sha256 = [" in text
    unknown = cli(api, "api-token", "--professional", "nobody")
    assert unknown.returncode == 2 and "nobody" in unknown.stderr


def test_serve_refuses_to_start_without_any_token(tmp_path: Path) -> None:
    config = tmp_path / "guard.toml"
    config.write_text('hash_secret = "api-test-secret-0123456789"\n[[professionals]]\nid = "acme"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPV_GUARD_")}
    result = subprocess.run(
        [EXE, "serve", "--config", str(config), "--port", "1"], env=env, capture_output=True, text=True, timeout=30,
        check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "api_token_sha256" in result.stderr and "api-token" in result.stderr


def test_campaign_and_lead_go_into_the_audit_line_and_the_attempt(api: ApiServer, consumer: str) -> None:
    grant(api, consumer)
    status, headers, answer = check(api, consumer, record=True, campaign="spring-26", lead="L-1")
    assert status == 200 and answer["recorded"] is True, answer
    (line,) = [line for line in api.audit("decision") if line["call_id"] == headers["x-call-id"]]
    assert (line["campaign"], line["lead"]) == ("spring-26", "L-1")
    (attempt,) = api.request("GET", f"/v1/history?callee={consumer}")[2]["attempts"]
    assert attempt == {**attempt, "call_id": headers["x-call-id"], "campaign": "spring-26", "lead": "L-1"}
    consent = api.audit("consent")[-1]
    assert consent["proof_sha256"] == hashlib.sha256(b"").hexdigest() and consent["granted"] is True


@pytest.mark.parametrize("bad", [{"campaign": "spring 26"}, {"lead": "x" * 65}, {"campaign": ""}, {"lead": 7}])
def test_a_malformed_campaign_or_lead_is_a_400_naming_it(api: ApiServer, consumer: str, bad: dict[str, Any]) -> None:
    before = len(api.audit("decision"))
    status, _, answer = check(api, consumer, record=True, **bad)
    assert status == 400 and answer["error"]["code"] == "BAD_REQUEST"
    assert answer["error"]["message"].startswith(next(iter(bad)))
    assert len(api.audit("decision")) == before  # nothing decided, nothing recorded


def test_a_lead_id_holding_the_consumers_number_is_a_400(api: ApiServer, consumer: str) -> None:
    status, _, answer = check(api, consumer, lead=f"L{consumer}")
    assert status == 400 and answer["error"]["message"] == "lead: it holds the consumer's number"
