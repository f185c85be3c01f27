"""The API with Redis gone: checks fail closed, refusals are journaled and replayed, nothing is lost."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.api_server import ApiServer
from tests.support.redis_servers import RedisServer

pytestmark = pytest.mark.redis

CHECK = {"caller": "0162000001", "callee": "0612340001", "at": "2026-12-01T10:30:00"}


@pytest.fixture
def api(own_redis: RedisServer) -> Iterator[ApiServer]:
    server = ApiServer(own_redis.url, redis_timeout_ms=200, now=CHECK["at"]).start()
    yield server
    server.cleanup()


def wait_for(what: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(what)


def assert_no_address(redis: RedisServer, answer: Any) -> None:
    """An answer (or audit line) about Redis being away names neither its address nor its error text."""
    text = json.dumps(answer)
    assert str(redis.port) not in text and "127.0.0.1" not in text and "Connection refused" not in text, text


def test_redis_down_fails_closed_and_journals_refusals(api: ApiServer, own_redis: RedisServer) -> None:
    assert api.request("POST", "/v1/consents", {"callee": CHECK["callee"], "at": "2026-11-01T12:00:00"})[0] == 200
    assert api.request("POST", "/v1/check", CHECK)[2]["verdict"] == "allow"
    own_redis.kill()

    for record in (False, True):
        # A recorded attempt is dated by the server's clock (which started at CHECK's instant).
        body = {**CHECK, "record": True} if record else CHECK
        if record:
            del body["at"]
        status, _, answer = api.request("POST", "/v1/check", body)
        assert status == 200
        assert answer["verdict"] == "reject"
        assert [reason["code"] for reason in answer["reasons"]] == ["STATE_UNAVAILABLE"]
        assert_no_address(own_redis, answer)

    status, _, refusal = api.request("POST", "/v1/refusals", {"callee": CHECK["callee"]})
    assert status == 200
    assert refusal["journaled"] is True and refusal["recorded"] is True
    journal = [json.loads(line) for line in api.journal_path.read_text().splitlines()]
    assert [(entry["op"], entry["professional"]) for entry in journal] == [("refusal", "acme")]
    assert CHECK["callee"][1:] not in api.journal_path.read_text()  # the journal holds keyed hashes only

    status, _, error = api.request("POST", "/v1/consents", {"callee": "0612340002"})
    assert status == 503 and error["error"]["code"] == "STATE_UNAVAILABLE"
    assert_no_address(own_redis, error)
    status, _, error = api.request("GET", "/v1/history?callee=0612340002")
    assert status == 503 and error["error"]["code"] == "STATE_UNAVAILABLE"
    assert_no_address(own_redis, error)
    assert_no_address(own_redis, api.audit())
    wait_for(lambda: api.request("GET", "/healthz", professional=None)[0] == 503)

    own_redis.start()  # same port, empty: only the replay can bring the refusal back

    def replayed() -> dict[str, Any] | None:
        status, _, history = api.request("GET", f"/v1/history?callee={CHECK['callee']}")
        return history if status == 200 and history["refusals"] else None

    history = wait_for(replayed)
    assert [(r["at"], r["source"]) for r in history["refusals"]] == [(refusal["at"], "operator")]
    assert refusal["at"].startswith("2026-12-01T09:3")  # the server's clock
    answer = api.request("POST", "/v1/check", {**CHECK, "at": "2026-12-02T10:30:00"})[2]
    assert {reason["code"] for reason in answer["reasons"]} == {"REFUSAL_BLOCK", "CONSENT_WITHDRAWN"}
    assert api.journal_path.read_text() == ""  # replayed, then compacted: nothing pending
    audited = api.audit("refusal")
    assert audited[-1]["journaled"] is True and audited[-1]["mode"] == "api"


def test_sigterm_stops_cleanly(api: ApiServer) -> None:
    assert api.request("POST", "/v1/check", CHECK)[0] == 200
    assert api.stop() == 0
    assert '"stopped"' in api.log()
