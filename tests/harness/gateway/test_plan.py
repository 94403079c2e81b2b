"""The rollout plan's pure transitions: a start, each check's verdict, pause, resume, abort,
and what a plan request may ask for."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import replace
from typing import Any

import pytest
from pydantic import ValidationError

from harness.gateway import plan as plans
from harness.gateway.gates import StackWindow
from harness.gateway.metrics import LATENCY_BUCKETS
from harness.gateway.plan import Measured, Plan, PlanError, PlanSpec
from harness.gateway.policy import Rollout

T0 = 1_800_000_000.0


def spec(**overrides: Any) -> PlanSpec:
    values: dict[str, Any] = {
        "steps": [10, 50, 100],
        "interval_seconds": 10,
        "min_requests": 20,
        "max_failed_checks": 2,
    }
    values.update(overrides)
    return PlanSpec.model_validate(values)


def window(requests: int, errors: int = 0, latency: float = 0.01) -> StackWindow:
    buckets = [0] * (len(LATENCY_BUCKETS) + 1)
    buckets[bisect_left(LATENCY_BUCKETS, latency)] = requests
    return StackWindow(requests, errors, tuple(buckets))


HEALTHY = Measured(window(100), window(100))
FAILING = Measured(window(100), window(100, errors=20))


def started(**overrides: Any) -> Plan:
    return plans.start(spec(**overrides), Rollout(0), T0).plan


def test_a_start_sets_the_first_step_and_remembers_the_share_it_started_from() -> None:
    moved = plans.start(spec(), Rollout(3, routes={"/api": 7}), T0)
    assert moved.percent == 10
    assert (moved.plan.phase, moved.plan.step, moved.plan.start_percent) == ("progressing", 0, 3)
    assert (moved.plan.window_start, moved.plan.next_check_at) == (T0, T0 + 10)
    assert moved.event["action"] == "started" and moved.phase_changed
    # On a prefix: that prefix's share, its override's or (without one) the default's.
    on_api = plans.start(spec(prefix="/api/v1"), Rollout(3, routes={"/api": 7}), T0)
    assert on_api.plan.start_percent == 7
    assert plans.with_share(Rollout(0), "/api/v1", 10) == {"routes": {"/api/v1": 10}}
    assert plans.with_share(Rollout(0), None, 10) == {"fastapi_percent": 10}


@pytest.mark.parametrize("phase", ["progressing", "waiting", "paused"])
def test_a_plan_that_has_not_ended_refuses_another(phase: str) -> None:
    current = replace(started(), phase=phase)
    with pytest.raises(PlanError, match=f"already {phase}"):
        plans.start(spec(), Rollout(0), T0, current)


@pytest.mark.parametrize("phase", sorted(plans.FINISHED))
def test_a_plan_that_ended_makes_way_for_a_new_one(phase: str) -> None:
    current = replace(started(), phase=phase, seq=4)
    again = plans.start(spec(), Rollout(0), T0, current).plan
    assert again.id != current.id and again.seq == 5  # the stored item's condition moves on


def test_passed_checks_step_through_every_step_and_the_last_one_promotes() -> None:
    plan = started()
    seen = []
    for n in range(2):
        assert plan.next_check_at is not None
        moved = plans.check(plan, HEALTHY, plan.next_check_at + 1, shadowing=False)
        plan = moved.plan
        seen.append((plan.phase, moved.percent, plan.step))
        assert moved.audited and plan.checks[-1]["verdict"] == "passed"
        assert plan.checks[-1]["number"] == n + 1
    assert seen == [("progressing", 50, 1), ("promoted", 100, 2)]
    assert plan.next_check_at is None and plan.failed_checks == 0
    with pytest.raises(PlanError):
        plans.check(plan, HEALTHY, T0 + 100, shadowing=False)


def test_failed_checks_count_over_the_run_and_the_last_allowed_rolls_back() -> None:
    plan = started(max_failed_checks=2)
    assert plan.next_check_at is not None
    first = plans.check(plan, FAILING, plan.next_check_at + 1, shadowing=False)
    assert (first.plan.phase, first.percent, first.plan.failed_checks) == ("progressing", None, 1)
    # A passed check in between moves on but does not forgive the failure (Flagger's rule).
    second = plans.check(first.plan, HEALTHY, T0 + 30, shadowing=False)
    assert (second.plan.step, second.plan.failed_checks) == (1, 1)
    third = plans.check(second.plan, FAILING, T0 + 45, shadowing=False)
    assert (third.plan.phase, third.percent, third.plan.failed_checks) == ("rolled_back", 0, 2)
    gates = third.event["check"]["gates"]
    error_gate = next(g for g in gates if g["name"] == "error_rate")
    assert error_gate["passed"] is False
    assert error_gate["thresholds"]["max_error_rate_increase"] == 0.01
    assert error_gate["measured"]["fastapi_error_rate"] == 0.2
    assert third.plan.reason.startswith("rolled back to 0 % after 2 failed checks")


def test_too_few_requests_on_either_stack_is_waiting_with_no_verdict_and_nothing_moved() -> None:
    plan = started(min_requests=20)
    short = Measured(window(500), window(19))
    assert plan.next_check_at is not None
    first = plans.check(plan, short, plan.next_check_at + 1, shadowing=False)
    assert (first.plan.phase, first.percent, first.plan.step) == ("waiting", None, 0)
    assert first.plan.failed_checks == 0 and first.plan.checks[-1]["verdict"] == "waiting"
    assert first.audited and first.phase_changed  # the phase changed: audited
    again = plans.check(first.plan, short, T0 + 30, shadowing=False)
    assert not again.audited and not again.phase_changed  # another idle interval: not
    assert again.plan.next_check_at == T0 + 40
    # Traffic again: a verdict, and the plan is progressing again.
    back = plans.check(again.plan, HEALTHY, T0 + 45, shadowing=False)
    assert (back.plan.phase, back.percent) == ("progressing", 50)
    assert back.phase_changed


def test_checks_keep_the_plans_cadence_however_late_each_is_made() -> None:
    plan = started()  # interval 10: the first ends at T0 + 10
    late = plans.check(plan, HEALTHY, T0 + 12.5, shadowing=False).plan
    # The next interval is the next ten seconds on the cadence: waiting for the fleet's
    # counts must not stretch a run of n checks by n waits.
    assert (late.window_start, late.next_check_at) == (T0 + 10, T0 + 20)
    waited = plans.check(late, Measured(window(0), window(0)), T0 + 22.5, shadowing=False)
    assert waited.plan.phase == "waiting"
    assert (waited.plan.window_start, waited.plan.next_check_at) == (T0 + 20, T0 + 30)
    # A controller a whole interval behind (a handover, an outage) starts afresh from now.
    idle = Measured(window(0), window(0))
    behind = plans.check(waited.plan, idle, T0 + 41, shadowing=False).plan
    assert (behind.window_start, behind.next_check_at) == (T0 + 41, T0 + 51)


def test_the_shadow_gate_counts_only_when_shadowing() -> None:
    breaking = Measured(window(100), window(100), breaking=30, compared=100)
    plan = started(max_failed_checks=1)
    assert plan.next_check_at is not None
    off = plans.check(plan, breaking, plan.next_check_at + 1, shadowing=False)
    assert off.plan.step == 1
    on = plans.check(plan, breaking, plan.next_check_at + 1, shadowing=True)
    assert on.plan.phase == "rolled_back"
    assert [g["name"] for g in on.event["check"]["gates"]] == [
        "error_rate",
        "p99_latency",
        "breaking_shadow",
    ]


def test_a_gate_set_to_null_is_off() -> None:
    plan = started(max_failed_checks=1, gates={"max_error_rate_increase": None})
    assert plan.next_check_at is not None
    moved = plans.check(plan, FAILING, plan.next_check_at + 1, shadowing=False)
    assert moved.plan.step == 1
    assert [g["name"] for g in moved.event["check"]["gates"]] == ["p99_latency"]


def test_pause_resume_and_abort() -> None:
    plan = started()
    paused = plans.pause(plan, T0 + 3, "paused by alice")
    assert (paused.plan.phase, paused.plan.next_check_at, paused.percent) == ("paused", None, None)
    with pytest.raises(PlanError, match="Only a running plan"):
        plans.pause(paused.plan, T0 + 4, "again")
    with pytest.raises(PlanError, match="Only a paused plan"):
        plans.resume(plan, T0 + 4)
    resumed = plans.resume(paused.plan, T0 + 20)
    # The step's share set again, and a whole new interval from now.
    assert (resumed.plan.phase, resumed.percent) == ("progressing", 10)
    assert (resumed.plan.window_start, resumed.plan.next_check_at) == (T0 + 20, T0 + 30)
    kept = plans.abort(resumed.plan, T0 + 21)
    assert (kept.plan.phase, kept.percent) == ("aborted", None)
    back = plans.abort(resumed.plan, T0 + 21, rollback=True)
    assert (back.plan.phase, back.percent) == ("aborted", 0)
    with pytest.raises(PlanError, match="already ended"):
        plans.abort(kept.plan, T0 + 22)


def test_every_write_moves_the_sequence_on() -> None:
    plan = started()
    assert plan.next_check_at is not None
    after = [
        plans.check(plan, HEALTHY, plan.next_check_at, shadowing=False).plan,
        plans.pause(plan, T0, "x").plan,
        plans.abort(plan, T0).plan,
    ]
    assert [p.seq for p in after] == [plan.seq + 1] * 3


def test_a_plan_round_trips_through_its_json() -> None:
    plan = plans.check(started(prefix="/api"), FAILING, T0 + 11, shadowing=False).plan
    assert Plan.from_json(plan.to_json()) == plan


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": []}, "steps"),
        ({"steps": [10, 10]}, "steps must increase"),
        ({"steps": [50, 10]}, "steps must increase"),
        ({"steps": [0, 10]}, "above 0, at most 100"),
        ({"steps": [10, 101]}, "above 0, at most 100"),
        ({"interval_seconds": 0.5}, "interval_seconds"),
        ({"min_requests": 0}, "min_requests"),
        ({"max_failed_checks": 0}, "max_failed_checks"),
        ({"confidence": 1}, "confidence"),
        ({"confidence": 0.5}, "confidence"),
        ({"prefix": "api"}, "must start with '/'"),
        ({"webhook_url": "file:///etc/passwd"}, "http:// or https://"),
        ({"stepz": [1]}, "stepz"),
        ({"gates": {"max_p99_ratio": 0.5}}, "max_p99_ratio"),
        ({"gates": {"nope": 1}}, "nope"),
        ({"max_p99_ratio": 2, "gates": {"max_p99_ratio": 3}}, "given both in gates and outside"),
    ],
)
def test_a_plan_request_that_makes_no_sense_is_refused_saying_why(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(")):
        spec(**change)


def test_gate_thresholds_may_be_given_at_the_top_level() -> None:
    given = spec(max_error_rate_increase=0.05, gates={"max_p99_ratio": 2})
    assert given.gates.max_error_rate_increase == 0.05
    assert given.gates.max_p99_ratio == 2
    assert given.gates.max_breaking_shadow_rate == 0.01  # the default kept
