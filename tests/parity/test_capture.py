"""Captured traffic replayed as a corpus: conversations grouped and kept in order, fresh
sessions per replay, nothing of the client's text expanded, identical stacks pass and an
altered candidate fails."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from parity_tests.capture import load_capture
from parity_tests.cases import CorpusError
from parity_tests.cli import main
from parity_tests.runner import _literal

from .conftest import Rewrite, Stacks, json_change

CHAT = "/api/v1/chat"


def _line(key: str | None, body: Any = None, **fields: Any) -> str:
    record: dict[str, Any] = {
        "time": 1796000000.0,
        "method": "POST" if body is not None else "GET",
        "path": CHAT if body is not None else "/health",
        "headers": [["content-type", "application/json"]],
        "key": key,
        "status": 200,
        **fields,
    }
    if body is not None:
        record["body"] = body if isinstance(body, str) else json.dumps(body)
    return json.dumps(record)


def _write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "traffic.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_conversations_are_grouped_by_key_in_order_with_fresh_sessions(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        _line("s-a", {"message": "a1", "session_id": "s-a", "user_id": "u1"}),
        _line("s-b", {"message": "b1", "session_id": "s-b"}),
        _line(
            "s-a",
            None,
            path="/api/v1/chat/sessions/s-a",
            method="GET",
            headers=[["X-User-ID", "u1"], ["Authorization", "Bearer t"], ["X-Request-ID", "r"]],
        ),
        _line("s-a", {"message": "a2", "session_id": "s-a", "user_id": "u1"}),
        _line(None, None),
    )
    cases = load_capture(path)
    assert [(c.id, len(c.steps)) for c in cases] == [
        ("traffic/captured-1", 3),
        ("traffic/captured-2", 1),
        ("traffic/captured-3", 1),
    ]
    first = [step.request for step in cases[0].steps]
    assert [r.body["message"] if r.body else r.path for r in first] == [
        "a1",
        "/api/v1/chat/sessions/{session}",
        "a2",
    ]
    assert {r.body["session_id"] for r in first if r.body} == {"{session}"}
    # Credentials and the request id are never replayed; the user id is.
    assert first[1].headers == (("X-User-ID", "u1"),)
    assert all(r.literal for c in cases for s in c.steps for r in [s.request])


def test_a_replay_never_expands_the_clients_text(tmp_path: Path) -> None:
    message = "{repeat:9999999:x} and {user}"
    path = _write(tmp_path, _line("k", {"message": message, "session_id": "k"}))
    [case] = load_capture(path)
    url, _, content = _literal(case.steps[0].request, {"session": "fresh-1", "user": "u-9"})
    assert content is not None
    assert json.loads(content) == {"message": message, "session_id": "fresh-1"}
    assert url == CHAT


def test_bodies_that_are_not_json_objects_are_replayed_as_they_came(tmp_path: Path) -> None:
    raw = "caf\xe9".encode("latin-1")
    path = _write(
        tmp_path,
        _line("a", "[1, 2]"),
        _line("b", None, method="POST", body_base64=base64.b64encode(raw).decode()),
    )
    first, second = load_capture(path)
    assert (first.steps[0].request.body_kind, first.steps[0].request.body) == ("text", "[1, 2]")
    assert _literal(second.steps[0].request, {})[2] == raw


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("not json", "traffic.jsonl:2: "),
        (json.dumps({"method": "GET", "path": "/health"}), "traffic.jsonl:2: "),
        (_line("k", None, method="BREW"), "traffic.jsonl:2: unknown method 'BREW'"),
        (_line("k", None, body_base64="%%%"), "traffic.jsonl:2: body_base64 is not valid"),
    ],
)
def test_a_bad_line_is_named_by_file_and_line(tmp_path: Path, line: str, expected: str) -> None:
    path = _write(tmp_path, _line(None, None), line)
    with pytest.raises(CorpusError, match="^.*" + expected.replace(".", r"\.")):
        load_capture(path)


def test_captured_traffic_replays_clean_on_identical_stacks_and_fails_an_altered_one(
    stacks: Stacks, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path,
        _line("c1", {"message": "first", "session_id": "c1", "user_id": "u1"}),
        _line("c2", {"message": "", "session_id": "c2"}),
        _line("c1", {"message": "second", "session_id": "c1", "user_id": "u1"}),
    )
    urls = [
        "--flask-url",
        stacks.targets.flask.base_url,
        "--fastapi-url",
        stacks.targets.fastapi.base_url,
    ]
    assert main(["--corpus", str(path), *urls]) == 0, capsys.readouterr().out

    def reworded(method: str, path: str, status: int, data: dict[str, object]) -> None:
        if data.get("error") == "Message is required":
            data["error"] = "Message is missing"

    with stacks.alter(fastapi=lambda app: Rewrite(app, json_change(reworded))):
        code = main(["--corpus", str(path), *urls])
    out = capsys.readouterr().out
    assert code == 1
    assert "result: FAIL, 1 of 2 cases" in out


def test_a_conversation_replays_in_the_order_its_requests_came(tmp_path: Path) -> None:
    # Written as answers completed: the second turn's line came first.
    path = _write(
        tmp_path,
        _line("k", {"message": "second", "session_id": "k"}, time=20.0),
        _line("k", {"message": "first", "session_id": "k"}, time=10.0),
    )
    [case] = load_capture(path)
    assert [step.request.body["message"] for step in case.steps] == ["first", "second"]
