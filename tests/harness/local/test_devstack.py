"""`make run`'s runner: everything starts, answers through the gateway, stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from harness.local.servers import free_port

ROOT = Path(__file__).resolve().parents[3]


def test_devstack_serves_the_gateway_and_stops_cleanly() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.local.devstack", f"--port={port}"],
        cwd=ROOT,
        env={**env, "LOG_LEVEL": "WARNING"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert process.stdout is not None
        banner = []
        for line in process.stdout:
            banner.append(line)
            if line.strip() == "ready":
                break
        text = "".join(banner)
        assert banner[-1].strip() == "ready", text
        assert f"{url}   50% to FastAPI" in text
        token = next(line.split()[2] for line in banner if line.strip().startswith("admin token"))
        sid = "devstack-test"
        served = set()
        for backend in ("flask", "fastapi"):
            response = httpx.post(
                f"{url}/api/v1/chat",
                json={"message": backend, "session_id": sid},
                headers={"X-Dualstack-Backend": backend},
                timeout=10,
            )
            assert response.status_code == 200
            served.add(response.headers["x-dualstack-backend"])
        record = httpx.get(f"{url}/api/v1/chat/sessions/{sid}")
        changed = httpx.put(
            f"{url}/_gateway/rollout",
            json={"fastapi_percent": 80},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert served == {"flask", "fastapi"}
        assert record.json()["turns"] == 2
        assert changed.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)  # only the process this test started
        code = process.wait(timeout=20)
        if process.stdout:
            process.stdout.close()
    assert code == 0
    try:
        httpx.get(f"{url}/health", timeout=1)
        raise AssertionError("the gateway still answers after stop")
    except httpx.TransportError:
        pass
