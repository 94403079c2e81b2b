"""The whole fleet's request counts, per second, in the state table: every gateway worker and
replica adds what it counted, and the rollout controller (or a dashboard) sums a window.

`FleetCounters` reads one worker's `GatewayMetrics` in a background task every
`flush_seconds` and adds what changed since its last flush to the item of the current second
with DynamoDB's atomic `ADD`, so workers never overwrite each other's counts; `window()`
reads the seconds of an interval back and sums them into a `Window`. The request path is
untouched: the metrics' dicts are only read, in the flusher's task on the event loop's thread
(the thread that writes them), and never reset, as they are also Prometheus counters.

Layout, in the state table keyed by `session_id` (as in `harness.gateway.rollout`; no key
here is a valid session id, since `#` is outside the id pattern):

- `gateway#fleet#<second>`, one per second (`int(clock())` when a flush ran), holding the
  sum of every worker's flushes in that second, in flat attributes (`ADD` on a nested map's
  path needs the map to exist already), each a number:

  - `n|<backend>|<route>`: requests answered, every status class, plus those shed;
  - `e|<backend>|<route>`: errors: 5xx answers plus requests shed with a 503 by admission;
  - `x|<backend>|<route>`: requests shed by admission (also in `n|` and `e|`);
  - `b<i>|<backend>|<route>`: requests whose latency fell in `LATENCY_BUCKETS[i]` (per
    bucket, not cumulative; `i == len(LATENCY_BUCKETS)` is +Inf); shed ones have none;
  - `s|<backend>|<route>`: the sum of those latencies, in seconds;
  - `o|<route>|<outcome>`: shadow requests by outcome (match, additive, breaking, error,
    dropped);
  - `wb|<worker>` and `wt|<worker>`: gauges, not counters: the WSGI pool's busy threads and
    its threads in that worker (`worker` an id per `FleetCounters`), SET by each flush that
    writes, so a second's fleet-wide pool use is the sum over the workers that wrote in it.
    A flush writes when counts changed or a thread is busy: a pool stuck on hung requests
    still reports, an idle worker does not;
  - `ttl`: epoch seconds, `ttl_seconds` after the item's second, set by its first write:
    the attribute the state table's TTL is on (it is created as the session table is), so
    DynamoDB deletes the item after it.

  `<route>` is the route template (`/api/v1/chat/sessions/{session_id}`, or `unmatched`),
  so there are as many as the apps have routes; it may hold any character, `|` included,
  which is why a backend (`flask`, `fastapi`) must not. Only counters that changed are
  written, so an item holds the series that saw traffic in that second: at most
  `len(LATENCY_BUCKETS) + 5` attributes per backend and route (and two per worker), which
  keeps an item of two backends on a hundred routes well under DynamoDB's 400 KB.

A count lands in the second its flush ran, up to `flush_seconds` after the request finished.
A write that fails (the store down or throttled) loses nothing: its counts stay unflushed and
go with the next flush, into that later second, so after an outage one second holds the
whole outage's counts. Delivery is at least once: `ADD` is not idempotent, so a write that
landed although its reply was lost is added again, by botocore's own retry (when the client
allows one) or by the next flush. Exactly once would take a marker per worker and flush in
every item, a condition on it, and retries pinned to the first attempt's second; a rare
duplicate is cheaper, and skews the rollout's checks little, as they compare rates: each
series' requests, errors and latency buckets go in one write, so a duplicate scales them
together.

`seconds()` reads the fleet's counts per second, every route summed, for a dashboard that
asks for the last hour every few seconds: a second is final once every worker's flush of it
has landed (`final_before()`), and a final second is read once and kept (for an hour and
ten minutes); the others are read again each time.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import structlog

from harness.gateway.background import cancel
from harness.gateway.gates import StackWindow
from harness.gateway.metrics import LATENCY_BUCKETS, GatewayMetrics
from harness.gateway.policy import _matches
from harness.gateway.rollout import RolloutUnavailable
from shared.aws import is_store_down

__all__ = [
    "FLEET_KEY",
    "KEPT_SECONDS",
    "MAX_TERMS",
    "TTL_ATTRIBUTE",
    "FleetCounters",
    "FleetUnavailable",
    "SecondCounts",
    "Window",
]

FLEET_KEY = "gateway#fleet"
"""Each second's item is at `f"{FLEET_KEY}#{second}"`."""

