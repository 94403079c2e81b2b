"""`python -m load_test.stall`: the gateway with its Flask side stalled, measured.

One gateway (one uvicorn worker, the default pool, 50 %) and the emulators, as in the
benchmarks. Two open loops run side by side for the whole run: FastAPI-bound chat turns
(the override header names the stack) and Flask-bound ones. Half-way, as many Flask-bound
turns as the pool has threads are sent with a hung agent call (the emulator answers after
`--hang-s`, past the stack's `AGENT_TIMEOUT_SECONDS`): every thread is stuck, as when
Bedrock hangs. The figures, before the stall and during it:

- FastAPI-bound p50 and p99 (the gateway must not slow them: the ratio of the two p99s);
- Flask-bound answers: before, 200s; during, 503s from the gateway, and how long the
  slowest of them took against `GATEWAY_WSGI_MAX_WAIT_SECONDS`.

Exit status 0 when FastAPI's p99 during the stall is within `--p99-ratio` (1.5) of its
value before it, and every Flask-bound answer during the stall was a shed within the
maximum wait plus `--margin-s`; 1 otherwise; 2 on a set-up error.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.local.loop import fast_loop_factory
from load_test.client import Connection, Request, Response, exchange, parse_origin
from load_test.engine import OpenLoop, run_load
from load_test.scenarios import ChatScenario, Scenario, User
from load_test.stats import Sample, latency
from load_test.targets import Workers, emulators_process, started

BACKEND = "X-Dualstack-Backend"


class Bound:
    """A scenario whose every request names a stack in the override header."""

    def __init__(self, scenario: Scenario, backend: str) -> None:
        self.name = f"{scenario.name}-{backend}"
        self._scenario = scenario
        self._header = (BACKEND, backend)

    def new_user(self, number: int) -> User:
        return _BoundUser(self._scenario.new_user(number), self._header)


class _BoundUser:
    def __init__(self, user: User, header: tuple[str, str]) -> None:
        self._user = user
        self._header = header

    def next_request(self) -> Request:
        request = self._user.next_request()
        return dataclasses.replace(request, headers=(*request.headers, self._header))

    def observe(self, response: Response | None) -> None:
        self._user.observe(response)


def _hung_turn(number: int) -> Request:
    body = json.dumps({"message": f"hung {number} [[emulator:latency={HANG_MS}]]"})
    headers = (("Content-Type", "application/json"), (BACKEND, "flask"))
    return Request("POST", "/api/v1/chat", body.encode(), headers)


HANG_MS = 600_000  # the emulator's longest; the stack's agent timeout (30 s) ends it first


@dataclasses.dataclass(frozen=True)
class Phase:
    fastapi: dict[str, float]
    flask: dict[str, float]
    flask_statuses: dict[str, int]


def _phase(samples: Sequence[Sample], flask: Sequence[Sample], start: float, end: float) -> Phase:
    def within(of: Sequence[Sample]) -> list[Sample]:
        return [s for s in of if start <= s.start_s < end]

    fastapi_ok = [s.latency_s for s in within(samples) if s.status == 200]
    statuses: dict[str, int] = {}
    for sample in within(flask):
        statuses[str(sample.status)] = statuses.get(str(sample.status), 0) + 1
    flask_latency = latency(s.latency_s for s in within(flask))
    return Phase(
        {"requests": len(fastapi_ok), **dataclasses.asdict(latency(fastapi_ok))},
        {"requests": len(within(flask)), **dataclasses.asdict(flask_latency)},
        statuses,
    )


async def _measure(url: str, args: argparse.Namespace, threads: int) -> dict[str, Any]:
    total = 2 * args.phase_s
    fastapi = run_load(
        url,
        Bound(ChatScenario(turns=1), "fastapi"),
        OpenLoop(args.fastapi_rate, duration_s=total),
        timeout_s=60,
    )
    flask = run_load(
        url,
        Bound(ChatScenario(turns=1), "flask"),
        OpenLoop(args.flask_rate, duration_s=total),
        timeout_s=60,
    )
    loads = asyncio.gather(fastapi, flask)
    host, port = parse_origin(url)
    began = time.perf_counter()
    await asyncio.sleep(args.phase_s)
    stalled_at = time.perf_counter() - began
    hung = [Connection(host, port) for _ in range(threads)]
    hung_tasks = [
        asyncio.create_task(exchange(c, _hung_turn(i), timeout_s=600)) for i, c in enumerate(hung)
    ]
    fastapi_result, flask_result = await loads
    for task in hung_tasks:
        task.cancel()
    await asyncio.gather(*hung_tasks, return_exceptions=True)
    for connection in hung:
        connection.close()
    # The loads' clocks start with their runs, a moment after `began`: close enough for
    # phases of seconds; a second of settling after the stall starts is left out.
    before = (args.warmup_s, stalled_at)
    during = (stalled_at + args.settle_s, total)
    result: dict[str, Any] = {}
    for name, (start, end) in (("before", before), ("stalled", during)):
        phase = _phase(fastapi_result.samples, flask_result.samples, start, end)
        result[name] = dataclasses.asdict(phase)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_test.stall", description=__doc__)
    parser.add_argument("--phase-s", type=float, default=20.0, help="before, then stalled")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="left out of 'before'")
    parser.add_argument("--settle-s", type=float, default=1.0, help="left out of 'stalled'")
    parser.add_argument("--fastapi-rate", type=float, default=40.0, help="turns per second")
    parser.add_argument("--flask-rate", type=float, default=10.0, help="turns per second")
    parser.add_argument("--max-wait-s", type=float, default=2.0)
    parser.add_argument("--margin-s", type=float, default=0.5)
    parser.add_argument("--p99-ratio", type=float, default=1.5)
    parser.add_argument("--agent-latency-ms", type=float, default=50.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    workers = Workers(workers=1)
    extra = {"GATEWAY_WSGI_MAX_WAIT_SECONDS": f"{args.max_wait_s:g}"}
    with (
        tempfile.TemporaryDirectory() as logs,
        emulators_process(args.agent_latency_ms, Path(logs)) as emulators,
        started(
            "gateway-50", workers=workers, emulators=emulators, log_dir=Path(logs), extra_env=extra
        ) as target,
        asyncio.Runner(loop_factory=fast_loop_factory()) as runner,
    ):
        result = runner.run(_measure(target.url, args, workers.wsgi_threads))
    before, stalled = result["before"], result["stalled"]
    ratio = stalled["fastapi"]["p99_ms"] / max(before["fastapi"]["p99_ms"], 1e-9)
    shed_only = set(stalled["flask_statuses"]) == {"503"}
    slowest_s = stalled["flask"]["max_ms"] / 1000
    within = slowest_s <= args.max_wait_s + args.margin_s
    result.update(
        settings={**vars(args), "json": str(args.json), "wsgi_threads": workers.wsgi_threads},
        fastapi_p99_ratio=round(ratio, 3),
        verdict={"fastapi_p99_within": ratio <= args.p99_ratio, "flask_shed_in_time": within},
    )
    for name in ("before", "stalled"):
        phase = result[name]
        fast, slow = phase["fastapi"], phase["flask"]
        print(
            f"{name:8} fastapi {fast['requests']:5.0f} ok  p50 {fast['p50_ms']:7.1f} ms  "
            f"p99 {fast['p99_ms']:7.1f} ms | flask-bound {slow['requests']:4.0f}  "
            f"p50 {slow['p50_ms']:7.1f} ms  max {slow['max_ms']:7.1f} ms  {phase['flask_statuses']}"
        )
    print(
        f"fastapi p99 stalled/before: {ratio:.2f} (limit {args.p99_ratio:g}); slowest "
        f"flask-bound answer in the stall {slowest_s:.3f} s (limit {args.max_wait_s:g} s "
        f"+ {args.margin_s:g} s); flask-bound answers in the stall all 503: {shed_only}"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if ratio <= args.p99_ratio and within and shed_only else 1


if __name__ == "__main__":
    sys.exit(main())
