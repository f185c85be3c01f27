"""The OpenAPI 3.1 description of `npv-guard serve`, written by hand to match `npv_guard.api.app`.

Kept as data beside the handlers: the field sets and error codes are taken from app.py, and the
test suite runs schemathesis against the served document, so the two cannot drift silently.
"""

from __future__ import annotations

import copy
from typing import Any

from npv_guard import __version__
from npv_guard.api.app import (
    CHECK_FIELDS,
    ERRORS,
    GRANT_FIELDS,
    HISTORY_FIELDS,
    REFUSAL_FIELDS,
    WITHDRAW_FIELDS,
)
from npv_guard.core.model import PROFESSIONAL_ID, Basis, RefusalSource
from npv_guard.core.numbering import NumberKind
from npv_guard.core.reasons import ReasonCode

Schema = dict[str, Any]

_STRING: Schema = {"type": "string"}
_BOOL_FALSE: Schema = {"type": "boolean", "default": False}
_INSTANT_IN: Schema = {
    "type": "string",
    "description": "ISO 8601 instant, 1970-2099. With an offset or Z it is that instant; without one it is "
    "Europe/Paris wall time. Default: the guard's clock (now, or the replay clock of NPV_GUARD_NOW). "
    "Any instant for a check without record; for what records a fact (record, refusals, withdrawals) "
    "within rules.max_write_skew_s of the guard's clock, and for a grant not later than that "
    "(else 400 INSTANT_OUT_OF_RANGE).",
    "examples": ["2026-12-01T10:30:00+01:00", "2026-12-01T10:30:00"],
}
_UTC_OUT: Schema = {"type": "string", "description": "ISO 8601 UTC, e.g. 2026-12-01T09:30:00Z"}
_UTC_OR_NULL: Schema = {"type": ["string", "null"], "description": "ISO 8601 UTC, or null"}
_SLOT_OUT: Schema = {
    "type": ["object", "null"],
    "description": "The agreed callback slot [start, end), or null",
    "properties": {"start": _UTC_OUT, "end": _UTC_OUT},
    "required": ["start", "end"],
    "additionalProperties": False,
}
_PROFESSIONAL_IN: Schema = {
    "type": "string",
    "description": "The professional the request acts for. Optional: default and only allowed value is the "
    "token's own professional (another one gets 403 FORBIDDEN_PROFESSIONAL).",
}
_CALLEE_IN: Schema = {"type": "string", "description": "The consumer's number, any spelling (national, E.164...)"}
_NULLABLE_STRING: Schema = {"type": ["string", "null"]}
_LABEL_IN: Schema = {"type": "string", "pattern": PROFESSIONAL_ID.pattern}


def _object(properties: dict[str, Schema], required: list[str], description: str = "") -> Schema:
    schema: Schema = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    return schema


def _request(fields: frozenset[str], properties: dict[str, Schema], required: list[str]) -> Schema:
    # The request schemas list exactly the fields the handlers read: unknown fields are refused.
    assert set(properties) == fields, (sorted(properties), sorted(fields))
    return _object(properties, required)


# Every key of Verdict.as_dict(); `recorded` is added only when asked to record.
_VERDICT_KEYS = [
    "verdict", "reasons", "caller", "callee", "caller_kind", "professional", "territory", "timezone",
    "local_time", "at", "regime", "not_evaluated", "next_allowed_at",
]  # fmt: skip

