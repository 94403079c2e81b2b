"""`python -m load_test.clients`: which HTTP client the gateway's upstream mode should pool
its connections with, by measurement (README, "Upstream mode").

Each candidate sends the same `GET /health` requests one after another on one keep-alive
connection, reading each answer as a stream (as the gateway relays it), to the trivial server
(`load_test.ceiling`) in a process of its own; what is measured is this process's CPU per
request (the client's own work; the server's is the same for both) and the wall clock per
request. Rounds alternate which client goes first (ABBA), each after a warm-up; the figures
are each round's, sorted, so the spread shows.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiohttp
import httpx

from harness.local.loop import fast_loop_factory
from load_test.overhead import round_order
from load_test.targets import CEILING, Workers, started

WARM_UP = 200

Client = Callable[[str, int], Awaitable[None]]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def with_aiohttp(url: str, count: int) -> None:
    """`count` streamed GETs through one aiohttp session (the upstream pool's settings)."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for _ in range(count):
            async with session.get(url) as answer:
                async for _chunk in answer.content.iter_any():
                    pass


async def with_httpx(url: str, count: int) -> None:
    """`count` streamed GETs through one httpx AsyncClient."""
    async with httpx.AsyncClient() as client:
        for _ in range(count):
            request = client.build_request("GET", url)
            answer = await client.send(request, stream=True)
            async for _chunk in answer.aiter_raw():
                pass
            await answer.aclose()


CLIENTS: dict[str, Client] = {"aiohttp": with_aiohttp, "httpx": with_httpx}


def measure(url: str, requests: int, rounds: int) -> dict[str, list[tuple[float, float]]]:
    """Per client, each round's (CPU µs, wall µs) per request, rounds in ABBA order."""
    found: dict[str, list[tuple[float, float]]] = {name: [] for name in CLIENTS}
    first, second = CLIENTS
    for number in range(rounds):
        for name in round_order((first, second), number):
            client = CLIENTS[name]

            async def one(client: Client = client) -> tuple[float, float]:
                await client(url, WARM_UP)
                began, cpu = time.perf_counter(), _cpu()
                await client(url, requests)
                wall = (time.perf_counter() - began) / requests * 1e6
                return (_cpu() - cpu) / requests * 1e6, wall

            with asyncio.Runner(loop_factory=fast_loop_factory()) as runner:
                found[name].append(runner.run(one()))
    return found


def report(found: dict[str, list[tuple[float, float]]]) -> str:
    """One line per client: CPU and wall clock per request, each round's, sorted."""
    lines = []
    for name, figures in found.items():
        cpu = ", ".join(f"{c:.0f}" for c in sorted(c for c, _ in figures))
        wall = ", ".join(f"{w:.0f}" for w in sorted(w for _, w in figures))
        lines.append(f"{name:8s} client CPU µs/request: {cpu}   wall µs/request: {wall}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_test.clients", description=__doc__)
    parser.add_argument("--requests", type=int, default=3000, help="per client and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.rounds < 1:
        parser.error("--requests and --rounds must be at least 1")
    with (
        tempfile.TemporaryDirectory() as logs,
        started(CEILING, workers=Workers(workers=1), emulators=None, log_dir=Path(logs)) as server,
    ):
        found = measure(f"{server.url}/health", args.requests, args.rounds)
    print(report(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
