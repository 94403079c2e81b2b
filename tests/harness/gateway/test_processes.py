"""`uvicorn gateway:app` as real processes: two gateways sharing one rollout store agree
within a few refresh intervals of a change made through either."""

from __future__ import annotations

import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx

from harness.local.emulators import LocalEmulators
from harness.local.processes import run_server

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "process-token"
REFRESH_SECONDS = 0.5


GATEWAY = [sys.executable, "-m", "uvicorn", "gateway:app", "--host=127.0.0.1", "--port={port}"]


def test_two_gateway_processes_converge_after_a_change(
    emulators: LocalEmulators, tmp_path: Path
) -> None:
    table = f"gw_procs_{uuid.uuid4().hex[:8]}"
    emulators.dynamodb.create_table(table)
    env = {
        **emulators.env(),
        "GATEWAY_STATE_TABLE": table,
        "GATEWAY_ADMIN_TOKEN": TOKEN,
        "GATEWAY_FASTAPI_PERCENT": "0",
        "GATEWAY_REFRESH_SECONDS": str(REFRESH_SECONDS),
        "LOG_LEVEL": "WARNING",
    }
    with ExitStack() as stack:
        first, second = (
            stack.enter_context(
                run_server(
                    name,
                    GATEWAY,
                    env=env,
                    log_path=tmp_path / f"{name}.log",
                    ready_path="/_gateway/rollout",
                    cwd=ROOT,
                )
            ).url
            for name in ("first", "second")
        )
        assert httpx.get(f"{second}/health").headers["x-dualstack-backend"] == "flask"
        changed = httpx.put(
            f"{first}/_gateway/rollout",
            json={"fastapi_percent": 100},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert changed.status_code == 200, changed.text
        # The second converges at its next poll: one interval plus one read. The bound is
        # the point (a gateway that stopped polling, or polled far too rarely, fails it),
        # and 20 intervals leave room for two processes descheduled on a loaded machine.
        within = 20 * REFRESH_SECONDS
        started = time.monotonic()
        while httpx.get(f"{second}/_gateway/rollout").json()["fastapi_percent"] != 100:
            elapsed = time.monotonic() - started
            assert elapsed < within, f"the second gateway did not converge in {within} s"
            time.sleep(0.05)  # polling its state: the other process has no event to wait on
        assert httpx.get(f"{second}/health").headers["x-dualstack-backend"] == "fastapi"