TTL_ATTRIBUTE = "ttl"
"""When an item may be deleted, in epoch seconds."""

MAX_TERMS = 40
"""`ADD` terms per UpdateItem: its expression stays far below DynamoDB's 4 KB (placeholders
keep it short whatever the routes' names)."""

KEPT_SECONDS = 3600 + 600
"""How far before `final_before()` `seconds()` keeps final seconds: an hour, and the longest
step a dashboard aligns its hour to (`harness.gateway.stats`), so all of it is kept."""

_FINAL_AFTER = 2.0
"""Seconds past a flush period after which a second's item is taken to be final: every
worker's last flush of it has run, and its write has landed, as one does within
milliseconds. A write slower than that (timed out and retried) still lands, but a reader
that kept the second does not see it."""

_BATCH = 100
"""Keys per BatchGetItem, DynamoDB's maximum."""

_BUCKETS = len(LATENCY_BUCKETS) + 1

_STATUS_ERROR = "5xx"

Item = dict[str, Any]

log = structlog.get_logger("harness.gateway.fleet")


class FleetUnavailable(RolloutUnavailable):
    """The fleet's counts could not be read from the state table; retry later.

    A kind of `RolloutUnavailable`: the controller treats both as a store it cannot read."""


Series = tuple[str, str]
"""(backend, route template), or (route template, outcome) for shadow outcomes."""


@dataclass(frozen=True)
class Window:
    """The whole fleet's counts over the seconds `start <= second < end`, summed.

    `items` is how many of those seconds had an item (zero: no worker flushed anything)."""

    start: int
    end: int
    items: int = 0
    requests: Mapping[Series, int] = field(default_factory=dict)
    """(backend, route) -> requests, shed ones included."""
    errors: Mapping[Series, int] = field(default_factory=dict)
    """(backend, route) -> 5xx answers and shed requests."""
    latency: Mapping[Series, tuple[int, ...]] = field(default_factory=dict)
    """(backend, route) -> per-bucket latency counts."""
    seconds: Mapping[Series, float] = field(default_factory=dict)
    """(backend, route) -> the sum of latencies."""
    shadowed: Mapping[Series, int] = field(default_factory=dict)
    """(route, outcome) -> shadow requests."""
    shed: Mapping[Series, int] = field(default_factory=dict)
    """(backend, route) -> requests shed by admission (in `requests` and `errors` too)."""
    pool: Mapping[int, Mapping[str, tuple[int, int]]] = field(default_factory=dict)
    """second -> worker -> (busy threads, threads) of the WSGI pool, as the worker last set
    them in that second; only seconds and workers that wrote any."""

    def stack(self, backend: str, prefix: str | None = None) -> StackWindow:
        """`backend`'s requests, errors (5xx and shed) and per-bucket latency counts
        (`len(LATENCY_BUCKETS) + 1`, +Inf last; zeros when none) on the route templates
        under `prefix` (None or `/`: all of them; else the template equal to it or below it
        on a segment boundary), as the rollout's gates take them."""
        buckets = [0] * _BUCKETS
        for (b, route), counts in self.latency.items():
            if b == backend and _under(prefix, route):
                buckets = [a + c for a, c in zip(buckets, counts, strict=True)]
        return StackWindow(
            requests=_total(self.requests, backend, prefix),
            errors=_total(self.errors, backend, prefix),
            buckets=tuple(buckets),
        )

    def shadow(self, prefix: str | None = None) -> tuple[int, int]:
        """(breaking, compared) shadow requests on the routes under `prefix`: compared are
        those judged (match, additive, breaking), not those that errored or were dropped."""
        outcomes: defaultdict[str, int] = defaultdict(int)
        for (route, outcome), count in self.shadowed.items():
            if _under(prefix, route):
                outcomes[outcome] += count
        breaking = outcomes["breaking"]
        return breaking, outcomes["match"] + outcomes["additive"] + breaking

    def sheds(self, backend: str, prefix: str | None = None) -> int:
        """`backend`'s requests shed by admission on the route templates under `prefix`."""
        return _total(self.shed, backend, prefix)

    def pool_use(self) -> dict[int, tuple[int, int]]:
        """second -> the fleet's (busy threads, threads) of the WSGI pool: the sums over the
        workers that wrote in it."""
        return {
            second: (
                sum(busy for busy, _ in workers.values()),
                sum(threads for _, threads in workers.values()),
            )
            for second, workers in sorted(self.pool.items())
        }

    def to_json(self) -> dict[str, Any]:
        """The window as JSON-ready data: per backend and route, then shadow outcomes per
        route (sheds and the pool aside, as before they were counted)."""
        stacks: dict[str, dict[str, Any]] = {}
        series = {*self.requests, *self.errors, *self.latency, *self.seconds}
        for backend, route in sorted(series):
            stacks.setdefault(backend, {})[route] = {
                "requests": self.requests.get((backend, route), 0),
                "errors": self.errors.get((backend, route), 0),
                "buckets": list(self.latency.get((backend, route), (0,) * _BUCKETS)),
                "seconds": self.seconds.get((backend, route), 0.0),
            }
        shadow: dict[str, dict[str, int]] = {}
        for (route, outcome), count in sorted(self.shadowed.items()):
            shadow.setdefault(route, {})[outcome] = count
        return {
            "start": self.start,
            "end": self.end,
            "items": self.items,
            "stacks": stacks,
            "shadow": shadow,
        }