_SCHEMAS: dict[str, Schema] = {
    "Error": _object(
        {"error": _object({"code": {"type": "string", "enum": list(ERRORS)}, "message": _STRING}, ["code", "message"])},
        ["error"],
    ),
    "CheckRequest": _request(
        CHECK_FIELDS,
        {
            "caller": {"type": "string", "description": "Caller ID as the dialer sends it (any spelling)"},
            "callee": {"type": "string", "description": "Number as dialled"},
            "at": _INSTANT_IN,
            "professional": _PROFESSIONAL_IN,
            "consumer_postcode": {"type": "string", "description": "The consumer's postcode or department"},
            "sector": {"type": "string", "description": "What the campaign sells (see rules.banned_sectors)"},
            "automated": {**_BOOL_FALSE, "description": "A recorded-message call (needs consent)"},
            "offline": {**_BOOL_FALSE, "description": "Only the rules that need no stored state"},
            "record": {
                **_BOOL_FALSE,
                "description": "Count an allowed call as an attempt, atomically (not with offline)",
            },
            "campaign": {
                **_LABEL_IN,
                "description": "Campaign id for the evidence trail (audit line, attempt); 1-64 of A-Z a-z 0-9 _.+-",
            },
            "lead": {**_LABEL_IN, "description": "Lead id for the evidence trail, same shape as campaign"},
        },
        ["caller", "callee"],
    ),
    "Verdict": _object(
        {
            "verdict": {"type": "string", "enum": ["allow", "reject"]},
            "reasons": {
                "type": "array",
                "items": _object(
                    {"code": {"type": "string", "enum": [code.value for code in ReasonCode]}, "message": _STRING},
                    ["code", "message"],
                ),
            },
            "caller": {**_NULLABLE_STRING, "description": "E.164, null when not a number"},
            "callee": {**_NULLABLE_STRING, "description": "E.164, null when not a number"},
            "caller_kind": {"type": "string", "enum": [kind.value for kind in NumberKind]},
            "professional": {**_NULLABLE_STRING, "description": "The professional the call was judged for"},
            "territory": {**_NULLABLE_STRING, "description": "Where the consumer is (FR, MQ, RE...)"},
            "timezone": _NULLABLE_STRING,
            "local_time": {**_NULLABLE_STRING, "description": "The call's instant, consumer time"},
            "at": _UTC_OUT,
            "regime": _object(
                {name: {"type": "boolean"} for name in ("npv", "d223_9", "opt_in", "sector_ban")},
                ["npv", "d223_9", "opt_in", "sector_ban"],
                "Which regimes were in force at the call's instant",
            ),
            "not_evaluated": {"type": "array", "items": _STRING},
            "next_allowed_at": {
                "type": ["object", "null"],
                "description": "First instant every rule would allow the same call, when all reasons expire "
                "by themselves; null otherwise",
                "properties": {"utc": _STRING, "local": _STRING},
                "required": ["utc", "local"],
                "additionalProperties": False,
            },
            "recorded": {"type": "boolean", "description": "Only with record: whether an attempt was counted"},
        },
        _VERDICT_KEYS,
        "The same object as `npv-guard check --json`",
    ),
    "RefusalRequest": _request(
        REFUSAL_FIELDS,
        {
            "professional": _PROFESSIONAL_IN,
            "callee": _CALLEE_IN,
            "at": _INSTANT_IN,
            "source": {"type": "string", "enum": [s.value for s in RefusalSource], "default": "operator"},
        },
        ["callee"],
    ),
    "RefusalAnswer": _object(
        {
            "recorded": {"type": "boolean", "const": True},
            "journaled": {
                "type": "boolean",
                "description": "Redis was unavailable: kept in the guard's journal and replayed later "
                "(the pair is treated as refused meanwhile)",
            },
            "professional": _STRING,
            "at": _UTC_OUT,
            "source": {"type": "string", "enum": [s.value for s in RefusalSource]},
            "blocked_until": {**_UTC_OUT, "description": "End of the 60-day block"},
            "withdraws_consent": {"type": "boolean", "description": "Since opt-in: blocked until a new consent"},
        },
        ["recorded", "journaled", "professional", "at", "source", "blocked_until", "withdraws_consent"],
    ),
    "ConsentGrant": _request(
        GRANT_FIELDS,
        {
            "professional": _PROFESSIONAL_IN,
            "callee": _CALLEE_IN,
            "at": _INSTANT_IN,
            "basis": {"type": "string", "enum": [b.value for b in Basis], "default": "consent"},
            "proof": {"type": "string", "default": "", "description": "How, when and where it was given"},
            "outside_hours": {
                **_BOOL_FALSE,
                "description": "Blanket consent to calls outside the legal days and hours: lifts them for "
                "calls before 2026-08-11 only (docs/rules.md)",
            },
            "until": {
                "type": "string",
                "examples": ["2027-06-30T00:00:00+02:00"],
                "description": "With basis contract: the contract's end (as at); it counts until then, excluded",
            },
            "slot": {
                "type": "string",
                "description": "A callback slot the consumer agreed to, START/END (two instants as at), half-open: "
                "calls inside it are not held to the days and hours",
                "examples": ["2026-12-05T09:00:00+01:00/2026-12-05T09:30:00+01:00"],
            },
        },
        ["callee"],
    ),
    "ConsentWithdraw": _request(
        WITHDRAW_FIELDS,
        {
            "professional": _PROFESSIONAL_IN,
            "callee": _CALLEE_IN,
            "at": _INSTANT_IN,
            "proof": {"type": "string", "default": "", "description": "How the withdrawal reached you"},
        },
        ["callee"],
    ),
    "ConsentAnswer": _object(
        {
            "recorded": {"type": "boolean", "const": True},
            "professional": _STRING,
            "granted": {"type": "boolean"},
            "basis": {"type": ["string", "null"], "enum": [*(b.value for b in Basis), None]},
            "at": _UTC_OUT,
            "outside_hours": {"type": "boolean"},
            "until": _UTC_OR_NULL,
            "slot": _SLOT_OUT,
        },
        ["recorded", "professional", "granted", "basis", "at", "outside_hours", "until", "slot"],
    ),
    "History": _object(
        {
            "professional": _STRING,
            "attempts": {
                "type": "array",
                "items": _object(
                    {"at": _UTC_OUT, "call_id": _STRING, "campaign": _NULLABLE_STRING, "lead": _NULLABLE_STRING},
                    ["at", "call_id", "campaign", "lead"],
                ),
            },
            "refusals": {
                "type": "array",
                "items": _object(
                    {
                        "at": _UTC_OUT,
                        "source": {"type": "string", "enum": [s.value for s in RefusalSource]},
                        "call_id": _STRING,
                    },
                    ["at", "source", "call_id"],
                ),
            },
            "consents": {
                "type": "array",
                "items": _object(
                    {
                        "at": _UTC_OUT,
                        "granted": {"type": "boolean"},
                        "basis": {"type": ["string", "null"], "enum": [*(b.value for b in Basis), None]},
                        "proof": _STRING,
                        "outside_hours": {"type": "boolean"},
                        "until": _UTC_OR_NULL,
                        "slot": _SLOT_OUT,
                    },
                    ["at", "granted", "basis", "proof", "outside_hours", "until", "slot"],
                ),
            },
            "messages": {
                "type": "array",
                "description": "Marketing SMS sent to the consumer",
                "items": _object({"at": _UTC_OUT, "message_id": _STRING}, ["at", "message_id"]),
            },
            "ttl_seconds": {
                "type": "object",
                "description": "Seconds each stored list still lives (negative: no such list)",
                "additionalProperties": {"type": "integer"},
            },
        },
        ["professional", "attempts", "refusals", "consents", "messages", "ttl_seconds"],
        "The same object as `npv-guard history --json`",
    ),
    "Health": _object(
        {"ready": {"type": "boolean"}, "redis": {"type": "boolean"}},
        ["ready", "redis"],
    ),
}
assert set(HISTORY_FIELDS) == {"professional", "callee"}  # the query parameters below


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str) -> Schema:
    return {"application/json": {"schema": _ref(name)}}


