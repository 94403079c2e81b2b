"""The capture writer: conversations sampled whole, credentials never written, redacted
fields as keyed pseudonyms, a bounded queue that drops rather than waits, rotation, and a
file the parity suite replays."""

from __future__ import annotations

import json
from pathlib import Path

from harness.gateway.capture import CaptureConfig, CaptureWriter
from parity_tests.capture import load_capture

JSON = (b"content-type", b"application/json")


def _writer(tmp_path: Path, **options: object) -> CaptureWriter:
    config = CaptureConfig(path=tmp_path / "capture.jsonl", **options)  # type: ignore[arg-type]
    return CaptureWriter(config, secret="deployment-secret", clock=lambda: 1796000000.0)


def test_conversations_are_sampled_whole_at_the_percentage(tmp_path: Path) -> None:
    writer = _writer(tmp_path, percent=30)
    keys = [f"conversation-{n}" for n in range(4000)]
    chosen = [key for key in keys if writer.wants(key)]
    assert 0.27 < len(chosen) / len(keys) < 0.33
    assert chosen == [key for key in keys if writer.wants(key)]  # the same every time
    assert not any(_writer(tmp_path, percent=0).wants(key) for key in keys[:200])
    assert all(_writer(tmp_path, percent=100).wants(key) for key in keys[:200])


def test_credentials_are_never_written_and_redacted_fields_are_pseudonyms(tmp_path: Path) -> None:
    writer = _writer(tmp_path, redact=("$.user_id", "$.profile.email"))
    headers = [
        JSON,
        (b"authorization", b"Bearer s3cret"),
        (b"Cookie", b"id=1"),
        (b"x-user-id", b"u"),
    ]
    body = {"message": "hi", "user_id": "alice", "profile": {"email": "a@example.com"}}
    line = json.loads(
        writer.line(
            {
                "time": 1.0,
                "method": "POST",
                "path": "/api/v1/chat",
                "headers": headers,
                "body": json.dumps(body).encode(),
                "key": "k",
                "status": 200,
            }
        )
    )
    assert line["headers"] == [["content-type", "application/json"], ["x-user-id", "u"]]
    written = json.loads(line["body"])
    assert written["message"] == "hi"
    assert written["user_id"] == writer.pseudonym("alice") != "alice"
    assert written["profile"]["email"] == writer.pseudonym("a@example.com")
    assert "alice" not in json.dumps(line) and "s3cret" not in json.dumps(line)
    # Keyed by the deployment's secret: another deployment's pseudonym differs.
    other = CaptureWriter(CaptureConfig(path=tmp_path / "x.jsonl"), secret="another")
    assert other.pseudonym("alice") != writer.pseudonym("alice")


def test_a_body_that_is_not_utf8_is_kept_as_base64(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    record = {
        "time": 1.0,
        "method": "POST",
        "path": "/api/v1/chat?x=1",
        "headers": [JSON],
        "body": "ü".encode("latin-1"),
        "key": None,
        "status": 400,
    }
    line = json.loads(writer.line(record))
    assert (line["body_base64"], line["path"]) == ("/A==", "/api/v1/chat?x=1")


def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path: Path) -> None:
    writer = _writer(tmp_path, queue_size=2)  # not started: nothing drains the queue
    offered = [writer.offer("GET", "/health", b"", [], None, None, 200) for _ in range(3)]
    assert offered == [True, True, False]
    assert writer.stats.dropped == 1


def test_the_file_rotates_and_keeps_its_backups(tmp_path: Path) -> None:
    writer = _writer(tmp_path, max_bytes=600, backups=2)
    writer.start()
    for n in range(12):
        body = json.dumps({"message": f"turn {n}", "session_id": "s"}).encode()
        writer.offer("POST", "/api/v1/chat", b"", [JSON], body, "s", 200)
    writer.stop()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["capture.1.jsonl", "capture.2.jsonl", "capture.jsonl"]
    assert writer.stats.written == 12 and writer.stats.rotations >= 3
    assert all(p.stat().st_size <= 600 for p in tmp_path.iterdir())


def test_what_it_writes_the_parity_suite_replays(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    writer.start()
    for key, message in (("s1", "first"), ("s2", "other"), ("s1", "second")):
        body = json.dumps({"message": message, "session_id": key}).encode()
        writer.offer("POST", "/api/v1/chat", b"", [JSON, (b"x-request-id", b"r")], body, key, 200)
    writer.stop()
    cases = load_capture(tmp_path / "capture.jsonl")
    assert [[s.request.body["message"] for s in case.steps] for case in cases] == [
        ["first", "second"],
        ["other"],
    ]


def test_a_record_that_cannot_be_written_is_counted_not_raised(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    (tmp_path / "capture.jsonl").mkdir()  # the file's place taken: every write fails
    writer.start()
    writer.offer("GET", "/health", b"", [], None, None, 200)
    writer.offer("GET", "/health", b"", [], None, None, 200)
    writer.stop()
    assert (writer.stats.written, writer.stats.failed) == (0, 2)
