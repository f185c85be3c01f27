"""schemathesis against the served /v1/openapi.json, with a valid bearer token: whatever it sends,
valid or not, the server never answers 5xx, and every answer matches the document (status code,
content type, headers, body schema); what the document calls invalid is refused with a 4xx.

schemathesis's own pytest loader (`from_fixture`) breaks on pytest 9, so each operation's
strategy is driven with hypothesis directly: one test per operation and generation mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.openapi import from_url
from schemathesis.schemas import BaseSchema

from npv_guard.api.openapi import document
from tests.support.api_server import ApiServer
from tests.support.redis_servers import RedisServer

pytestmark = pytest.mark.redis

# Small and derandomized: the whole module runs in well under 30 s on a 2-core machine.
MAX_EXAMPLES = 75
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]
# Every operation of the document; those without any input have no invalid variant to send.
OPERATIONS = [
    (method.upper(), path, bool(spec.get("requestBody") or spec.get("parameters")))
    for path, item in document()["paths"].items()
    for method, spec in item.items()
]
CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path, has_input in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if has_input or mode is GenerationMode.POSITIVE
]


# Random strings rarely make a number or an instant: half the time, a field the case already has
# takes a realistic value, so valid requests also reach the 200 answers and their schemas.
REALISTIC = {
    "caller": ["0162000001", "+33 1 62 00 00 02", "0612345678"],
    "callee": ["0612345678", "+33 6 12 34 56 79", "0596 12 34 56", "0800 12 34 56"],
    "professional": ["acme"],
    "at": ["2026-12-01T10:30:00", "2026-06-02T12:00:00Z", "2026-12-05T21:00:00+01:00"],
}


def cases(operation: Any, mode: GenerationMode) -> st.SearchStrategy[Case[Any]]:
    generated = operation.as_strategy(generation_mode=mode)
    if mode is not GenerationMode.POSITIVE:
        return generated  # type: ignore[no-any-return]

    @st.composite
    def realistic(draw: st.DrawFn) -> Case[Any]:
        case: Case[Any] = draw(generated)
        fields = case.body if isinstance(case.body, dict) else case.query
        for name, values in REALISTIC.items():
            if isinstance(fields, dict) and name in fields and draw(st.booleans()):
                fields[name] = draw(st.sampled_from(values))
        return case

    return realistic()


@pytest.fixture(scope="module")
def served(redis_server: RedisServer) -> Iterator[ApiServer]:
    server = ApiServer(redis_server.url, key_prefix="openapi-conformance").start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def served_schema(served: ApiServer) -> BaseSchema:
    config = schemathesis.Config.from_dict({"base-url": served.base_url})
    return from_url(f"{served.base_url}/v1/openapi.json", config=config)


def test_the_served_document_is_the_module_document(served: ApiServer) -> None:
    status, _, served_document = served.request("GET", "/v1/openapi.json", professional=None)
    assert status == 200 and served_document == document()


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_operation_conforms(
    served: ApiServer, served_schema: BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    operation = served_schema.find_operation_by_label(f"{method} {path}")
    assert operation is not None
    headers = {"Authorization": f"Bearer {served.tokens['acme']}"}

    @given(case=cases(operation, mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def conforms(case: Case[Any]) -> None:
        case.call_and_validate(base_url=served.base_url, headers=headers, checks=CHECKS)

    conforms()
