"""One comparison, start to end: the emulators, the client's ceiling, then each target in
turn (only one runs at a time, so none takes CPU from another), each under each load.

The client runs in this process; everything it measures runs in processes of their own.
On a two-core machine they still share the cores, which is why each run records the CPU
the client, the target and the emulators used.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from harness.local.emulators.dynalite import VERSION as DYNALITE_VERSION
from load_test import engine, targets
from load_test.engine import ClosedLoop, Load, OpenLoop
from load_test.progress import ProgressLine, say
from load_test.results import Bench, Measurement, flag_client_bound
from load_test.scenarios import build_scenario
from load_test.stats import by_backend, summarize
from load_test.targets import CEILING, Emulators, Target, Workers


@dataclass(frozen=True)
class Plan:
    """What to measure and how."""

    targets: tuple[str, ...]
    loads: tuple[Load, ...]
    urls: tuple[Target, ...] = ()
    scenario: str = "chat"
    turns: int = 5
    timeout_s: float = 30.0
    agent_latency_ms: float = 200.0
    dynamodb_url: str | None = None
    dynamodb: str = "moto"
    """The local DynamoDB started when no `dynamodb_url` is given: "moto" or "dynalite"."""
    workers: Workers = field(default_factory=Workers)
    ceiling_loads: tuple[Load, ...] = ()
    log_dir: Path = Path("reports/bench/logs")
    log_level: str = "WARNING"
    pause_s: float = 1.0

    def to_json(self) -> dict[str, object]:
        """The settings as recorded in the results."""
        return {
            "targets": list(self.targets),
            "urls": {t.name: t.url for t in self.urls},
            "loads": [_describe(load) for load in self.loads],
            "ceiling_loads": [_describe(load) for load in self.ceiling_loads],
            "scenario": self.scenario,
            "turns_per_conversation": self.turns,
            "timeout_s": self.timeout_s,
            "agent_latency_ms": self.agent_latency_ms,
            "dynamodb": self.dynamodb_url or _STORES[self.dynamodb],
            "workers": self.workers.__dict__,
            "stack_log_level": self.log_level,
        }


_STORES = {
    "moto": "moto (harness emulators)",
    "dynalite": f"dynalite {DYNALITE_VERSION} (Node)",
}


def _describe(load: Load) -> dict[str, object]:
    if isinstance(load, ClosedLoop):
        return {
            "mode": "closed",
            "users": load.users,
            "duration_s": load.duration_s,
            "requests": load.requests,
            "ramp_up_s": load.ramp_up_s,
        }
    return {
        "mode": "open",
        "rate": load.rate,
        "duration_s": load.duration_s,
        "requests": load.requests,
        "max_in_flight": load.max_in_flight,
    }


def machine() -> dict[str, object]:
    """Where the figures come from."""
    return {
        "cores": targets.CORES,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def measure(
    target: Target,
    load: Load,
    plan: Plan,
    *,
    emulators: Emulators | None,
    stream: TextIO | None,
) -> Measurement:
    """Run `load` against `target` once, with CPU accounting around it."""
    scenario = build_scenario(plan.scenario, turns=plan.turns)
    planned = (
        (load.ramp_up_s if isinstance(load, ClosedLoop) else 0) + load.duration_s
        if load.duration_s
        else None
    )
    progress_line = (
        ProgressLine(stream, f"{target.name} @ {load.label}", planned) if stream else None
    )
    before = _cpu(target, emulators)
    started = time.perf_counter()
    result = engine.run(
        target.url, scenario, load, timeout_s=plan.timeout_s, progress=progress_line
    )
    wall = time.perf_counter() - started
    after = _cpu(target, emulators)
    summary = summarize(result.samples, result.elapsed_s)
    if progress_line is not None:
        progress_line.finish(summary)
    cpu = {name: _share(before[name], after[name], wall) for name in after}
    return Measurement(
        target=target.name,
        describe=target.describe,
        mode="closed" if isinstance(load, ClosedLoop) else "open",
        load=float(load.users if isinstance(load, ClosedLoop) else load.rate),
        summary=summary,
        backends=by_backend(result.samples),
        sent=result.sent,
        warmup=result.warmup,
        cpu=cpu,
    )


def _share(before: float | None, after: float | None, wall_s: float) -> float | None:
    if before is None or after is None or wall_s <= 0:
        return None
    return round((after - before) / wall_s, 3)


def _cpu(target: Target, emulators: Emulators | None) -> dict[str, float | None]:
    return {
        "client": time.process_time(),
        "target": target.cpu_seconds(),
        **(emulators.cpu_seconds() if emulators else {}),
    }


def compare(plan: Plan, stream: TextIO | None = None) -> Bench:
    """Measure every target of `plan` under every load; `stream` gets the progress."""
    began = time.perf_counter()
    info = machine()
    ceiling: list[Measurement] = []
    measurements: list[Measurement] = []
    env = {"LOG_LEVEL": plan.log_level}
    with ExitStack() as stack:
        emulators = None
        if any(name != CEILING for name in plan.targets):
            if stream:
                store = plan.dynamodb_url or _STORES[plan.dynamodb]
                say(
                    stream,
                    f"starting the emulators (agent latency {plan.agent_latency_ms:g} ms, "
                    f"DynamoDB: {store})",
                )
            emulators = stack.enter_context(
                targets.emulators_process(
                    plan.agent_latency_ms, plan.log_dir, plan.dynamodb_url, plan.dynamodb
                )
            )
        runs: list[tuple[str, tuple[Load, ...], list[Measurement]]] = []
        if plan.ceiling_loads:
            runs.append((CEILING, plan.ceiling_loads, ceiling))
        runs += [(name, plan.loads, measurements) for name in plan.targets if name != CEILING]
        for name, loads, into in runs:
            with targets.started(
                name,
                workers=plan.workers,
                emulators=emulators,
                log_dir=plan.log_dir,
                extra_env=env,
            ) as target:
                if stream:
                    say(stream, f"{name}: {target.describe}")
                for load in loads:
                    into.append(measure(target, load, plan, emulators=emulators, stream=stream))
                    time.sleep(plan.pause_s)
        for target in plan.urls:
            for load in plan.loads:
                measurements.append(measure(target, load, plan, emulators=None, stream=stream))
    info["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return Bench(
        config=plan.to_json(),
        machine=info,
        ceiling=ceiling,
        measurements=flag_client_bound(measurements, ceiling),
        wall_s=round(time.perf_counter() - began, 1),
    )


__all__ = ["ClosedLoop", "OpenLoop", "Plan", "compare", "measure"]
