"""`uvicorn gateway:app --workers 2` as real processes: a scrape of `/_gateway/metrics`
counts what every worker of the server served, as it does for gunicorn's workers given
`GATEWAY_METRICS_DIR`, and two single-process gateways started side by side count only
their own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from harness.gateway.workers import PREFIX
from harness.local.emulators import LocalEmulators
from harness.local.processes import ServerProcess, group_members, run_server

ROOT = Path(__file__).resolve().parents[3]
GATEWAY = [sys.executable, "-m", "uvicorn", "gateway:app", "--host=127.0.0.1", "--port={port}"]
GUNICORN = [
    *(sys.executable, "-m", "gunicorn", "gateway:app", "--bind=127.0.0.1:{port}"),
    *("--worker-class=uvicorn.workers.UvicornWorker", "--workers=2"),
]
WORKERS = 2
THREADS = 5
PERCENT = 30.0
SENT = 40
ROUNDS = 25  # of 8 requests, at most, until every worker has served one

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _env(emulators: LocalEmulators) -> dict[str, str]:
    table = f"gw_workers_{uuid.uuid4().hex[:8]}"
    emulators.dynamodb.create_table(table)
    return {
        **emulators.env(),
        "GATEWAY_STATE_TABLE": table,
        "GATEWAY_FASTAPI_PERCENT": str(PERCENT),
        "GATEWAY_WSGI_THREADS": str(THREADS),
        "LOG_LEVEL": "WARNING",
    }


@contextmanager
def _gateway(
    name: str, env: dict[str, str], tmp_path: Path, *options: str, argv: list[str] = GATEWAY
) -> Iterator[ServerProcess]:
    with run_server(
        name,
        [*argv, *options],
        env=env,
        log_path=tmp_path / f"{name}.log",
        ready_path="/_gateway/health",
        cwd=ROOT,
    ) as server:
        yield server


def _scrape(url: str) -> Samples:
    response = httpx.get(f"{url}/_gateway/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def _total(samples: Samples, name: str) -> float:
    return sum(value for (sample, _), value in samples.items() if sample == name)


def _send(url: str, count: int) -> None:
    """`count` requests, each on a connection of its own, eight at a time: connections
    open at once are accepted by both workers."""

    def one(_: int) -> int:
        with httpx.Client(timeout=10) as client:  # a new connection for each
            return client.get(f"{url}/health").status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(one, range(count))) == {200}


def _send_until_all_served(url: str, directory: Path, count: int) -> int:
    """Sends `count` requests, then more, 8 at a time, until each worker has served some
    (which worker accepts a connection is the kernel's choice: on a busy machine one can
    take 40 in a row). Returns how many were sent."""
    sent = count
    _send(url, count)
    for _ in range(ROUNDS):
        _scrape(url)  # the scrape has every worker write its counts first
        served = _served(directory)
        if len(served) == WORKERS and min(served.values()) > 0:
            return sent
        _send(url, 8)
        sent += 8
    raise AssertionError(f"one worker served all {sent} requests: {served}")


def _served(directory: Path) -> dict[int, float]:
    """pid -> requests, by each worker's snapshot in the server's directory."""
    served: dict[int, float] = {}
    for path in directory.glob("*.json"):
        data = json.loads(path.read_text())
        served[data["pid"]] = sum(row[-1] for row in data["counts"]["requests"])
    return served


def _directory(parent: int) -> Path:
    """The directory the workers of the server whose uvicorn parent is `parent` share."""
    (directory,) = Path(tempfile.gettempdir()).glob(f"{PREFIX}{parent}-*")
    return directory


def _remove_directory(parent: int) -> None:
    for directory in Path(tempfile.gettempdir()).glob(f"{PREFIX}{parent}-*"):
        shutil.rmtree(directory, ignore_errors=True)


def _workers(group: int) -> set[int]:
    """The uvicorn workers of the server whose process group is `group`: the processes
    multiprocessing spawned (not the leader, nor multiprocessing's resource tracker)."""
    return {
        int(pid)
        for pid, _ in group_members(group)
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    }


def test_a_scrape_counts_every_worker_even_one_replaced(
    emulators: LocalEmulators, tmp_path: Path
) -> None:
    with ExitStack() as cleanup:
        server = cleanup.enter_context(
            _gateway("workers", _env(emulators), tmp_path, f"--workers={WORKERS}")
        )
        # Left by the server for the next one to sweep; removed here once it has stopped.
        cleanup.callback(_remove_directory, server.pid)
        sent = _send_until_all_served(server.url, _directory(server.pid), SENT)
        for _ in range(3):  # every scrape, whichever worker answers it
            samples = _scrape(server.url)
            assert _total(samples, "dualstack_requests_total") == sent
            assert _total(samples, "dualstack_request_duration_seconds_count") == sent
            # Fleet-wide: the scraping worker's own, not one per worker summed.
            assert samples[("dualstack_fastapi_percent", (("prefix", ""),))] == PERCENT
            # Per worker: summed over the running ones.
            assert samples[("dualstack_wsgi_threads", ())] == WORKERS * THREADS
            assert samples[("dualstack_scrape_workers", (("state", "fresh"),))] == WORKERS
        # Both workers served some (else this test could not tell one worker's count
        # from the server's), and the snapshots agree with the scrapes.
        served = _served(_directory(server.pid))
        assert set(served) == _workers(server.pid), served
        assert len(served) == WORKERS and min(served.values()) > 0, served
        assert sum(served.values()) == sent

        # A worker killed outright: uvicorn starts another, and its counts still count.
        killed = min(served)
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            samples = _scrape(server.url)
            if samples[("dualstack_scrape_workers", (("state", "fresh"),))] == WORKERS:
                break
            assert time.monotonic() < deadline, "uvicorn did not replace the worker"
            time.sleep(0.1)  # polling the server's state: no event to wait on
        assert samples[("dualstack_scrape_workers", (("state", "exited"),))] == 1
        assert _total(samples, "dualstack_requests_total") == sent
        assert samples[("dualstack_wsgi_threads", ())] == WORKERS * THREADS
        _send(server.url, 10)
        assert _total(_scrape(server.url), "dualstack_requests_total") == sent + 10


def test_gunicorn_workers_share_through_the_setting(
    emulators: LocalEmulators, tmp_path: Path
) -> None:
    # gunicorn forks its workers (no multiprocessing parent): only the setting joins them.
    directory = tmp_path / "metrics"
    env = {**_env(emulators), "GATEWAY_METRICS_DIR": str(directory)}
    with _gateway("gunicorn", env, tmp_path, argv=GUNICORN) as server:
        sent = _send_until_all_served(server.url, directory, SENT)
        for _ in range(3):
            samples = _scrape(server.url)
            assert _total(samples, "dualstack_requests_total") == sent
            assert samples[("dualstack_fastapi_percent", (("prefix", ""),))] == PERCENT
            assert samples[("dualstack_wsgi_threads", ())] == WORKERS * THREADS
        served = _served(directory)
        assert len(served) == WORKERS and min(served.values()) > 0, served


def test_single_process_gateways_side_by_side_count_their_own(
    emulators: LocalEmulators, tmp_path: Path
) -> None:
    env = _env(emulators)
    with ExitStack() as stack:
        first, second = (
            stack.enter_context(_gateway(name, env, tmp_path)).url for name in ("one", "two")
        )
        _send(first, 6)
        _send(second, 2)
        assert _total(_scrape(first), "dualstack_requests_total") == 6
        assert _total(_scrape(second), "dualstack_requests_total") == 2
        assert ("dualstack_scrape_workers", (("state", "fresh"),)) not in _scrape(first)
