"""The rollout controller and the plan's admin API over a real RolloutStore on the moto
DynamoDB, with an injected clock and counters: the lease, when checks happen and what they
apply, that no verdict is applied twice, the admin's plan endpoints, named tokens, versions,
the webhook and the plan's metrics. The same through real gateway processes and real traffic
is in test_rollout_plan_processes.py."""

from __future__ import annotations

import asyncio
import json
import threading
from bisect import bisect_left
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.routing import Mount
from structlog.testing import capture_logs

from harness.gateway import plan as plans
from harness.gateway.admin import build_admin
from harness.gateway.controller import Controller, FleetMeasure, PlanCollector, Webhooks
from harness.gateway.fleet import Window
from harness.gateway.gates import StackWindow
from harness.gateway.metrics import LATENCY_BUCKETS
from harness.gateway.plan import Measured, Plan, PlanSpec
from harness.gateway.policy import Rollout
from harness.gateway.rollout import (
    PLAN_KEY,
    Decided,
    RolloutState,
    RolloutStore,
    VersionConflict,
)

from .conftest import OpenClient

T0 = 1_800_000_000.0
LEASE = 6.0
GRACE = 2.0
TOKENS = {"alice": "alice-token", "ci": "ci-token"}


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


def window(requests: int, errors: int = 0, latency: float = 0.01) -> StackWindow:
    buckets = [0] * (len(LATENCY_BUCKETS) + 1)
    buckets[bisect_left(LATENCY_BUCKETS, latency)] = requests
    return StackWindow(requests, errors, tuple(buckets))


@dataclass
class Counters:
    """What the fleet served, as the test says; records each window asked for."""

    measured: Measured = field(default_factory=lambda: Measured(window(100), window(100)))
    asked: list[tuple[float, float, str | None]] = field(default_factory=list)

    async def measure(self, start: float, end: float, prefix: str | None) -> Measured:
        self.asked.append((start, end, prefix))
        return self.measured


SPEC = PlanSpec(steps=(10, 50, 100), interval_seconds=10, min_requests=20, max_failed_checks=2)


async def start_plan(
    store: RolloutStore, spec: PlanSpec, clock: Clock, state: RolloutState | None = None
) -> None:
    """A plan started as the admin API starts one; seen by `state` at once (as by the
    worker that made it), where others see it at their next poll."""
    started: list[Plan] = []

    def decide(rollout: Rollout, stored: Any) -> Decided:
        moved = plans.start(spec, rollout, clock(), stored)
        started[:] = [moved.plan]
        return Decided(
            plans.with_share(rollout, spec.prefix, moved.plan.percent), moved.plan, moved.event
        )

    change = await store.transact("alice", decide)
    if state is not None:
        await state.apply(change, started[0])


@asynccontextmanager
async def controllers(
    open_client: OpenClient, table: str, clock: Clock, counters: Counters, count: int = 1
) -> AsyncIterator[tuple[RolloutStore, RolloutState, list[Controller]]]:
    async with open_client() as client:
        store = RolloutStore(client, table, initial=Rollout(0), clock=clock)
        state = RolloutState(store, interval=60)
        await state.start()
        made = [
            Controller(
                store,
                state,
                counters,
                Webhooks(),
                lease_seconds=LEASE,
                grace_seconds=GRACE,
                holder=f"worker-{n}",
                clock=clock,
            )
            for n in range(count)
        ]
        try:
            yield store, state, made
        finally:
            await state.stop()


def test_the_lease_holder_checks_once_the_interval_and_its_grace_are_over(
    rollout_table: str, open_client: OpenClient
) -> None:
    clock, counters = Clock(), Counters()

    async def scenario() -> None:
        async with controllers(open_client, rollout_table, clock, counters) as (store, state, cs):
            (controller,) = cs
            await start_plan(store, SPEC, clock, state)
            assert (await store.load()).fastapi_percent == 10
            clock.now = T0 + 10 + GRACE - 0.01  # the interval is over, its grace not yet
            assert await controller.turn() is None and counters.asked == []
            clock.now = T0 + 10 + GRACE
            change = await controller.turn()
            assert change is not None and change.actor == "controller"
            assert counters.asked == [(T0, T0 + 10, None)]  # the interval, exactly
            assert (change.old.fastapi_percent, change.new.fastapi_percent) == (10, 50)
            assert state.current.fastapi_percent == 50  # routed by at once here
            assert state.plan is not None and state.plan.step == 1
            (latest, *_) = await store.history()
            assert latest.event is not None and latest.event["check"]["verdict"] == "passed"
            gates = {g["name"]: g for g in latest.event["check"]["gates"]}
            assert gates["error_rate"]["measured"]["fastapi_requests"] == 100
            assert gates["p99_latency"]["thresholds"]["max_p99_ratio"] == 1.5
            # The next interval follows on the plan's cadence, not from the late check.
            plan = await store.load_plan()
            assert plan is not None
            assert (plan.window_start, plan.next_check_at) == (T0 + 10, T0 + 20)
            assert await controller.turn() is None  # not due again

    asyncio.run(scenario())


