"""The rollout controller: the one worker of the whole fleet that holds the lease checks the
running plan at the end of each interval, on the fleet's counters, and applies the verdict.

Every gateway worker runs one. A worker without the lease looks at it every third of a lease
period and takes it once it has expired; the holder renews it as often. A holder that dies
stops renewing, so another worker holds the plan within `lease + lease / 3`: less than two
lease periods. No verdict is applied twice, whoever holds the lease and however late: each is
written conditional on the plan being as the check read it (`RolloutStore.transact`), so a
second controller acting on the same interval (a holder that lost its lease while paused)
finds the plan moved on and does nothing.

A check waits `grace` seconds past the interval's end before it reads the counters, for every
worker's last flush of the interval to land.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from harness.gateway import plan as plans
from harness.gateway.background import cancel
from harness.gateway.fleet import FleetCounters
from harness.gateway.gates import StackWindow
from harness.gateway.plan import Measured, Plan, PlanError
from harness.gateway.rollout import Change, Decided, RolloutState, RolloutStore, RolloutUnavailable

__all__ = ["Controller", "FleetMeasure", "PlanCollector", "Webhooks", "worker_name"]

WEBHOOK_TIMEOUT_SECONDS = 5.0

log = structlog.get_logger("harness.gateway.controller")


class Counters(Protocol):
    """What the fleet served over a window, as a check measures it."""

    async def measure(self, start: float, end: float, prefix: str | None) -> Measured: ...


class FleetMeasure:
    """`Counters` over the fleet's per-second counters in the state table."""

    def __init__(self, fleet: FleetCounters) -> None:
        self._fleet = fleet

    async def measure(self, start: float, end: float, prefix: str | None) -> Measured:
        # The counters are per second: take the seconds nearest the interval's ends (at
        # least one), so a short interval is not shifted by up to a whole second.
        first = round(start)
        window = await self._fleet.window(first, max(round(end), first + 1))
        flask, fastapi = window.stack("flask", prefix), window.stack("fastapi", prefix)
        breaking, compared = window.shadow(prefix)
        return Measured(
            StackWindow(flask.requests, flask.errors, flask.buckets),
            StackWindow(fastapi.requests, fastapi.errors, fastapi.buckets),
            breaking,
            compared,
        )


