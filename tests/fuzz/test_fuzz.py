"""Hostile input at scale (hypothesis, bounded): the number parser, the whole decision, the AGI
header reader and the config loader never raise anything but their own clear errors, and never
hang. Examples per run: NPV_GUARD_FUZZ_EXAMPLES (default 4000 each; the documented long run uses
100000)."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npv_guard.agi.server import MAX_ARG_CHARS, MAX_ARGS, MAX_HEADER_BYTES, SessionError, header_problem, read_headers
from npv_guard.config import ConfigError, load_settings
from npv_guard.core.decide import decide, prepare
from npv_guard.core.message import body_problem
from npv_guard.core.model import CallRequest, Medium, PairState, Policy
from npv_guard.core.numbering import NumberKind, parse
from npv_guard.sms.text import address_number, is_stop

EXAMPLES = int(os.environ.get("NPV_GUARD_FUZZ_EXAMPLES", "4000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

# Things that look like numbers, URIs and headers, mixed with anything at all.
sip_like = st.builds(
    lambda scheme, user, host, params: f"{scheme}{user}@{host}{params}",
    st.sampled_from(["sip:", "sips:", "tel:", "SIP:", "", "<sip:", '"x" <sip:']),
    st.one_of(st.from_regex(r"\A\+?[0-9 .()\-]{0,20}\Z"), st.text(max_size=30)),
    st.sampled_from(["host", "10.0.0.1:5060", "[::1]", "", "a;b=c"]),
    st.sampled_from(["", ";user=phone", ";npdi;rn=+33", ">;tag=1", ";" * 50, "?x=<>"]),
)
anything = st.one_of(st.text(max_size=300), sip_like, st.binary(max_size=64).map(lambda b: b.decode("latin-1")))


@FUZZ
@given(anything)
def test_parser_never_raises(text: str) -> None:
    number = parse(text)
    assert number.kind in NumberKind
    if number.e164 is not None:
        assert number.e164[0] == "+" and number.e164[1:].isdigit() and len(number.e164) <= 18


@FUZZ
@given(
    caller=anything,
    callee=anything,
    postcode=st.one_of(st.none(), st.text(max_size=12)),
    medium=st.sampled_from(list(Medium)),
)
def test_decision_never_raises_and_never_allows_garbage(
    caller: str, callee: str, postcode: str | None, medium: Medium
) -> None:
    request = CallRequest(
        caller, callee, datetime(2026, 12, 1, 9, 30, tzinfo=UTC), consumer_postcode=postcode, medium=medium
    )
    verdict = decide(prepare(request, Policy()), PairState(), Policy())
    if medium is Medium.SMS:
        assert not verdict.allowed  # no consent in an empty state: never sent
    if verdict.allowed:
        assert parse(caller).is_npv
        assert parse(callee).territories


@FUZZ
@given(sender=sip_like, consumer=sip_like, body=st.one_of(st.none(), st.text(max_size=300), st.integers()))
def test_message_reading_never_raises(sender: object, consumer: object, body: object) -> None:
    number = address_number(sender)
    assert len(number) <= 64 and "@" not in number
    address_number(consumer)
    problem = body_problem(body, 1023)
    assert problem is None or isinstance(problem, str)
    is_stop(body, ("STOP", "ARRET"))


header_lines = st.lists(
    st.one_of(
        st.builds(lambda k, v: f"agi_{k}: {v}\n".encode(), st.from_regex(r"\A[a-z_]{1,20}\Z"), st.text(max_size=80)),
        st.binary(max_size=200),
        st.just(b"\n"),
        st.just(b"agi_network_script: check\n"),
        st.builds(lambda n, v: f"agi_arg_{n}: {v}\n".encode(), st.integers(1, 12), st.text(max_size=200)),
        st.builds(lambda n: b"agi_x: " + b"y" * n + b"\n", st.integers(0, MAX_HEADER_BYTES * 2)),
    ),
    max_size=40,
)


@FUZZ
@given(header_lines)
def test_agi_header_reader_returns_or_refuses_cleanly(lines: list[bytes]) -> None:
    async def read() -> None:
        reader = asyncio.StreamReader(limit=4096)
        reader.feed_data(b"".join(lines))
        reader.feed_eof()  # whatever the client sent, it then went away: the reader must end now
        try:
            headers = await asyncio.wait_for(read_headers(reader), 2.0)
        except SessionError:
            return
        assert headers and all(name.startswith("agi_") for name in headers)
        problem = header_problem(headers)  # what the server checks before any script runs
        if problem is None:
            arguments = [value for name, value in headers.items() if name.startswith("agi_arg_")]
            assert len(arguments) <= MAX_ARGS
            assert all(len(value) <= MAX_ARG_CHARS and value.isprintable() for value in arguments)
        else:
            assert isinstance(problem, str) and "\n" not in problem

    asyncio.run(read())


@settings(max_examples=max(EXAMPLES // 10, 200), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(max_size=400))
def test_config_loader_gives_clear_errors(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = Path(tmp_path_factory.mktemp("cfg")) / "guard.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_settings(str(path), {})
    except ConfigError as error:
        assert "\n" not in str(error)


# Every numeric setting, with the values an operator may mistype: each is refused with one line
# naming its key, or loaded within its documented range.
NUMERIC_KEYS = {
    ("agi", "command_timeout_s"): (0, 300), ("agi", "header_timeout_s"): (0, 300),
    ("ari", "reconnect_max_s"): (0, 3600), ("calls", "reject_announcement_max_s"): (0, 120),
    ("rules", "max_write_skew_s"): (0, 3600), ("ari", "ring_timeout_s"): (0, 3600),
    ("agi", "port"): (0, 65535), ("ami", "port"): (0, 65535), ("agi", "max_sessions"): (0, 100000),
    ("redis", "timeout_ms"): (0, 60000), ("calls", "reject_cause"): (0, 127),
    ("sms", "max_body_bytes"): (0, 1023), ("api", "max_body_bytes"): (255, 1048576),
}  # fmt: skip
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**40), 2**40), st.text(max_size=12))


@FUZZ
@given(st.sampled_from(sorted(NUMERIC_KEYS)), numbers)
def test_numeric_settings_are_in_range_or_refused_naming_the_key(key: tuple[str, str], value: object) -> None:
    section, name = key
    variable = f"NPV_GUARD_{section.upper()}_{name.upper()}"
    try:
        settings = load_settings(None, {variable: str(value)})
    except ConfigError as error:
        assert str(error).startswith(f"{section}.{name}:") and "\n" not in str(error)
        return
    low, high = NUMERIC_KEYS[key]
    loaded = getattr(getattr(settings, section), name)
    assert low < loaded <= high, (key, value, loaded)
