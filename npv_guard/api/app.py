"""The HTTP pre-check API: handlers that translate JSON to the service and back.

Every answer is JSON; every error is `{"error": {"code": CODE, "message": TEXT}}` with a code from
`ERRORS`, aiohttp's own 404/405/413 included. Bad input is refused with 400 and never reaches the
rules as something else: a number that cannot be parsed is the core's business (a reject verdict),
a `true` sent as `"yes"` is the API's (400 naming the field).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import traceback
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from npv_guard.api.auth import TokenBook
from npv_guard.audit import AuditLog
from npv_guard.callpath import CallPath
from npv_guard.clock import parse_instant, parse_slot
from npv_guard.config import json_kind
from npv_guard.core.model import Basis, CallRequest, RefusalSource, Slot, label_problem
from npv_guard.httpserver import HTTP_CODES
from npv_guard.observability import Health, Metrics
from npv_guard.service import Guard, InputError, PairError
from npv_guard.store import StoreUnavailable
from npv_guard.views import check_payload, consent_payload, history_payload, refusal_payload

log = logging.getLogger("npv_guard.api")

# Stable error codes and their HTTP status: integrators branch on the code, never on the text.
ERRORS: dict[str, int] = {
    "BAD_REQUEST": 400,
    "INVALID_JSON": 400,
    "INVALID_NUMBER": 400,
    "INSTANT_OUT_OF_RANGE": 400,
    "UNKNOWN_PROFESSIONAL": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN_PROFESSIONAL": 403,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "INTERNAL": 500,
    "STATE_UNAVAILABLE": 503,
    "TOO_MANY_CONNECTIONS": 503,
}
CHECK_FIELDS = frozenset(
    {
        "caller", "callee", "at", "professional", "consumer_postcode", "sector", "automated", "offline", "record",
        "campaign", "lead",
    }
)  # fmt: skip
REFUSAL_FIELDS = frozenset({"professional", "callee", "at", "source"})
GRANT_FIELDS = frozenset({"professional", "callee", "at", "basis", "proof", "outside_hours", "until", "slot"})
WITHDRAW_FIELDS = frozenset({"professional", "callee", "at", "proof"})
HISTORY_FIELDS = frozenset({"professional", "callee"})
# Reachable without a token: the description of the API and the probes.
PUBLIC_PATHS = frozenset({"/v1/openapi.json", "/healthz", "/metrics"})


class ApiError(Exception):
    def __init__(self, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = ERRORS[code]
        self.message = message
        self.headers = dict(headers or {})


def error_response(code: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=ERRORS[code], headers=dict(headers or {})
    )


@dataclass
class ApiContext:
    guard: Guard
    tokens: TokenBook
    audit: AuditLog
    metrics: Metrics
    now: Callable[[], datetime]
    health: Health
    openapi: dict[str, Any]
    max_body_bytes: int

    @cached_property
    def path(self) -> CallPath:
        return CallPath(self.guard, self.audit, self.metrics)


CONTEXT: web.AppKey[ApiContext] = web.AppKey("npv_guard_api", ApiContext)
PROFESSIONAL: str = "npv_guard_professional"  # request key: the professional the token acts for


# --- input ---------------------------------------------------------------------------------------


class Fields:
    """One request's named inputs (JSON body or query string), read with their expected types."""

    def __init__(self, values: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ApiError(
                "BAD_REQUEST", f"{_shown_name(unknown[0])}: unknown {where} field (known: {', '.join(sorted(allowed))})"
            )
        self._values = values

    def text(self, name: str, *, required: bool = False) -> str | None:
        value = self._values.get(name)
        if value is None and name not in self._values:
            if required:
                raise ApiError("BAD_REQUEST", f"{name}: required")
            return None
        if not isinstance(value, str):
            raise ApiError("BAD_REQUEST", f"{name}: expected a string, got {json_kind(value)}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates: valid JSON escapes, but no text anyone can log or store.
            raise ApiError("BAD_REQUEST", f"{name}: not valid Unicode text") from None
        return value

    def required(self, name: str) -> str:
        value = self.text(name, required=True)
        assert value is not None  # text(required=True) raises instead
        return value

    def flag(self, name: str) -> bool:
        value = self._values.get(name, False)
        if not isinstance(value, bool):
            raise ApiError("BAD_REQUEST", f"{name}: expected true or false, got {json_kind(value)}")
        return value

    def choice(self, name: str, choices: list[str], default: str) -> str:
        value = self.text(name)
        if value is None:
            return default
        if value not in choices:
            raise ApiError("BAD_REQUEST", f"{name}: expected one of {', '.join(choices)}")
        return value

    def instant(self, name: str, now: Callable[[], datetime]) -> datetime:
        value = self.text(name)
        if value is None:
            return now()
        try:
            return parse_instant(value)
        except ValueError as error:
            # The parser's text quotes the value: an answer never echoes input.
            problem = "outside 1970-2099" if "outside" in str(error) else "not an ISO 8601 instant"
            raise ApiError("BAD_REQUEST", f"{name}: {problem} (e.g. 2026-12-01T10:30:00+01:00)") from None


_NAME = re.compile(r"[A-Za-z_]{1,32}")


def _shown_name(name: str) -> str:
    """A field name from the request, quoted only when it looks like one: an answer never echoes
    what could be a number (a client that put the callee where a name goes)."""
    return repr(name) if _NAME.fullmatch(name) else "(a name that is not a field name)"


async def read_json(request: web.Request, allowed: frozenset[str]) -> Fields:
    if request.content_type != "application/json":
        raise ApiError("UNSUPPORTED_MEDIA_TYPE", "send the body as Content-Type: application/json")
    raw = await request.read()  # aiohttp enforces client_max_size here (413)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError("INVALID_JSON", "the body is not valid JSON (UTF-8)") from None
    if not isinstance(body, dict):
        raise ApiError("BAD_REQUEST", f"the body must be a JSON object, got {json_kind(body)}")
    return Fields(body, allowed, "body")


def read_query(request: web.Request, allowed: frozenset[str]) -> Fields:
    query = request.query
    values: dict[str, str] = {}
    for name in query:
        if len(query.getall(name)) > 1:
            raise ApiError("BAD_REQUEST", f"{_shown_name(name)}: given more than once")
        values[name] = query[name]
    return Fields(values, allowed, "query")


def acting_for(request: web.Request, fields: Fields) -> str:
    """The professional a request acts for: the token's own, whatever the request names."""
    own: str = request[PROFESSIONAL]
    named = fields.text("professional")
    if named is not None and named != own:
        raise ApiError("FORBIDDEN_PROFESSIONAL", "this token acts for another professional")
    return own


def _label(fields: Fields, name: str, callee: str) -> str | None:
    """A campaign or lead id: a malformed one is refused, so the dialer's integrator sees it at once
    (the call path, which cannot answer an error, drops it with a warning instead)."""
    value = fields.text(name)
    if value is not None and (problem := label_problem(value, callee)) is not None:
        raise ApiError("BAD_REQUEST", f"{name}: {problem}")
    return value


# --- handlers ------------------------------------------------------------------------------------


async def check(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    fields = await read_json(request, CHECK_FIELDS)
    professional = acting_for(request, fields)
    record, offline = fields.flag("record"), fields.flag("offline")
    if record and offline:
        raise ApiError("BAD_REQUEST", "record needs the stored state: drop offline")
    call_request = CallRequest(
        caller=fields.required("caller"),
        callee=fields.required("callee"),
        at=fields.instant("at", ctx.now),
        professional=professional,
        consumer_postcode=fields.text("consumer_postcode"),
        sector=fields.text("sector"),
        automated=fields.flag("automated"),
        campaign=_label(fields, "campaign", fields.required("callee")),
        lead=_label(fields, "lead", fields.required("callee")),
    )
    call_id = uuid.uuid4().hex
    decision = await ctx.path.decide_call(
        call_request, mode="api", call_id=call_id, record=record, offline=offline,
        audit_fields={"record": record, "offline": offline},
    )  # fmt: skip
    payload = check_payload(decision.verdict, record=record, data=decision.data)
    return web.json_response(payload, headers={"X-Call-Id": call_id})


async def record_refusal(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    fields = await read_json(request, REFUSAL_FIELDS)
    professional = acting_for(request, fields)
    callee = fields.required("callee")
    at = fields.instant("at", ctx.now)
    source = RefusalSource(fields.choice("source", [s.value for s in RefusalSource], RefusalSource.OPERATOR.value))
    signalled = await ctx.path.record_refusal(
        mode="api", source=source, professional=professional, callee=callee, at=at, call_id=uuid.uuid4().hex,
        lost_on=(StoreUnavailable, OSError), describe=lambda error: type(error).__name__,
    )  # fmt: skip
    if signalled.outcome is None:
        # Neither Redis nor the journal took it: say so, the caller must retry.
        raise ApiError("STATE_UNAVAILABLE", "the refusal could not be stored nor journaled: retry")
    outcome = signalled.outcome
    payload = refusal_payload(professional, outcome)
    payload["journaled"] = outcome.journaled
    return web.json_response(payload)


async def grant_consent(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    fields = await read_json(request, GRANT_FIELDS)
    professional = acting_for(request, fields)
    callee = fields.required("callee")
    at = fields.instant("at", ctx.now)
    basis = Basis(fields.choice("basis", [b.value for b in Basis], Basis.CONSENT.value))
    proof = fields.text("proof") or ""
    outside_hours = fields.flag("outside_hours")
    until_text = fields.text("until")
    until = fields.instant("until", ctx.now) if until_text is not None else None
    slot_text = fields.text("slot")
    try:
        slot = Slot(*parse_slot(slot_text)) if slot_text is not None else None
    except ValueError as error:
        raise ApiError("BAD_REQUEST", f"slot: {error}") from None
    try:
        event = await ctx.path.grant_consent(
            mode="api", professional=professional, callee=callee, at=at, basis=basis, proof=proof,
            outside_hours=outside_hours, until=until, slot=slot,
        )  # fmt: skip
    except InputError:
        raise
    except ValueError as error:
        raise ApiError("BAD_REQUEST", str(error)) from None
    return web.json_response(consent_payload(professional, event))


async def withdraw_consent(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    fields = await read_json(request, WITHDRAW_FIELDS)
    professional = acting_for(request, fields)
    callee = fields.required("callee")
    at = fields.instant("at", ctx.now)
    event = await ctx.path.withdraw_consent(
        mode="api", professional=professional, callee=callee, at=at, proof=fields.text("proof") or ""
    )
    # The answer of `consent --json`.
    return web.json_response(consent_payload(professional, event))


async def history(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    fields = read_query(request, HISTORY_FIELDS)
    professional = acting_for(request, fields)
    _, pair_history = await ctx.guard.history(professional, fields.required("callee"))
    return web.json_response(history_payload(professional, pair_history))


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[CONTEXT].openapi)


async def healthz(request: web.Request) -> web.Response:
    status = request.app[CONTEXT].health.status()
    ready = status["redis"]
    return web.json_response({"ready": ready, "redis": status["redis"]}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[CONTEXT].metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


# --- middleware ----------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _route_name(request: BaseRequest) -> str:
    """The matched route's template, never the raw path: paths and queries may carry a number."""
    try:
        match_info = getattr(request, "match_info", None)
    except Exception:  # a request aiohttp's parser refused has no routing at all
        return "(unparsed)"
    if not isinstance(match_info, web.UrlMappingMatchInfo) or match_info.http_exception is not None:
        return "(unmatched)"
    resource = match_info.route.resource
    return resource.canonical if resource is not None else "(unmatched)"


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error.code, error.message, error.headers)
    except PairError:
        # The core's text quotes the number: the answer names the problem only.
        return error_response("INVALID_NUMBER", "callee: not a consumer line of the French numbering plan")
    except InputError as error:
        # A professional or an instant the guard refuses.
        return error_response(error.code, str(error))
    except StoreUnavailable:
        return error_response("STATE_UNAVAILABLE", "the stored state is unavailable (Redis): nothing was recorded")
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code = HTTP_CODES.get(error.status, "BAD_REQUEST" if error.status < 500 else "INTERNAL")
        messages = {
            "NOT_FOUND": "no such endpoint (see /v1/openapi.json)",
            "METHOD_NOT_ALLOWED": f"method not allowed here (allowed: {error.headers.get('Allow', 'none')})",
            "PAYLOAD_TOO_LARGE": "the body is larger than api.max_body_bytes",
        }
        response = web.json_response(
            {"error": {"code": code, "message": messages.get(code, error.reason)}}, status=error.status
        )
        if "Allow" in error.headers:
            response.headers["Allow"] = error.headers["Allow"]
        return response
    except (asyncio.CancelledError, ConnectionError):
        raise  # the client left, or its connection's deadline passed: no answer to give
    except Exception as error:
        # The exception's text may hold a consumer number: log its type and where it came from.
        where = "".join(traceback.format_tb(error.__traceback__, limit=-3))
        log.error("internal error in %s %s: %s\n%s", request.method, _route_name(request), type(error).__name__, where)
        return error_response("INTERNAL", "internal error: see the guard's log")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    if request.match_info.http_exception is not None or _route_name(request) in PUBLIC_PATHS:
        return await handler(request)
    professional = ctx.tokens.professional_for(request.headers.get("Authorization"))
    if professional is None:
        raise ApiError(
            "UNAUTHORIZED", "a valid bearer token is required (Authorization: Bearer …)", {"WWW-Authenticate": "Bearer"}
        )
    if request.content_length is not None and request.content_length > ctx.max_body_bytes:
        # Refused before a byte of the body is read.
        raise ApiError("PAYLOAD_TOO_LARGE", "the body is larger than api.max_body_bytes")
    request[PROFESSIONAL] = professional
    return await handler(request)


class SafeAccessLogger(AbstractAccessLogger):
    """Access lines with the route template instead of the path (history's query holds a
    consumer number), at debug level only: the audit trail is the record of decisions."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.debug("%s %s -> %d in %.1f ms", request.method, _route_name(request), response.status, time * 1000)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.DEBUG)


def build_app(ctx: ApiContext) -> web.Application:
    app = web.Application(client_max_size=ctx.max_body_bytes, middlewares=[errors_middleware, auth_middleware])
    app[CONTEXT] = ctx
    app.router.add_post("/v1/check", check)
    app.router.add_post("/v1/refusals", record_refusal)
    app.router.add_post("/v1/consents", grant_consent)
    app.router.add_delete("/v1/consents", withdraw_consent)
    app.router.add_get("/v1/history", history, allow_head=False)
    app.router.add_get("/v1/openapi.json", openapi, allow_head=False)
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/metrics", metrics, allow_head=False)
    return app
