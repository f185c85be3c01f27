"""No consumer number in an error answer of the API, nor in the guard's log: what the client sent
is named (the field), never echoed (the value)."""

from __future__ import annotations

import json

import pytest

from tests.support.api_server import ApiServer

pytestmark = pytest.mark.redis

NUMBER = "0612345678"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/refusals", {"callee": "0899" + NUMBER[4:]}),  # a service number: INVALID_NUMBER
        ("POST", "/v1/consents", {"callee": NUMBER + "9"}),
        ("GET", f"/v1/history?callee=+1{NUMBER}", None),
        ("POST", "/v1/check", {"caller": "0162000001", "callee": NUMBER, "at": NUMBER}),
        ("POST", "/v1/check", {"caller": "0162000001", "callee": NUMBER, "at": f"{NUMBER[6:]}-01-01"}),
        ("POST", "/v1/check", {"caller": "0162000001", "callee": NUMBER, NUMBER: True}),
        ("GET", f"/v1/history?callee={NUMBER}&{NUMBER}=1", None),
        ("GET", f"/v1/history?callee={NUMBER}&x{NUMBER}=1&x{NUMBER}=2", None),
    ],
)
def test_error_answers_echo_no_number(api: ApiServer, method: str, path: str, body: object) -> None:
    before = len(api.log())
    status, headers, answer = api.request(method, path, body)
    assert 400 <= status < 500 and headers["content-type"].startswith("application/json")
    assert set(answer) == {"error"} and answer["error"]["code"]
    assert NUMBER[6:] not in json.dumps(answer), answer
    assert NUMBER[6:] not in api.log()[before:]