def test_one_controller_holds_the_lease_and_another_takes_it_within_two_periods(
    rollout_table: str, open_client: OpenClient
) -> None:
    clock = Clock()

    async def scenario() -> None:
        async with controllers(open_client, rollout_table, clock, Counters(), 2) as (s, st, cs):
            first, second = cs
            assert await first.turn() is None and await s.lease() is None  # no plan: no lease
            await start_plan(s, PlanSpec(steps=(10, 100), interval_seconds=3600), clock, st)
            await first.turn()
            await second.turn()
            assert (first.holds_lease, second.holds_lease) == (True, False)
            assert (await s.lease()) == ("worker-0", T0 + LEASE)
            # The holder renews while it lives: the other never gets in.
            for _ in range(int(3 * LEASE / 0.25)):
                clock.now += 0.25
                await first.turn()
                await second.turn()
                assert (first.holds_lease, second.holds_lease) == (True, False)
            # The holder dies (no more turns): the other takes over after the lease
            # expires, and within two lease periods of the holder's death.
            died = clock.now
            while not second.holds_lease:
                clock.now += 0.25
                await second.turn()
                assert clock.now - died <= 2 * LEASE
            assert clock.now - died > LEASE - first_renewal_slack()
            assert (await s.lease()) is not None and (await s.lease())[0] == "worker-1"  # type: ignore[index]
            # A stopped holder gives the lease up at once.
            await second.stop()
            assert await s.lease() is None

    asyncio.run(scenario())


def first_renewal_slack() -> float:
    # The holder renews every third of the lease: its last renewal was at most that long
    # before it died, so the lease may run out that much sooner after the death.
    return LEASE / 3 + 0.25


def test_a_verdict_is_applied_once_however_many_times_it_is_attempted(
    rollout_table: str, open_client: OpenClient
) -> None:
    clock = Clock()

    async def scenario() -> None:
        async with controllers(open_client, rollout_table, clock, Counters()) as (s, st, cs):
            (controller,) = cs
            await start_plan(s, SPEC, clock, st)
            await controller.turn()  # takes the lease
            read = await s.load_plan()
            assert read is not None
            clock.now = T0 + 3  # within the lease; check() applies whatever is due or not
            first = await controller.check(read)
            # A controller acting on the same read again (a holder that was paused, or a
            # second one after a handover) finds the plan moved on: nothing applied.
            second = await controller.check(read)
            assert first is not None and second is None
            rollout = await s.load()
            assert (rollout.fastapi_percent, rollout.version) == (50, first.new.version)
            checks = [c for c in await s.history() if c.event and c.event["action"] == "check"]
            assert len(checks) == 1

    asyncio.run(scenario())


def test_no_lease_no_check(rollout_table: str, open_client: OpenClient) -> None:
    clock = Clock()

    async def scenario() -> None:
        async with controllers(open_client, rollout_table, clock, Counters(), 2) as (s, st, cs):
            holder, other = cs
            await start_plan(s, SPEC, clock, st)
            while clock.now < T0 + 10 + GRACE - 1:  # the holder lives, renewing its lease
                await holder.turn()
                await other.turn()
                clock.now += 1
            clock.now = T0 + 10 + GRACE
            assert await other.turn() is None  # due, but not its lease
            assert (await s.load()).fastapi_percent == 10
            assert await holder.turn() is not None

    asyncio.run(scenario())