@dataclass(frozen=True)
class SecondCounts:
    """The whole fleet's counts in one second, every route summed: what a dashboard draws.

    `items` is 1 when the second has an item, else 0 (no worker wrote in it)."""

    second: int
    items: int = 0
    requests: Mapping[str, int] = field(default_factory=dict)
    """backend -> requests, shed ones included."""
    errors: Mapping[str, int] = field(default_factory=dict)
    """backend -> 5xx answers and shed requests."""
    shed: Mapping[str, int] = field(default_factory=dict)
    """backend -> requests shed by admission."""
    latency: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    """backend -> per-bucket latency counts (`len(LATENCY_BUCKETS) + 1`, +Inf last)."""
    shadowed: Mapping[str, int] = field(default_factory=dict)
    """outcome -> shadow requests."""
    pool: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """worker -> (busy threads, threads) of its WSGI pool; the workers that wrote."""

    @classmethod
    def of(cls, window: Window) -> SecondCounts:
        """A one-second window's counts, its routes summed."""
        requests: defaultdict[str, int] = defaultdict(int)
        errors: defaultdict[str, int] = defaultdict(int)
        shed: defaultdict[str, int] = defaultdict(int)
        latency: dict[str, list[int]] = {}
        shadowed: defaultdict[str, int] = defaultdict(int)
        for (backend, _), count in window.requests.items():
            requests[backend] += count
        for (backend, _), count in window.errors.items():
            errors[backend] += count
        for (backend, _), count in window.shed.items():
            shed[backend] += count
        for (backend, _), counts in window.latency.items():
            summed = latency.setdefault(backend, [0] * _BUCKETS)
            for i, count in enumerate(counts):
                summed[i] += count
        for (_, outcome), count in window.shadowed.items():
            shadowed[outcome] += count
        return cls(
            second=window.start,
            items=window.items,
            requests=dict(requests),
            errors=dict(errors),
            shed=dict(shed),
            latency={backend: tuple(counts) for backend, counts in latency.items()},
            shadowed=dict(shadowed),
            pool=dict(window.pool.get(window.start, {})),
        )


def _under(prefix: str | None, route: str) -> bool:
    return prefix is None or _matches(prefix, route)


def _total(counts: Mapping[Series, int], backend: str, prefix: str | None) -> int:
    return sum(n for (b, route), n in counts.items() if b == backend and _under(prefix, route))


# --- the item codec: pure -------------------------------------------------------------------


def _key(second: int) -> Item:
    return {"session_id": {"S": f"{FLEET_KEY}#{second}"}}


def _second_of(item: Item) -> int | None:
    """The second an item is for; None for an item that is no second's."""
    _, _, second = item.get("session_id", {}).get("S", "").rpartition("#")
    return int(second) if second.isascii() and second.isdigit() else None


