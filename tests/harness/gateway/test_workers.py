"""The workers' shared counts without a server: the merge rules over snapshot files in a
directory, a scrape's wait for fresh ones, and which processes and directories belong to
a server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Receive, Scope, Send
from structlog.testing import capture_logs

from harness.gateway.admission import Admission
from harness.gateway.metrics import Counts, GatewayMetrics, merge, scrape_workers
from harness.gateway.policy import Rollout
from harness.gateway.workers import (
    PREFIX,
    FreshScrape,
    Siblings,
    Worker,
    is_running,
    process_start,
    server_directory,
    sweep,
)

SERVER = "100-5000"
ME = Worker(10, "7000", SERVER)
LIVE = Worker(11, "7001", SERVER)
EXITED = Worker(12, "7002", SERVER)
RUNNING = {(ME.pid, ME.started), (LIVE.pid, LIVE.started)}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _running(pid: int, started: str) -> bool:
    return (pid, started) in RUNNING


def _samples(metrics: GatewayMetrics) -> Samples:
    text, _ = metrics.render()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def _worker_metrics(requests: int, in_flight: int, service: float) -> GatewayMetrics:
    """A worker that served `requests` from /health, with `in_flight` under way, and a
    pool of 4 threads whose running mean service time is `service`."""
    metrics = GatewayMetrics()
    for _ in range(requests):
        metrics.observe("fastapi", "/health", "GET", 200, 0.003)
    metrics.in_flight["flask"] = in_flight
    metrics.shed["flask"] = requests
    metrics.abandoned = requests
    metrics.shadow_in_flight = in_flight
    metrics.admission = Admission(4, 2.0)
    metrics.admission.service = service
    return metrics


def _write(directory: Path, worker: Worker, counts: Counts, at: float) -> None:
    data: dict[str, Any] = {"pid": worker.pid, "started": worker.started, "server": worker.server}
    data.update(at=at, counts=counts.to_json())
    (directory / f"{worker.pid}-{worker.started}.json").write_text(json.dumps(data))


def _siblings(directory: Path, metrics: GatewayMetrics, **options: Any) -> Siblings:
    return Siblings(directory, ME, lambda: metrics.counts().to_json(), running=_running, **options)


def test_counts_survive_json_whole() -> None:
    metrics = _worker_metrics(3, 1, 0.25)
    metrics.observe("flask", "/api/v1/chat", "POST", 503, 2.0)
    metrics.observe_shadow("flask", 0.01)
    metrics.observe_queue_wait(0.3)
    metrics.shadowed[("/api/v1/chat", "match")] = 2
    metrics.shed_routes[("flask", "/api/v1/chat")] = 1
    metrics.decisions[("fastapi", "random")] = 3
    counts = metrics.counts()
    assert Counts.from_json(json.loads(json.dumps(counts.to_json()))) == counts


@pytest.mark.parametrize(
    "broken",
    [
        {"requests": [["fastapi", "GET", "/health", 3]]},  # a label short
        {"in_flight": [["flask", "many"]]},  # a value that is not a number
        {"queue_wait": 3},  # a number where the buckets belong
        {"captured": {"written": "all"}},
        {"latency": [["fastapi", "/health", 3]]},
    ],
)
def test_counts_refuse_what_they_could_not_render(broken: dict[str, Any]) -> None:
    data = {**Counts().to_json(), **broken}
    with pytest.raises(ValueError):
        Counts.from_json(data)


def test_merge_sums_counters_of_every_worker_and_gauges_of_running_ones() -> None:
    own, live, exited = (
        _worker_metrics(n, n, service).counts() for n, service in ((1, 0.1), (2, 0.3), (4, 0.9))
    )
    merged = merge(own, [live], [exited])
    assert merged == Counts(
        requests={("fastapi", "GET", "/health", "2xx"): 7},
        latency={("fastapi", "/health"): [0, 0, 7] + [0] * 12 + [0.021]},
        shed={"flask": 7},
        abandoned=7,
        in_flight={"flask": 3},
        wsgi_threads=8,
        wsgi_service=pytest.approx(0.2),  # type: ignore[arg-type]
        shadow_in_flight=3,
    )


def test_a_scrape_renders_the_server_from_snapshot_files(tmp_path: Path) -> None:
    metrics = _worker_metrics(1, 1, 0.1)
    metrics.set_rollout(Rollout(25, {"/api/v1/chat": 60}, shadow_percent=5))
    _write(tmp_path, LIVE, _worker_metrics(2, 2, 0.3).counts(), at=50.0)
    _write(tmp_path, EXITED, _worker_metrics(4, 4, 0.9).counts(), at=40.0)
    (tmp_path / f".{LIVE.pid}-half.tmp").write_text("{")  # a write under way: not read
    siblings = _siblings(tmp_path, metrics)
    siblings.since = 45.0  # the scrape started after the exited worker's last write
    metrics.workers = lambda own: scrape_workers(siblings, own)
    samples = _samples(metrics)

    def get(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    health = {"backend": "fastapi", "route": "/health"}
    assert get("dualstack_requests_total", **health, method="GET", status_class="2xx") == 7
    assert get("dualstack_request_duration_seconds_count", **health) == 7
    assert get("dualstack_shed_requests_total", backend="flask") == 7
    assert get("dualstack_wsgi_queue_abandoned_total") == 7
    assert get("dualstack_in_flight_requests", backend="flask") == 3  # not the exited 4
    assert get("dualstack_shadow_in_flight") == 3
    assert get("dualstack_wsgi_threads") == 8
    assert get("dualstack_wsgi_service_seconds") == pytest.approx(0.2)
    # The rollout is the same on every worker: this one's, never summed.
    assert get("dualstack_fastapi_percent", prefix="") == 25
    assert get("dualstack_fastapi_percent", prefix="/api/v1/chat") == 60
    assert get("dualstack_shadow_percent") == 5
    workers = {state: get("dualstack_scrape_workers", state=state) for state in _STATES}
    assert workers == {"fresh": 2, "stale": 0, "exited": 1}

    siblings.since = 50.5  # the running sibling wrote before this scrape: stale
    assert _workers(_samples(metrics)) == {"fresh": 1, "stale": 1, "exited": 1}


_STATES = ("fresh", "stale", "exited")


def _workers(samples: Samples) -> dict[str, float]:
    return {s: samples[("dualstack_scrape_workers", (("state", s),))] for s in _STATES}


def test_a_single_process_renders_exactly_as_before_sharing() -> None:
    metrics = _worker_metrics(2, 1, 0.1)
    metrics.set_rollout(Rollout(10))
    before = metrics.render()

    async def scenario() -> object:
        admin = object()
        async with metrics.share(None, admin) as shown:  # type: ignore[arg-type]
            assert metrics.workers is None
            assert metrics.render() == before
            return shown is admin

    assert asyncio.run(scenario()) is True


def test_sharing_writes_this_workers_counts_until_it_stops(tmp_path: Path) -> None:
    metrics = _worker_metrics(1, 0, 0.0)

    async def scenario() -> None:
        async with metrics.share(str(tmp_path / "shared"), _not_found) as admin:
            assert isinstance(admin, FreshScrape)
            assert metrics.workers is not None
            metrics.observe("flask", "/health", "GET", 200, 0.001)
        assert metrics.workers is None

    asyncio.run(scenario())
    (written,) = (tmp_path / "shared").iterdir()
    assert written.name == f"{os.getpid()}-{Worker.this().started}.json"
    counts = Counts.from_json(json.loads(written.read_text())["counts"])
    assert sum(counts.requests.values()) == 2  # the last one too: written at the stop


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("not called")


def test_a_scrape_waits_for_a_running_sibling_to_write_since_it_started(
    tmp_path: Path,
) -> None:
    metrics = _worker_metrics(1, 0, 0.0)
    siblings = _siblings(tmp_path, metrics, clock=lambda: 100.0, patience_seconds=30)
    _write(tmp_path, LIVE, Counts(), at=99.0)
    _write(tmp_path, EXITED, Counts(), at=1.0)  # exited: never waited for

    async def scenario() -> None:
        refresh = asyncio.create_task(siblings.refresh())
        await asyncio.sleep(0.05)  # the scrape has looked, and polls
        assert not refresh.done()
        _write(tmp_path, LIVE, Counts(), at=100.5)
        await asyncio.wait_for(refresh, 5)  # far within its patience

    asyncio.run(scenario())
    assert siblings.since == 100.0
    assert (tmp_path / f"{ME.pid}-{ME.started}.json").exists()  # this worker's, fresh


def test_a_sibling_that_does_not_write_in_time_is_used_as_last_written(
    tmp_path: Path,
) -> None:
    metrics = _worker_metrics(1, 0, 0.0)
    siblings = _siblings(tmp_path, metrics, clock=lambda: 100.0, patience_seconds=0.05)
    _write(tmp_path, LIVE, _worker_metrics(2, 0, 0.0).counts(), at=99.0)
    metrics.workers = lambda own: scrape_workers(siblings, own)
    with capture_logs() as logs:
        asyncio.run(siblings.refresh())
    assert [(e["event"], e["pids"]) for e in logs] == [("workers.stale_counts", [LIVE.pid])]
    samples = _samples(metrics)
    assert _workers(samples) == {"fresh": 1, "stale": 1, "exited": 0}
    assert sum(v for (n, _), v in samples.items() if n == "dualstack_requests_total") == 3


def test_a_scrape_with_every_sibling_fresh_does_not_wait(tmp_path: Path) -> None:
    metrics = _worker_metrics(1, 0, 0.0)
    siblings = _siblings(tmp_path, metrics, clock=lambda: 100.0, patience_seconds=30)
    _write(tmp_path, LIVE, Counts(), at=100.0)  # written exactly as the scrape started

    async def scenario() -> None:
        await asyncio.wait_for(siblings.refresh(), 5)

    asyncio.run(scenario())


def test_only_a_get_of_the_metrics_makes_the_counts_fresh() -> None:
    refreshed: list[str] = []

    class Counting:
        async def refresh(self) -> None:
            refreshed.append("yes")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        pass

    fresh = FreshScrape(app, Counting())  # type: ignore[arg-type]

    async def scenario() -> None:
        for method, path in (("GET", "/metrics"), ("PUT", "/metrics"), ("GET", "/health")):
            scope = {"type": "http", "method": method, "path": "/_gateway" + path}
            await fresh({**scope, "root_path": "/_gateway"}, _no_receive, _no_send)

    asyncio.run(scenario())
    assert refreshed == ["yes"]


async def _no_receive() -> Any:
    raise AssertionError("not called")


async def _no_send(message: Any) -> None:
    raise AssertionError("not called")


def test_exited_workers_of_another_server_are_pruned_and_this_ones_kept(
    tmp_path: Path,
) -> None:
    previous = Worker(13, "6000", "90-4000")  # exited, started by an earlier parent
    other = Worker(11, "7001", "90-4000")  # running, though another parent's: kept
    for worker in (previous, other, EXITED):
        _write(tmp_path, worker, Counts(), at=1.0)
    killed = tmp_path / f".{_exited_pid()}-abc123.tmp"  # its writer killed while writing
    writing = tmp_path / f".{os.getpid()}-def456.tmp"  # its writer writes
    for temp in (killed, writing):
        temp.write_text("{")
    siblings = _siblings(tmp_path, GatewayMetrics())
    assert siblings.prune() == [killed, tmp_path / "13-6000.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [writing.name, "11-7001.json", "12-7002.json"]
    )


def test_the_directory_is_the_setting_else_the_parents_else_none(tmp_path: Path) -> None:
    assert server_directory("/srv/m", True, ME, tmp_path) == Path("/srv/m")
    assert server_directory("/srv/m", False, ME, tmp_path) == Path("/srv/m")
    assert server_directory(None, True, ME, tmp_path) == tmp_path / f"{PREFIX}{SERVER}"
    # Two gateways started from one shell are single processes: they share nothing.
    assert server_directory(None, False, ME, tmp_path) is None


def test_start_up_sweeps_the_directories_of_servers_that_exited(tmp_path: Path) -> None:
    me = process_start(os.getpid())
    assert me  # Linux: /proc tells
    reused = int(me) + 1  # this pid, but not this process: the parent that had it exited
    names = [
        f"{PREFIX}{os.getpid()}-{me}",  # a running server's
        f"{PREFIX}{os.getpid()}-{reused}",  # an exited one's whose pid was given again
        f"{PREFIX}{_exited_pid()}-1",  # an exited one's
        f"{PREFIX}keep",  # not a server's
        f"{PREFIX}{_exited_pid()}-2",  # this server's own: never
    ]
    for name in names:
        (tmp_path / name).mkdir()
    removed = sweep(tmp_path, keep=tmp_path / names[4])
    assert sorted(removed) == sorted([tmp_path / names[1], tmp_path / names[2]])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names[0], *names[3:]])


def _exited_pid() -> int:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(child.stdout)


@pytest.mark.parametrize(
    ("stat", "expected"),
    [
        ("42 (python) S 1 42 42 0 -1 0 0 0 0 0 1 2 0 0 20 0 3 0 777 0 0", "777"),
        ("42 (a) b (c) R 1 42 42 0 -1 0 0 0 0 0 1 2 0 0 20 0 3 0 778 0 0", "778"),
        ("42 (python) Z 1 42 42 0 -1 0 0 0 0 0 1 2 0 0 20 0 3 0 779 0 0", None),
    ],
)
def test_a_process_start_is_read_after_its_name(
    tmp_path: Path, stat: str, expected: str | None
) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "stat").write_text(stat)
    assert process_start(42, tmp_path) == expected
    assert process_start(43, tmp_path) is None


def test_a_process_runs_while_its_pid_has_the_start_it_had() -> None:
    me = process_start(os.getpid())
    assert me is not None
    assert is_running(os.getpid(), me)
    assert not is_running(os.getpid(), me + "0")  # a later process given this pid
    assert not is_running(_exited_pid(), "1")
    assert not is_running(0, "")