def test_a_manual_change_of_the_plans_share_pauses_it_and_other_changes_do_not(
    rollout_table: str, open_client: OpenClient
) -> None:
    clock = Clock()

    async def scenario() -> None:
        async with controllers(open_client, rollout_table, clock, Counters()) as (s, _, _cs):
            await start_plan(s, SPEC, clock)
            shadow = await s.update(shadow_percent=20, actor="alice")
            assert shadow.event is None
            assert (await s.load_plan()).phase == "progressing"  # type: ignore[union-attr]
            other = await s.update(routes={"/api": 30}, actor="alice")
            assert other.event is None  # another prefix's share: not the plan's
            moved = await s.update(fastapi_percent=0, actor="bob")
            plan = await s.load_plan()
            assert plan is not None and plan.phase == "paused"
            assert plan.reason == "paused: bob changed the share"
            assert moved.event is not None and moved.event["action"] == "paused"
            assert moved.event["previous_phase"] == "progressing"
            assert moved.new.fastapi_percent == 0  # the change itself is made

    asyncio.run(scenario())


def test_a_change_based_on_an_old_version_is_refused(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with controllers(open_client, rollout_table, Clock(), Counters()) as (s, _, _cs):
            first = await s.update(fastapi_percent=5, actor="alice", version=0)
            with pytest.raises(VersionConflict) as refused:
                await s.update(fastapi_percent=7, actor="bob", version=0)
            assert (refused.value.based_on, refused.value.current) == (0, first.new.version)
            assert (await s.load()).fastapi_percent == 5

    asyncio.run(scenario())


# --- the admin API ----------------------------------------------------------------------------


@dataclass
class Admin:
    http: httpx.AsyncClient
    store: RolloutStore
    state: RolloutState
    clock: Clock


@asynccontextmanager
async def admin_api(
    open_client: OpenClient, table: str, webhooks: Webhooks | None = None
) -> AsyncIterator[Admin]:
    clock = Clock()
    async with open_client() as client:
        store = RolloutStore(client, table, initial=Rollout(0), clock=clock)
        state = RolloutState(store, interval=60)
        await state.start()
        registry = CollectorRegistry()
        registry.register(PlanCollector(state))

        def metrics() -> tuple[bytes, str]:
            return generate_latest(registry), "text/plain"

        app = build_admin(state, tokens=TOKENS, metrics=metrics, webhooks=webhooks, clock=clock)
        mounted = Starlette(routes=[Mount("/_gateway", app=app)])
        transport = httpx.ASGITransport(app=mounted, raise_app_exceptions=False)
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://gw/_gateway"
            ) as http:
                yield Admin(http, store, state, clock)
        finally:
            await state.stop()


PLAN_BODY = {"steps": [10, 50, 100], "interval_seconds": 30, "min_requests": 25}


