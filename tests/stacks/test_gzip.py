"""FastAPI gzips answers of 1000 bytes or more (GZipMiddleware, as the migration guide sets
it), and the gateway's shadow comparison judges such an answer against Flask's by its
decoded body, the encoding headers accepted by the parity rules it carries."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace

import pytest

from harness.diff import Rules, Volatile
from harness.gateway.shadow import Answer, Exchange, judge
from harness.gateway.shadow_rules import load_rules

from .conftest import Stacks

LONG = "g" * 1500


def _raw(stacks: Stacks, stack: str, headers: dict[str, str]) -> Answer:
    """The answer exactly as sent, body not decoded."""
    with (
        stacks.client(stack) as client,
        client.stream("POST", "/api/v1/chat", json={"message": LONG}, headers=headers) as response,
    ):
        body = b"".join(response.iter_raw())
    raw_headers = [(name.lower(), value) for name, value in response.headers.raw]
    return Answer(response.status_code, raw_headers, bytearray(body), complete=True)


def _judge(stacks: Stacks, headers: dict[str, str], rules: Rules) -> tuple[str, dict[str, str]]:
    flask, fastapi = _raw(stacks, "flask", headers), _raw(stacks, "fastapi", headers)
    scope = {"method": "POST", "path": "/api/v1/chat", "headers": []}
    exchange = Exchange("rid-1", "/api/v1/chat", "flask", scope, b"", flask, 0.01)
    outcome, found = judge(exchange, fastapi, rules)
    shown = {d.path: d.severity for d in found if d.path in ENCODING}
    return outcome, shown


ENCODING = ("header:content-encoding", "header:vary", "$")


def _without(rules: Rules, path: str) -> Rules:
    return replace(rules, expected=tuple(r for r in rules.expected if r.path != path))


@pytest.mark.parametrize("accept", ["gzip", "gzip, deflate, br"])
def test_fastapi_gzips_a_long_answer_and_flask_does_not(stacks: Stacks, accept: str) -> None:
    flask = _raw(stacks, "flask", {"Accept-Encoding": accept})
    fastapi = _raw(stacks, "fastapi", {"Accept-Encoding": accept})
    fastapi_headers = dict(fastapi.response().headers)
    assert fastapi_headers["content-encoding"] == "gzip"
    assert fastapi_headers["vary"] == "Accept-Encoding"
    assert "content-encoding" not in flask.response().headers
    decoded = json.loads(gzip.decompress(bytes(fastapi.body)))
    assert decoded["response"].count("g" * 1500) == 1
    assert int(fastapi_headers["content-length"]) == len(fastapi.body) < 1000


def test_a_client_without_gzip_gets_the_answer_as_is(stacks: Stacks) -> None:
    fastapi = _raw(stacks, "fastapi", {"Accept-Encoding": "identity"})
    assert "content-encoding" not in fastapi.response().headers
    assert json.loads(bytes(fastapi.body))["response"].count(LONG) == 1


def test_the_shadow_comparison_decodes_and_accepts_gzip_by_its_rules(stacks: Stacks) -> None:
    # Each stack mints its own session id here (the parity runner puts its own ids back as
    # placeholders; a shadow turn reuses the primary's): an id, whatever its value.
    shipped = load_rules(None)
    rules = replace(shipped, volatile=(*shipped.volatile, Volatile("$.session_id", "id")))
    plain = {"Accept-Encoding": "gzip"}
    cors = {**plain, "Origin": "https://app.example"}
    assert _judge(stacks, plain, rules) == (
        "match",
        {"header:content-encoding": "expected", "header:vary": "expected"},
    )
    assert _judge(stacks, cors, rules) == (
        "match",
        {"header:content-encoding": "expected", "header:vary": "expected"},
    )
    # Without a rule, the header difference is reported.
    assert _judge(stacks, plain, _without(rules, "header:content-encoding")) == (
        "additive",
        {"header:content-encoding": "additive", "header:vary": "expected"},
    )
    assert _judge(stacks, cors, _without(rules, "header:vary")) == (
        "breaking",
        {"header:content-encoding": "expected", "header:vary": "breaking"},
    )
