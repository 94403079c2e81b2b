"""Logging must never fail a request."""

from __future__ import annotations

import io
import json
import os
import re
import sys

import pytest
import structlog

from shared.logs import configure_logging, request_id


def test_lines_are_json_with_bound_context(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    structlog.contextvars.bind_contextvars(request_id="r-1", stack="flask")
    structlog.get_logger("t").info("hello", n=1)
    structlog.get_logger("t").debug("hidden")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(e["event"], e["request_id"], e["stack"], e["n"], e["level"]) for e in lines] == [
        ("hello", "r-1", "flask", 1, "info")
    ]


def test_a_closed_or_broken_stream_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    configure_logging("INFO")
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)
    structlog.get_logger("t").info("dropped")  # must not raise

    class BrokenPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError

    monkeypatch.setattr(sys, "stderr", BrokenPipe())
    structlog.get_logger("t").error("dropped too")


@pytest.mark.parametrize(
    ("header", "kept"), [("abc-123", True), ("x" * 129, False), ("no spaces", False), (None, False)]
)
def test_request_id(header: str | None, kept: bool) -> None:
    rid = request_id(header)
    assert (rid == header) is kept
    assert 1 <= len(rid) <= 128


def test_minted_request_ids_are_distinct_128_bit_hex() -> None:
    minted = {request_id(None) for _ in range(10_000)}
    assert len(minted) == 10_000
    assert all(re.fullmatch("[0-9a-f]{32}", rid) for rid in minted)


def test_a_forked_worker_mints_other_ids_than_its_parent() -> None:
    # Worker processes fork from one parent: ids must not repeat across them.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one id, then leave without running pytest's teardown
        os.write(write, request_id(None).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = pipe.read()
    assert re.fullmatch("[0-9a-f]{32}", child)
    assert child != request_id(None)