class PlanCollector(Collector):
    """The plan as this worker last saw it, as metrics: its phase (1 for the current one,
    0 for the others), its step (1-based; 0 without a plan) and its failed checks."""

    def __init__(self, state: RolloutState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        plan = self._state.plan
        phase = GaugeMetricFamily(
            "dualstack_rollout_phase",
            "The rollout plan's phase: 1 for the current one (none without a plan).",
            labels=["phase"],
        )
        for name in plans.PHASES:
            phase.add_metric([name], 1.0 if plan is not None and plan.phase == name else 0.0)
        yield phase
        yield GaugeMetricFamily(
            "dualstack_rollout_step",
            "The rollout plan's current step, counting from 1 (0 without a plan).",
            value=0 if plan is None else plan.step + 1,
        )
        yield GaugeMetricFamily(
            "dualstack_rollout_step_percent",
            "The share the rollout plan's current step sends to FastAPI.",
            value=0.0 if plan is None else plan.percent,
        )
        yield GaugeMetricFamily(
            "dualstack_rollout_failed_checks",
            "Failed checks of the rollout plan's run so far.",
            value=0 if plan is None else plan.failed_checks,
        )


def worker_name() -> str:
    """This worker's name in the lease: its host and process, and a random part, so a
    restarted process that reuses a pid is not taken for the one before."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Webhooks:
    """Tells a plan's `webhook_url` of each phase change, as JSON, in the background: a
    webhook that fails or hangs is logged, never waited for by the rollout."""

    def __init__(self, timeout: float = WEBHOOK_TIMEOUT_SECONDS) -> None:
        self._timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()

    def notify(self, plan: Plan | None, change: Change) -> None:
        """Post `change`'s event when it changed the plan's phase and the plan has a URL."""
        event = change.event
        if plan is None or event is None or plan.spec.webhook_url is None:
            return
        if event.get("phase") == event.get("previous_phase"):
            return
        payload = {**event, "at": change.at, "actor": change.actor, "version": change.new.version}
        task = asyncio.create_task(self._post(plan.spec.webhook_url, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Wait for the posts under way (each is bounded by the timeout)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _post(self, url: str, payload: Mapping[str, Any]) -> None:
        body = json.dumps(payload).encode()
        try:
            await asyncio.to_thread(self._send, url, body)
        except Exception as exc:
            log.warning(
                "rollout.webhook_failed",
                url=url,
                phase=payload.get("phase"),
                error=f"{type(exc).__name__}: {exc}",
            )

    def _send(self, url: str, body: bytes) -> None:
        # The plan's validation admits http(s) URLs only: no file: or custom scheme here.
        request = urllib.request.Request(  # noqa: S310
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=self._timeout) as answer:  # noqa: S310
            answer.read()


class Controller:
    """Holds (or waits for) the lease, and checks the running plan when an interval ends."""

    def __init__(
        self,
        store: RolloutStore,
        state: RolloutState,
        counters: Counters,
        webhooks: Webhooks,
        *,
        lease_seconds: float,
        grace_seconds: float,
        holder: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._state = state
        self._counters = counters
        self._webhooks = webhooks
        self._lease = lease_seconds
        self._grace = grace_seconds
        self.holder = holder or worker_name()
        self._clock = clock
        self._expires: float | None = None
        self._next_lease_turn = 0.0
        self._plan: Plan | None = None
        """The plan as this controller last read or wrote it."""
        self._task: asyncio.Task[None] | None = None

    @property
    def holds_lease(self) -> bool:
        """Whether this worker holds the lease, with a margin for clocks and latency."""
        return self._expires is not None and self._clock() < self._expires - self._margin

    @property
    def _margin(self) -> float:
        return min(1.0, self._lease / 10)

    def health(self) -> dict[str, Any]:
        return {"controller": self.holder, "holds_lease": self.holds_lease}

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("Controller already started")
        self._task = asyncio.create_task(self._run(), name="rollout-controller")

    async def stop(self) -> None:
        """Stop, and give the lease up so another worker takes over at once."""
        task, self._task = self._task, None
        await cancel(task)
        if self._expires is not None:
            self._expires = None
            with contextlib.suppress(Exception):
                await self._store.release_lease(self.holder)

    async def _run(self) -> None:
        # The holder looks at the plan often enough to check soon after each interval ends.
        tick = min(0.25, self._lease / 3)
        while True:
            try:
                await self.turn()
            except RolloutUnavailable as exc:
                log.warning("rollout.controller_store_unavailable", error=str(exc))
            except Exception:
                log.exception("rollout.controller_failed")
            await asyncio.sleep(tick)

    async def turn(self) -> Change | None:
        """One round: without a running plan, nothing (no lease is kept: a deployment
        without a rollout under way pays nothing for the controller); with one, the lease
        kept or looked for, then the plan checked when due; the change a check made, if any.

        The plan comes from this worker's view (`RolloutState.plan`, brought in by the
        rollout's poll whenever a plan event bumps the version) or from this controller's
        own last read and write, whichever is newer: the store is read only when a check is
        due, to confirm it, so the holder costs no DynamoDB read per tick."""
        plan = self._known_plan()
        if plan is None or not plan.running:
            await self._give_up_lease()
            return None
        await self._keep_lease()
        if not self.holds_lease or plan.next_check_at is None:
            return None
        if self._clock() < plan.next_check_at + self._grace:
            return None
        fresh = await self._store.load_plan()
        self._plan = fresh
        if fresh is None or not fresh.running or fresh.next_check_at is None:
            return None
        if self._clock() < fresh.next_check_at + self._grace:
            return None
        return await self.check(fresh)

    def _known_plan(self) -> Plan | None:
        seen, own = self._state.plan, self._plan
        if own is not None and (seen is None or (own.id == seen.id and own.seq >= seen.seq)):
            return own
        return seen

    async def _give_up_lease(self) -> None:
        if self._expires is not None:
            self._expires = None
            self._next_lease_turn = 0.0
            await self._store.release_lease(self.holder)

    async def check(self, plan: Plan) -> Change | None:
        """Check `plan`'s interval and apply the verdict; None when the plan moved on
        meanwhile (another controller, or a person, changed it)."""
        assert plan.next_check_at is not None
        measured = await self._counters.measure(
            plan.window_start, plan.next_check_at, plan.spec.prefix
        )
        shadowing = self._state.current.shadow_percent > 0
        transition: plans.Transition | None = None

        def decide(rollout: Any, stored: Plan | None) -> Decided:
            nonlocal transition
            if stored is None or stored.id != plan.id or stored.seq != plan.seq:
                raise PlanError("the plan changed since it was read")
            transition = plans.check(stored, measured, self._clock(), shadowing=shadowing)
            changes = (
                {}
                if transition.percent is None
                else plans.with_share(rollout, plan.spec.prefix, transition.percent)
            )
            return Decided(changes, transition.plan, transition.event, transition.audited)

        if not self.holds_lease:  # the counters' read took long: the lease may be gone
            return None
        try:
            change = await self._store.transact("controller", decide)
        except PlanError:
            return None
        assert transition is not None
        self._plan = transition.plan
        if transition.audited:
            await self._state.apply(change, transition.plan)
        log.info("rollout.plan_checked", **(change.event or {}))
        self._webhooks.notify(transition.plan, change)
        return change

    async def _keep_lease(self) -> None:
        now = self._clock()
        if now < self._next_lease_turn:
            return
        self._next_lease_turn = now + self._lease / 3
        if self._expires is None:
            # Not the holder: a read first, so a fleet of waiting workers costs reads, not
            # failed conditional writes.
            stored = await self._store.lease()
            if stored is not None and stored[1] > now and stored[0] != self.holder:
                return
        held = self._expires is not None
        self._expires = await self._store.take_lease(self.holder, self._lease)
        if self._expires is not None and not held:
            log.info("rollout.controller_lease_taken", holder=self.holder)
        elif self._expires is None and held:
            log.warning("rollout.controller_lease_lost", holder=self.holder)