def _totals(metrics: GatewayMetrics) -> dict[str, float]:
    """Every counter this worker has, by attribute name, since it started."""
    totals: defaultdict[str, float] = defaultdict(int)
    for (backend, _method, route, status_class), count in metrics.requests.items():
        totals[f"n|{backend}|{route}"] += count
        if status_class == _STATUS_ERROR:
            totals[f"e|{backend}|{route}"] += count
    for (backend, route), count in metrics.shed_routes.items():
        totals[f"n|{backend}|{route}"] += count
        totals[f"e|{backend}|{route}"] += count
        totals[f"x|{backend}|{route}"] += count
    for (backend, route), counts in metrics.latency.items():
        for i, in_bucket in enumerate(counts[:-1]):
            totals[f"b{i}|{backend}|{route}"] += int(in_bucket)
        totals[f"s|{backend}|{route}"] += counts[-1]
    for (route, outcome), count in metrics.shadowed.items():
        totals[f"o|{route}|{outcome}"] += count
    return totals


def _series(name: str) -> str:
    """The series an attribute belongs to: a write carries whole series, so a write counted
    twice or not at all moves a series' requests, errors and latencies together."""
    kind, rest = name.split("|", 1)
    return f"o|{rest.rsplit('|', 1)[0]}" if kind == "o" else rest


def _chunks(deltas: Mapping[str, float]) -> list[dict[str, float]]:
    """The deltas in groups of at most `MAX_TERMS`, never splitting a series (one has at
    most `len(LATENCY_BUCKETS) + 5` counters, far fewer than `MAX_TERMS`)."""
    by_series: defaultdict[str, dict[str, float]] = defaultdict(dict)
    for name in sorted(deltas):
        by_series[_series(name)][name] = deltas[name]
    chunks: list[dict[str, float]] = []
    for terms in by_series.values():
        if not chunks or len(chunks[-1]) + len(terms) > MAX_TERMS:
            chunks.append({})
        chunks[-1].update(terms)
    return chunks


def _number(value: float) -> Item:
    # Fixed-point text: DynamoDB numbers are decimal, and "1e-07" is best not relied on.
    if isinstance(value, int):
        return {"N": str(value)}
    return {"N": format(Decimal(repr(value)), "f")}


