"""Capture through the real gateway and stacks, then replay with the parity suite: identical
stacks pass, an altered candidate fails; credentials are not in the file, redacted fields are
pseudonyms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.local.emulators import LocalEmulators
from harness.local.servers import environment
from parity_tests.cli import main

from .conftest import StartGateway

CHAT = "/api/v1/chat"


def test_captured_conversations_replay_against_the_stacks(
    start_gateway: StartGateway,
    emulators: LocalEmulators,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # capture_altered, by name
    path = tmp_path / "capture.jsonl"
    auth = {"Authorization": "Bearer s3cret-token"}
    with (
        start_gateway(
            fastapi_percent=50, capture_path=str(path), capture_redact=["$.user_id"]
        ) as gw,
        gw.client() as client,
    ):
        for n in range(3):
            first = client.post(CHAT, json={"message": f"hi {n}", "user_id": "alice"}, headers=auth)
            sid = first.json()["session_id"]
            again = {"message": "and again", "session_id": sid, "user_id": "alice"}
            assert client.post(CHAT, json=again).status_code == 200
        assert client.post(CHAT, json={"message": ""}).status_code == 400
    # The gateway stopped: what was queued is written.
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 7
    assert "s3cret" not in path.read_text() and "alice" not in path.read_text()
    turns = [(json.loads(line["body"]), line["key"]) for line in lines if line["status"] == 200]
    # Every turn names its session (minted ones included): conversations group by it.
    assert [turn["session_id"] for turn, _ in turns] == [key for _, key in turns]
    assert len({key for _, key in turns}) == 3
    assert len({turn["user_id"] for turn, _ in turns}) == 1

    with environment(emulators.env()):
        assert main(["--corpus", str(path)]) == 0, capsys.readouterr()
        capsys.readouterr()
        code = main(["--corpus", str(path), "--fastapi-app", "capture_altered:create_app"])
    out, err = capsys.readouterr()
    assert code == 1, err
    assert "result: FAIL, 1 of 4 cases" in out
