"""`make run`'s runner: everything starts, answers, and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from harness.serving import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_devstack_serves_both_stacks_and_stops_cleanly() -> None:
    flask_port, fastapi_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.devstack",
            f"--flask-port={flask_port}",
            f"--fastapi-port={fastapi_port}",
        ],
        cwd=ROOT,
        env={**os.environ, "LOG_LEVEL": "WARNING"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = []
        for line in process.stdout:
            banner.append(line)
            if line.strip() == "ready":
                break
        assert banner[-1].strip() == "ready", "".join(banner)
        sid = "devstack-test"
        first = httpx.post(
            f"http://127.0.0.1:{flask_port}/api/v1/chat",
            json={"message": "one", "session_id": sid},
            timeout=10,
        )
        second = httpx.post(
            f"http://127.0.0.1:{fastapi_port}/api/v1/chat",
            json={"message": "two", "session_id": sid},
            timeout=10,
        )
        record = httpx.get(f"http://127.0.0.1:{fastapi_port}/api/v1/chat/sessions/{sid}")
        assert (first.status_code, second.status_code) == (200, 200)
        assert record.json()["turns"] == 2
        assert f"http://127.0.0.1:{flask_port}" in "".join(banner)
    finally:
        process.send_signal(signal.SIGTERM)  # only the process this test started
        code = process.wait(timeout=20)
        if process.stdout:
            process.stdout.close()
    assert code == 0
    for port in (flask_port, fastapi_port):
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            raise AssertionError(f"port {port} still answers after stop")
        except httpx.TransportError:
            pass