def _update(
    table: str,
    second: int,
    terms: Mapping[str, float],
    expires_at: int,
    gauges: Mapping[str, int] | None = None,
) -> Item:
    """The UpdateItem adding `terms` to the second's item and setting `gauges` in it,
    setting its TTL on first write."""
    names = {"#exp": TTL_ATTRIBUTE}
    values = {":exp": {"N": str(expires_at)}}
    sets = ["#exp = if_not_exists(#exp, :exp)"]
    for i, (name, value) in enumerate((gauges or {}).items()):
        names[f"#g{i}"] = name
        values[f":g{i}"] = _number(value)
        sets.append(f"#g{i} = :g{i}")
    adds: list[str] = []
    for i, (name, delta) in enumerate(terms.items()):
        names[f"#a{i}"] = name
        values[f":a{i}"] = _number(delta)
        adds.append(f"#a{i} :a{i}")
    expression = f"SET {', '.join(sets)}"
    if adds:
        expression += f" ADD {', '.join(adds)}"
    return {
        "TableName": table,
        "Key": _key(second),
        "UpdateExpression": expression,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


def _window_from(start: int, end: int, items: Iterable[Item]) -> Window:
    """The items' counters summed; attributes this version does not know are skipped."""
    requests: defaultdict[Series, int] = defaultdict(int)
    errors: defaultdict[Series, int] = defaultdict(int)
    latency: dict[Series, list[int]] = {}
    seconds: defaultdict[Series, float] = defaultdict(float)
    shadowed: defaultdict[Series, int] = defaultdict(int)
    shed: defaultdict[Series, int] = defaultdict(int)
    pool: dict[int, dict[str, tuple[int, int]]] = {}
    found = 0
    for item in items:
        found += 1
        second = _second_of(item)
        for name, value in item.items():
            gauge = _gauge(name)
            if gauge is not None:
                # Busy and threads are set together: one without the other is not a reading.
                busy, threads = item.get(f"wb|{gauge}"), item.get(f"wt|{gauge}")
                if second is not None and busy is not None and threads is not None:
                    reading = (int(Decimal(busy["N"])), int(Decimal(threads["N"])))
                    pool.setdefault(second, {})[gauge] = reading
                continue
            parsed = _parsed(name)
            if parsed is None:
                continue
            kind, series, bucket = parsed
            number = Decimal(value["N"])
            if kind == "n":
                requests[series] += int(number)
            elif kind == "e":
                errors[series] += int(number)
            elif kind == "s":
                seconds[series] += float(number)
            elif kind == "o":
                shadowed[series] += int(number)
            elif kind == "x":
                shed[series] += int(number)
            else:
                latency.setdefault(series, [0] * _BUCKETS)[bucket] += int(number)
    return Window(
        start=start,
        end=end,
        items=found,
        requests=dict(requests),
        errors=dict(errors),
        latency={series: tuple(counts) for series, counts in latency.items()},
        seconds=dict(seconds),
        shadowed=dict(shadowed),
        shed=dict(shed),
        pool=pool,
    )


def _parsed(name: str) -> tuple[str, Series, int] | None:
    """(kind, series, latency bucket) of a counter's attribute name; None for another."""
    kind, sep, rest = name.partition("|")
    if not sep or "|" not in rest:
        return None
    if kind == "o":
        route, outcome = rest.rsplit("|", 1)
        return kind, (route, outcome), 0
    backend, route = rest.split("|", 1)
    if kind in ("n", "e", "s", "x"):
        return kind, (backend, route), 0
    if kind.startswith("b") and kind[1:].isdigit() and int(kind[1:]) < _BUCKETS:
        return "b", (backend, route), int(kind[1:])
    return None


def _gauge(name: str) -> str | None:
    """The worker whose pool reading `name` holds (its `wb|` half); None for another."""
    kind, sep, worker = name.partition("|")
    return worker if kind == "wb" and sep else None


# --- the counters ---------------------------------------------------------------------------


class FleetCounters:
    """One worker's counts, added to the fleet's per-second items every `flush_seconds`, and
    the fleet's counts read back over a window or per second; over an aioboto3 client (or a
    fake with its methods). `worker` names this one's WSGI pool readings (default: the
    process id and a random suffix, so a restarted worker is a new one)."""

    def __init__(
        self,
        client: Any,
        table: str,
        metrics: GatewayMetrics,
        *,
        flush_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
        ttl_seconds: int = 86400,
        worker: str | None = None,
    ) -> None:
        if not flush_seconds > 0:
            raise ValueError("flush_seconds must be positive")
        self.worker = worker or f"{os.getpid()}-{secrets.token_hex(3)}"
        self._client = client
        self._table = table
        self._metrics = metrics
        self._flush_seconds = flush_seconds
        self._clock = clock
        self._ttl_seconds = ttl_seconds
        self._flushed: dict[str, float] = {}
        """Each counter's total as of the last write of it that landed."""
        # One flush at a time: two reading the same `_flushed` would both write its deltas.
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self._final: dict[int, SecondCounts] = {}
        """Final seconds already read, for `seconds()`."""

    @property
    def clock(self) -> Callable[[], float]:
        """The epoch clock the counts are filed by."""
        return self._clock

    def start(self) -> None:
        """Flush every `flush_seconds` in a background task (call it in the running loop)."""
        if self._task is not None:
            raise RuntimeError("FleetCounters already started")
        self._task = asyncio.create_task(self._run(), name="fleet-flush")

    async def stop(self) -> None:
        """Stop the task, then flush what is left. Never raises (safe twice, or unstarted)."""
        task, self._task = self._task, None
        await cancel(task)
        try:
            await self.flush()
        except Exception:
            log.exception("fleet.final_flush_failed")

    async def flush(self) -> int:
        """Add the counts since the last flush to the current second's item, and set this
        worker's WSGI pool readings in it; returns how many counters were written (the
        readings aside). A write that fails is logged, and its counts go with the next
        flush; nothing is written when no count changed and no WSGI thread is busy."""
        async with self._lock:
            totals = _totals(self._metrics)
            deltas = {
                name: total - self._flushed.get(name, 0)
                for name, total in totals.items()
                if total != self._flushed.get(name, 0)
            }
            admission = self._metrics.admission
            gauges = (
                {}
                if admission is None
                else {f"wb|{self.worker}": admission.busy, f"wt|{self.worker}": admission.threads}
            )
            if not deltas and not (admission is not None and admission.busy):
                return 0
            second = int(self._clock())
            written = 0
            # The readings go with the first write: set, not added, so a repeat is harmless.
            for terms in _chunks(deltas) or [{}]:
                request = _update(self._table, second, terms, second + self._ttl_seconds, gauges)
                gauges = {}
                try:
                    await self._client.update_item(**request)
                except Exception as exc:
                    self._failed(exc, pending=len(deltas) - written)
                    # The rest waits too: a store that is down would only time out again.
                    return written
                for name in terms:
                    self._flushed[name] = totals[name]
                written += len(terms)
            if self._failures:
                log.info("fleet.flush_recovered", after_failures=self._failures)
                self._failures = 0
            return written

    async def window(self, start: float, end: float) -> Window:
        """The fleet's counts over the seconds `int(start) <= second < int(end)`, summed;
        seconds without an item count zero. Raises `FleetUnavailable` when the state table
        cannot be read."""
        first, last = int(start), int(end)
        keys = [_key(second) for second in range(first, last)]
        items: list[Item] = []
        for offset in range(0, len(keys), _BATCH):
            items += await self._batch_get(keys[offset : offset + _BATCH])
        return _window_from(first, max(first, last), items)

    def final_before(self) -> int:
        """The first second whose item may still change: those before it are final (every
        worker's flush of them has run and landed, `flush_seconds` and a little after)."""
        return math.floor(self._clock() - (self._flush_seconds + _FINAL_AFTER))

    async def seconds(self, start: int, end: int) -> dict[int, SecondCounts]:
        """The fleet's counts in each second `start <= second < end`, every route summed
        (`items == 0`: no worker wrote in it). Final seconds (before `final_before()`) are
        read once and kept, back to `KEPT_SECONDS` before it; the others are read each
        time. Raises `FleetUnavailable` when the state table cannot be read.

        A count that lands late (a write retried, or a flush after an outage) lands in a
        later second, the one its flush ran in: a final second is final."""
        final = self.final_before()
        horizon = final - KEPT_SECONDS
        for dropped in [second for second in self._final if second < horizon]:
            del self._final[dropped]
        wanted = range(start, end)
        missing = [second for second in wanted if second not in self._final]
        read = {second: SecondCounts(second) for second in missing}
        for offset in range(0, len(missing), _BATCH):
            keys = [_key(second) for second in missing[offset : offset + _BATCH]]
            for item in await self._batch_get(keys):
                at = _second_of(item)
                if at is not None and at in read:
                    read[at] = SecondCounts.of(_window_from(at, at + 1, [item]))
        for second, counts in read.items():
            if horizon <= second < final:
                self._final[second] = counts
        answer: dict[int, SecondCounts] = {}
        for second in wanted:
            kept = read.get(second) or self._final.get(second)
            # None only for a kept second a call with a later clock dropped meanwhile.
            answer[second] = kept or SecondCounts(second)
        return answer

    def _failed(self, exc: Exception, *, pending: int) -> None:
        self._failures += 1
        error = f"{type(exc).__name__}: {exc}"
        if is_store_down(exc):
            log.warning(
                "fleet.flush_failed",
                error=error,
                pending=pending,
                consecutive_failures=self._failures,
            )
        else:
            # Not the store being away: a bug or a refused request, worth an alert.
            log.error(
                "fleet.flush_failed",
                error=error,
                pending=pending,
                consecutive_failures=self._failures,
                exc_info=exc,
            )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            try:
                # Shielded: cancelled by stop() mid-write, the write still finishes and is
                # booked, so stop()'s own flush does not send the same counts again.
                await asyncio.shield(self.flush())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("fleet.flush_crashed")

    async def _batch_get(self, keys: list[Item]) -> list[Item]:
        items: list[Item] = []
        pending: Item = {self._table: {"Keys": keys, "ConsistentRead": True}}
        for attempt in range(5):
            try:
                reply = await self._client.batch_get_item(RequestItems=pending)
            except Exception as exc:
                if is_store_down(exc):
                    raise FleetUnavailable(f"fleet counts unavailable: {exc}") from exc
                raise
            items += reply.get("Responses", {}).get(self._table, [])
            pending = reply.get("UnprocessedKeys") or {}
            if not pending:
                return items
            # DynamoDB returns unprocessed keys when throttled: back off before asking again.
            await asyncio.sleep(0.05 * 2**attempt)
        raise FleetUnavailable("fleet counts: keys kept coming back unprocessed")
