"""The fuzzer: its judge and its conformance checks catch what they are for, and a fixed-seed
slice of about 100 cases passes against both stacks under their production servers and the
gateway at 50 % (`make fuzz` runs 1 000 or more)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastapi_app import create_app
from parity_tests.fuzz.cases import Case, generated, load_schema, raw_cases
from parity_tests.fuzz.judge import Finding, judge
from parity_tests.fuzz.run import conformance, fuzz, schemathesis_cli
from parity_tests.fuzz.stacks import serve
from parity_tests.fuzz.wire import Answer, Request
from shared.settings import Settings

CHAT = Case("chat", Request("POST", "/api/v1/chat", (), b'{"message": "hi"}'))
SESSION = Case("session", Request("GET", "/api/v1/chat/sessions/abc"))
FAULT = Case("fault", Request("POST", "/api/v1/chat", (), b'{"message": "[[emulator:fail]]"}'))
JSON = (("Content-Type", "application/json"),)


def _error(status: int, message: str, backend: str | None = None) -> Answer:
    headers = JSON + ((("X-Dualstack-Backend", backend),) if backend else ())
    return Answer(status, headers, json.dumps({"error": message}).encode())


def _ok(backend: str | None = None) -> Answer:
    headers = JSON + ((("X-Dualstack-Backend", backend),) if backend else ())
    return Answer(200, headers, b'{"response": "r", "session_id": "s"}')


def _kinds(found: list[Finding]) -> list[tuple[str, str]]:
    return [(f.kind, f.detail) for f in found]


@pytest.mark.parametrize(
    ("case", "answers", "expected"),
    [
        (CHAT, {"flask": _ok(), "fastapi": _ok(), "gateway": _ok("flask")}, []),
        (
            CHAT,
            {"flask": _error(400, "Invalid user_id"), "fastapi": _ok(), "gateway": _ok("fastapi")},
            [("stacks differ", "flask 400 'Invalid user_id' / fastapi 200")],
        ),
        (
            CHAT,
            {
                "flask": _error(400, "Message is required"),
                "fastapi": _error(400, "Message must be a string"),
                "gateway": _error(400, "Message is required", "flask"),
            },
            [
                (
                    "stacks differ",
                    "flask 400 'Message is required' / fastapi 400 'Message must be a string'",
                )
            ],
        ),
        (
            CHAT,
            {"flask": _ok(), "fastapi": _ok(), "gateway": _error(413, "Nope", "fastapi")},
            [("gateway differs", "gateway via fastapi 413 'Nope' / fastapi 200")],
        ),
        (
            CHAT,
            {"flask": _ok(), "fastapi": _ok(), "gateway": Answer(500, (), b"Internal")},
            [
                ("5xx", "gateway: 500 '<not the error shape: None>'"),
                ("gateway differs", "served by None: 500 '<not the error shape: None>'"),
            ],
        ),
        (
            CHAT,
            {
                "flask": _error(400, "Duplicate X-User-ID header"),
                "fastapi": _error(400, "Duplicate X-User-ID header"),
                "gateway": _error(431, "Request headers too large", "gateway"),
            },
            [],
        ),
        (
            CHAT,
            {"flask": _ok(), "fastapi": _ok(), "gateway": _error(400, "Odd", "gateway")},
            [("gateway differs", "its own answer 400 'Odd'")],
        ),
        (
            FAULT,
            {
                "flask": _error(502, "Agent request failed"),
                "fastapi": _error(502, "Agent request failed"),
                "gateway": _error(502, "Agent request failed", "fastapi"),
            },
            [],
        ),
        (
            SESSION,  # FastAPI only: Flask is not asked, the gateway is compared with FastAPI
            {"fastapi": _error(404, "Session not found"), "gateway": _ok("fastapi")},
            [("gateway differs", "gateway via fastapi 200 / fastapi 404 'Session not found'")],
        ),
        (
            CHAT,
            {"flask": Answer(0, failure="reset"), "fastapi": _ok(), "gateway": _ok("fastapi")},
            [("no answer", "flask: reset"), ("stacks differ", "flask 0 / fastapi 200")],
        ),
    ],
)
def test_judge(case: Case, answers: dict[str, Answer], expected: list[tuple[str, str]]) -> None:
    assert _kinds(judge(case, answers)) == expected


def test_a_trailer_read_as_a_header_is_caught() -> None:
    case = Case(
        "trailer",
        Request("POST", "/api/v1/chat", JSON, b"{}", trailers=(("X-Request-ID", "t-1"),)),
    )
    echoed = Answer(200, (("X-Request-ID", "t-1"),), b"{}")
    ok = Answer(200, (("X-Request-ID", "minted"),), b"{}")
    assert _kinds(judge(case, {"flask": echoed, "fastapi": ok})) == [
        ("trailer read", "flask echoed a trailer's id")
    ]


@pytest.fixture(scope="module")
def schema() -> Any:
    return load_schema(create_app(Settings()).openapi())


def test_generated_cases_are_repeatable_and_cover_every_operation(schema: Any) -> None:
    first = generated(schema, 60, seed_value=3)
    again = generated(schema, 60, seed_value=3)
    assert [c.request for c in first] == [c.request for c in again]
    assert len(first) >= 60
    assert {" ".join(c.name.split()[:2]) for c in first} == {
        "POST /api/v1/chat",
        "GET /health",
        "GET /health/detailed",
        "GET /api/v1/chat/sessions/{session_id}",
        "DELETE /api/v1/chat/sessions/{session_id}",
    }
    assert {c.name.split()[2] for c in first} == {"positive", "negative"}


def test_conformance_catches_an_answer_the_document_does_not_promise(schema: Any) -> None:
    case = next(c for c in generated(schema, 20, seed_value=1) if c.name.startswith("GET /health "))
    promised = Answer(
        200,
        (*JSON, ("X-Request-ID", "r-1")),
        b'{"status": "healthy", "timestamp": 1.5, "version": "1"}',
    )
    broken = Answer(200, (*JSON, ("X-Request-ID", "r-1")), b'{"status": "healthy"}')
    html = Answer(200, (("Content-Type", "text/html"), ("X-Request-ID", "r-1")), b"<p>ok</p>")
    urls = dict.fromkeys(("flask", "fastapi", "gateway"), "http://127.0.0.1:9")
    assert conformance(case, {"flask": promised}, urls) == []
    assert [f.kind for f in conformance(case, {"flask": broken}, urls)] == [
        "conformance: Response violates schema"
    ]
    assert "conformance: Undocumented Content-Type" in [
        f.kind for f in conformance(case, {"fastapi": html}, urls)
    ]


def test_raw_cases_are_at_the_limits() -> None:
    cases = {c.name: c.request for c in raw_cases(iter(f"id-{n}" for n in range(100)))}
    assert len(cases["raw: 65535-byte body without session_id"].body) == 65535
    assert len(cases["raw: 65537-byte body, chunked"].body) == 65537
    assert cases["raw: utf-16 body with session_id"].body[:2] in (b"\xff\xfe", b"\xfe\xff")
    assert cases["raw: chunked body with a X-User-ID trailer"].trailers == (
        ("X-User-ID", "fuzz-trailer-user"),
    )


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with serve(Path(tmp_path_factory.mktemp("fuzz"))) as urls:
        yield urls


def test_a_fixed_seed_slice_finds_nothing(targets: dict[str, str]) -> None:
    summary = fuzz(targets, 100, seed=11)
    assert summary.failures == [], "\n".join(summary.lines())
    assert summary.cases >= 100
    assert summary.sent["fastapi"] == summary.sent["gateway"] == summary.cases
    assert 0 < summary.sent["flask"] < summary.cases  # not the FastAPI-only paths


def test_schemathesis_run_passes_for_each_stack_through_the_gateway(
    targets: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert schemathesis_cli(targets["gateway"], 10, seed=11, workdir=tmp_path) == []
    printed = capsys.readouterr().out
    assert printed.count("No issues found") == 2, printed