def _error(description: str, headers: Schema | None = None) -> Schema:
    response: Schema = {"description": description, "content": _json("Error")}
    if headers:
        response["headers"] = headers
    return response


_ERROR_RESPONSES: dict[str, Schema] = {
    "400": _error(
        "BAD_REQUEST (missing, unknown or mistyped field, named in the message), INVALID_JSON, INVALID_NUMBER, "
        "INSTANT_OUT_OF_RANGE (a fact to record dated more than rules.max_write_skew_s from the guard's clock, "
        "or a consent grant dated in the future), UNKNOWN_PROFESSIONAL"
    ),
    "401": _error(
        "UNAUTHORIZED: no or unknown bearer token",
        {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
    ),
    "403": _error("FORBIDDEN_PROFESSIONAL: the request names a professional the token does not act for"),
    "500": _error("INTERNAL"),
}
_BODY_ERRORS: dict[str, Schema] = {
    "413": _error("PAYLOAD_TOO_LARGE: body over api.max_body_bytes"),
    "415": _error("UNSUPPORTED_MEDIA_TYPE: the body must be application/json"),
}
_UNAVAILABLE = {"503": _error("STATE_UNAVAILABLE: Redis is unavailable, nothing was recorded")}


def _operation(summary: str, description: str, body: str | None, answer: Schema, *, stateful: bool = True) -> Schema:
    operation: Schema = {
        "summary": summary,
        "description": description,
        "responses": {"200": answer, **_ERROR_RESPONSES},
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": _json(body)}
        operation["responses"].update(_BODY_ERRORS)
    if stateful:
        operation["responses"].update(_UNAVAILABLE)
    return operation


_PATHS: dict[str, Schema] = {
    "/v1/check": {
        "post": _operation(
            "May this call be placed?",
            "The verdict of `npv-guard check --json`, HTTP 200 for both allow and reject. A number that cannot "
            "be parsed is a reject verdict, not an error. With Redis unavailable the verdict is a reject with "
            "STATE_UNAVAILABLE (unless redis.fail_open). The decision goes to the audit log (mode api).",
            "CheckRequest",
            {
                "description": "The verdict",
                "headers": {
                    "X-Call-Id": {
                        "description": "The id of this decision in the audit log (and of the attempt, with record)",
                        "schema": {"type": "string"},
                        "required": True,
                    }
                },
                "content": _json("Verdict"),
            },
            stateful=False,
        )
    },
    "/v1/refusals": {
        "post": _operation(
            "Record a consumer's refusal",
            "Blocks the pair for 60 days (and, since opt-in, withdraws consent). When Redis cannot take it, "
            "the refusal is journaled (`journaled: true`) and replayed when Redis is back; 503 only when "
            "neither could take it.",
            "RefusalRequest",
            {"description": "The refusal as recorded", "content": _json("RefusalAnswer")},
        )
    },
    "/v1/consents": {
        "post": _operation(
            "Record a consent or a contract in progress",
            "Same as `npv-guard consent grant`.",
            "ConsentGrant",
            {"description": "The consent as recorded", "content": _json("ConsentAnswer")},
        ),
        "delete": _operation(
            "Record a withdrawal of consent",
            "Same as `npv-guard consent withdraw`. The fields travel in a JSON body, as for the grant, so the "
            "consumer's number never appears in a URL.",
            "ConsentWithdraw",
            {"description": "The withdrawal as recorded", "content": _json("ConsentAnswer")},
        ),
    },
    "/v1/history": {
        "get": {
            **_operation(
                "What is stored for a (professional, consumer) pair",
                "Same as `npv-guard history --json`.",
                None,
                {"description": "The pair's history", "content": _json("History")},
            ),
            "parameters": [
                {"name": "callee", "in": "query", "required": True, "schema": _CALLEE_IN},
                {"name": "professional", "in": "query", "required": False, "schema": _PROFESSIONAL_IN},
            ],
        }
    },
    "/v1/openapi.json": {
        "get": {
            "summary": "This document",
            "security": [],
            "responses": {
                "200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}
            },
        }
    },
    "/healthz": {
        "get": {
            "summary": "Ready when Redis answers (probed every 2 s)",
            "security": [],
            "responses": {
                "200": {"description": "Ready", "content": _json("Health")},
                "503": {"description": "Not ready", "content": _json("Health")},
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": 'Prometheus metrics (decisions with mode="api")',
            "security": [],
            "responses": {
                "200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": _STRING}}}
            },
        }
    },
}

_DOCUMENT: Schema = {
    "openapi": "3.1.0",
    "info": {
        "title": "npv-guard pre-check API",
        "version": __version__,
        "description": "Ask the French telemarketing compliance guard whether a call may be placed, and record "
        'refusals and consents. Every error is {"error": {"code", "message"}} with a stable code.',
    },
    "security": [{"bearerAuth": []}],
    "paths": _PATHS,
    "components": {
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "One token per professional (npv-guard api-token); the config holds its SHA-256.",
            }
        },
        "schemas": _SCHEMAS,
    },
}


def document() -> Schema:
    """A fresh copy of the document (callers may add `servers`)."""
    return copy.deepcopy(_DOCUMENT)
