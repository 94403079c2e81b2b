"""`make run`'s runner: everything starts, answers through the gateway, keeps the stacks'
logs out of the terminal, and stops on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import httpx

from harness.local.emulators.dynamodb import DUMMY_ACCESS_KEY_ID, DUMMY_SECRET_ACCESS_KEY
from harness.local.processes import free_port

ROOT = Path(__file__).resolve().parents[3]


def _devstack(port: int, log_file: Path) -> subprocess.Popen[str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("GATEWAY_") and name != "ENVIRONMENT"
    }
    return subprocess.Popen(
        [sys.executable, "-m", "harness.local.devstack", f"--port={port}", "--log-file", log_file],
        cwd=ROOT,
        env={**env, "LOG_LEVEL": "INFO"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_devstack_serves_the_gateway_logs_to_a_file_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    log_file = tmp_path / "run" / "gateway.log"
    process = _devstack(port, log_file)
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
        assert f"logs (both stacks, JSON)   {log_file}" in text
        assert "override header            open" in text  # for trying things on loopback
        assert f"dashboard                  {url}/_gateway/ui\n" in text
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
        health = httpx.get(f"{url}/health", headers={"X-Dualstack-Backend": "fastapi"})
        changed = httpx.put(
            f"{url}/_gateway/rollout",
            json={"fastapi_percent": 80},
            headers={"Authorization": f"Bearer {token}"},
        )
        # FastAPI's CloudWatch metrics reach the local CloudWatch the banner names, within
        # the run's flush interval (5 s): polled, the flush being periodic.
        cloudwatch = next(
            line.split()[2] for line in banner if line.strip().startswith("CloudWatch")
        )
        assert "(flushed every 5 s)" in text
        metrics = boto3.client(
            "cloudwatch",
            endpoint_url=cloudwatch,
            region_name="us-east-1",
            aws_access_key_id=DUMMY_ACCESS_KEY_ID,
            aws_secret_access_key=DUMMY_SECRET_ACCESS_KEY,
        )
        deadline = time.monotonic() + 30
        names: set[str] = set()
        while "ChatRequest" not in names:
            assert time.monotonic() < deadline, f"no ChatRequest metric: {names}"
            time.sleep(0.5)
            listed = metrics.list_metrics(Namespace="ChatBot/FastAPI")["Metrics"]
            names = {metric["MetricName"] for metric in listed}
        assert {"ChatRequest", "ProcessingTime", "RequestCount", "RequestDuration"} <= names
        assert served == {"flask", "fastapi"}
        assert record.json()["turns"] == 2
        assert health.json()["environment"] == "local"
        assert changed.status_code == 200
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C, to the process this test started only
        rest, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert (rest, stderr) == ("", "stopped\n")  # nothing after the banner, no traceback
    try:
        httpx.get(f"{url}/health", timeout=1)
        raise AssertionError("the gateway still answers after stop")
    except httpx.TransportError:
        pass
    logged = [json.loads(line) for line in log_file.read_text().splitlines() if line[:1] == "{"]
    completed = {
        (entry["stack"], entry["path"]) for entry in logged if entry["event"] == "request.completed"
    }
    assert {("flask", "/api/v1/chat"), ("fastapi", "/api/v1/chat")} <= completed


def test_a_gateway_that_cannot_start_is_explained_by_its_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = _devstack(port, tmp_path / "gateway.log")
        out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert out == ""  # no banner
    assert err.startswith("error: the gateway did not start:\n"), err
    assert "address already in use" in err