def test_a_plan_is_started_shown_paused_resumed_and_aborted_through_the_admin_api(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with admin_api(open_client, rollout_table) as a:
            http = a.http
            none = await http.get("/rollout/plan")
            assert (none.status_code, none.json()) == (404, {"error": plans_none()})
            anonymous = await http.put("/rollout/plan", json=PLAN_BODY)
            assert anonymous.status_code == 401
            started = await http.put("/rollout/plan", json=PLAN_BODY, headers=auth("alice"))
            assert started.status_code == 200, started.text
            shown = started.json()
            assert (shown["phase"], shown["step"], shown["step_percent"]) == ("progressing", 1, 10)
            assert shown["current_percent"] == 10 and shown["start_percent"] == 0
            assert shown["next_check_in_seconds"] == 30
            assert shown["gates"]["max_error_rate_increase"] == 0.01  # the defaults, shown
            assert a.state.current.fastapi_percent == 10
            again = await http.put("/rollout/plan", json=PLAN_BODY, headers=auth("alice"))
            assert again.status_code == 409 and "already progressing" in again.json()["error"]

            a.clock.now += 12
            paused = await http.post("/rollout/plan/pause", headers=auth("ci"))
            assert (paused.status_code, paused.json()["phase"]) == (200, "paused")
            assert paused.json()["next_check_at"] is None
            assert (await http.post("/rollout/plan/pause", headers=auth("ci"))).status_code == 409
            a.clock.now += 100
            resumed = await http.post("/rollout/plan/resume", headers=auth("alice"))
            assert (resumed.status_code, resumed.json()["phase"]) == (200, "progressing")
            assert resumed.json()["next_check_in_seconds"] == 30  # a whole interval again
            aborted = await http.post(
                "/rollout/plan/abort", json={"rollback": True}, headers=auth("ci")
            )
            assert (aborted.status_code, aborted.json()["phase"]) == (200, "aborted")
            assert a.state.current.fastapi_percent == 0  # rolled back as asked
            history = (await http.get("/rollout/history", headers=auth("ci"))).json()["changes"]
            assert [(c["actor"], c["event"]["action"]) for c in history] == [
                ("ci", "aborted"),
                ("alice", "resumed"),
                ("ci", "paused"),
                ("alice", "started"),
            ]
            metrics = (await http.get("/metrics")).text
            assert 'dualstack_rollout_phase{phase="aborted"} 1.0' in metrics
            assert 'dualstack_rollout_phase{phase="progressing"} 0.0' in metrics
            assert "dualstack_rollout_step 1.0" in metrics

    asyncio.run(scenario())


def plans_none() -> str:
    from harness.gateway.admin import NO_PLAN

    return NO_PLAN


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**PLAN_BODY, "steps": [50, 10]}, "steps: Value error, steps must increase"),
        ({**PLAN_BODY, "nope": 1}, "nope: Extra inputs are not permitted"),
        ({"steps": [10]}, "interval_seconds: Field required"),
        ([1, 2], "Request body must be a JSON object"),
        ({**PLAN_BODY, "version": "7"}, "version must be a non-negative integer"),
    ],
)
def test_a_plan_that_makes_no_sense_is_refused_with_400_saying_why(
    body: Any, message: str, rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with admin_api(open_client, rollout_table) as a:
            refused = await a.http.put("/rollout/plan", json=body, headers=auth("alice"))
            assert refused.status_code == 400
            assert message in refused.json()["error"]
            assert (await a.http.get("/rollout/plan")).status_code == 404  # nothing started

    asyncio.run(scenario())


def test_named_tokens_name_the_actor_and_versions_refuse_lost_updates(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with admin_api(open_client, rollout_table) as a:
            http = a.http
            read = await http.get("/rollout")
            etag = read.headers["etag"]
            assert etag == '"0"'
            alice = await http.put(
                "/rollout", json={"fastapi_percent": 5}, headers={**auth("alice"), "If-Match": etag}
            )
            assert alice.status_code == 200 and alice.headers["etag"] == '"1"'
            # Bob read the same version: his change would undo Alice's unseen.
            lost = await http.put(
                "/rollout", json={"fastapi_percent": 9, "version": 0}, headers=auth("ci")
            )
            assert lost.status_code == 409
            assert lost.json() == {
                "error": "The rollout changed since version 0: it is at version 1 now; "
                "read it again and redo the change"
            }
            assert lost.headers["etag"] == '"1"'
            stale_plan = await http.put(
                "/rollout/plan", json=PLAN_BODY, headers={**auth("ci"), "If-Match": '"0"'}
            )
            assert stale_plan.status_code == 409
            fresh = await http.put(
                "/rollout", json={"fastapi_percent": 9, "version": 1}, headers=auth("ci")
            )
            assert fresh.status_code == 200
            history = (await http.get("/rollout/history", headers=auth("alice"))).json()
            assert [c["actor"] for c in history["changes"]] == ["ci", "alice"]
            bad = await http.put(
                "/rollout", json={"fastapi_percent": 1}, headers={**auth("ci"), "If-Match": "x"}
            )
            assert bad.status_code == 400

    asyncio.run(scenario())


# --- the webhook ------------------------------------------------------------------------------


@contextmanager
def webhook_receiver(status: int = 204) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_webhook_hears_each_phase_change(rollout_table: str, open_client: OpenClient) -> None:
    async def scenario(url: str, received: list[dict[str, Any]]) -> None:
        webhooks = Webhooks(timeout=2)
        async with admin_api(open_client, rollout_table, webhooks) as a:
            body = {**PLAN_BODY, "webhook_url": url}
            assert (await a.http.put("/rollout/plan", json=body, headers=auth("alice"))).is_success
            assert (await a.http.post("/rollout/plan/pause", headers=auth("ci"))).is_success
            await webhooks.close()
        assert [(r["action"], r["phase"], r["previous_phase"], r["actor"]) for r in received] == [
            ("started", "progressing", None, "alice"),
            ("paused", "paused", "progressing", "ci"),
        ]
        assert received[0]["steps"] == [10, 50, 100]

    with webhook_receiver() as (url, received):
        asyncio.run(scenario(url, received))


def test_a_webhook_that_cannot_be_reached_is_logged_and_blocks_nothing(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def refused() -> None:
        webhooks = Webhooks(timeout=2)
        async with admin_api(open_client, rollout_table, webhooks) as a:
            # A port nothing listens on: the post fails, the plan starts all the same.
            body = {**PLAN_BODY, "webhook_url": "http://127.0.0.1:9/hook"}
            with capture_logs() as logs:
                started = await a.http.put("/rollout/plan", json=body, headers=auth("alice"))
                await webhooks.close()
            assert started.status_code == 200
            failed = [e for e in logs if e["event"] == "rollout.webhook_failed"]
            assert len(failed) == 1 and failed[0]["phase"] == "progressing"

    asyncio.run(refused())


def test_a_check_reads_the_seconds_nearest_its_interval_and_at_least_one() -> None:
    asked: list[tuple[float, float]] = []

    class Fleet:
        async def window(self, start: float, end: float) -> Any:
            asked.append((start, end))
            return Window(int(start), int(end))

    async def scenario() -> None:
        measure = FleetMeasure(Fleet())  # type: ignore[arg-type]
        measured = await measure.measure(59.989, 60.989, None)
        await measure.measure(10.2, 10.3, "/api")
        await measure.measure(10.6, 20.4, "/api")
        assert measured == Measured(StackWindow(0, 0, (0,) * 15), StackWindow(0, 0, (0,) * 15))

    asyncio.run(scenario())
    # Seconds 60..60, not 59 (almost all before the interval); a sub-second interval still
    # reads one second; a long one its own seconds.
    assert asked == [(60, 61), (10, 11), (11, 20)]


def test_the_holder_reads_the_plan_only_when_a_check_is_due_and_idles_without_one(
    rollout_table: str, open_client: OpenClient
) -> None:
    clock = Clock()
    reads: list[str] = []

    class Counted:
        def __init__(self, client: Any) -> None:
            self.client = client

        def __getattr__(self, operation: str) -> Any:
            call = getattr(self.client, operation)

            async def counted(**kwargs: Any) -> Any:
                key = kwargs.get("Key", {}).get("session_id", {}).get("S")
                reads.append(f"{operation}:{key}")
                return await call(**kwargs)

            return counted

    async def scenario() -> None:
        async with open_client() as client:
            store = RolloutStore(Counted(client), rollout_table, initial=Rollout(0), clock=clock)
            state = RolloutState(store, interval=60)
            await state.start()
            try:
                controller = Controller(
                    store,
                    state,
                    Counters(),
                    Webhooks(),
                    lease_seconds=LEASE,
                    grace_seconds=GRACE,
                    holder="only",
                    clock=clock,
                )
                reads.clear()
                for _ in range(20):  # no plan: no lease, no read at all
                    await controller.turn()
                    clock.now += 0.25
                assert reads == []
                clock.now = T0
                await start_plan(store, SPEC, clock, state)
                reads.clear()
                while clock.now < T0 + 10 + GRACE - 0.25:  # running, not due: the lease only
                    await controller.turn()
                    clock.now += 0.25
                assert not [r for r in reads if r.endswith(PLAN_KEY)]
                assert controller.holds_lease
                clock.now = T0 + 10 + GRACE
                assert await controller.turn() is not None  # due: read, checked
                assert [r for r in reads if r.endswith(PLAN_KEY)]
                # The plan ends (an abort elsewhere, seen at the next poll): the lease goes.
                await store.transact(
                    "alice",
                    lambda rollout, stored: Decided(
                        plan=plans.abort(stored, clock()).plan, event={"action": "aborted"}
                    ),
                )
                await state.apply(*await _latest(store))
                await controller.turn()
                assert not controller.holds_lease and await store.lease() is None
            finally:
                await state.stop()

    asyncio.run(scenario())


async def _latest(store: RolloutStore) -> tuple[Any, Plan | None]:
    (change, *_) = await store.history(1)
    return change, await store.load_plan()
