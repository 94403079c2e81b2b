"""`uvicorn gateway:app` as real processes: two gateways sharing one rollout store agree
within two seconds of a change made through either."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from harness.emulators import LocalEmulators
from harness.serving import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "process-token"


@contextmanager
def _gateway_process(env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "gateway:app", "--host", "127.0.0.1", f"--port={port}"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/_gateway/rollout", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                assert process.poll() is None, "gateway exited during start-up"
                assert time.monotonic() < deadline, "gateway did not start"
                time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)  # only the process this test started
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_two_gateway_processes_converge_after_a_change(emulators: LocalEmulators) -> None:
    table = f"gw_procs_{uuid.uuid4().hex[:8]}"
    emulators.dynamodb.create_table(table)
    env = {
        **emulators.env(),
        "GATEWAY_STATE_TABLE": table,
        "GATEWAY_ADMIN_TOKEN": TOKEN,
        "GATEWAY_FASTAPI_PERCENT": "0",
        "LOG_LEVEL": "WARNING",
    }
    with ExitStack() as stack:
        first = stack.enter_context(_gateway_process(env))
        second = stack.enter_context(_gateway_process(env))
        assert httpx.get(f"{second}/health").headers["x-dualstack-backend"] == "flask"
        changed = httpx.put(
            f"{first}/_gateway/rollout",
            json={"fastapi_percent": 100},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert changed.status_code == 200, changed.text
        started = time.monotonic()
        while httpx.get(f"{second}/_gateway/rollout").json()["fastapi_percent"] != 100:
            assert time.monotonic() - started < 2.0, "the second gateway did not converge in 2 s"
            time.sleep(0.05)
        assert httpx.get(f"{second}/health").headers["x-dualstack-backend"] == "fastapi"
