"""A progressive rollout plan, as data and pure transitions: what a plan asks for, where it
stands, and what each of its events (a start, a check, a pause...) makes of it.

Nothing here does I/O or reads a clock: every transition is given `now` and returns the new
plan and the share it sets, so the controller and the admin API (which write them, audited,
in one DynamoDB transaction with the rollout) and the tests drive the same functions.

A plan moves one share: the default `fastapi_percent` (no `prefix`) or one route prefix's.
It starts at `steps[0]`. At each check (every `interval_seconds`) FastAPI is compared with
Flask on the traffic each served over the interval, through the gates of `gates.py`:

- too few requests on either stack (`min_requests`): `waiting`, no verdict, nothing moves;
- every gate passes: the next step; reaching the last step ends the run, `promoted`;
- a gate fails: a failed check (counted over the whole run, as Flagger does); at
  `max_failed_checks` the share goes back to where the plan started, `rolled_back`.

A person can pause (the share stays), resume (the current step's share again, a new interval
from then) or abort (the run ends, the share stays). A manual change of the share the plan
moves pauses it.
"""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.gateway.gates import (
    GateResult,
    StackWindow,
    breaking_shadow_gate,
    error_rate_gate,
    p99_gate,
)
from harness.gateway.policy import Rollout, validate_prefix
from shared.session import iso

__all__ = [
    "CHECKS_KEPT",
    "FINISHED",
    "PHASES",
    "RUNNING",
    "Gates",
    "Measured",
    "Phase",
    "Plan",
    "PlanError",
    "PlanSpec",
    "Transition",
    "abort",
    "check",
    "pause",
    "resume",
    "share_of",
    "start",
    "with_share",
]

Phase = Literal["progressing", "waiting", "paused", "promoted", "rolled_back", "aborted"]
PHASES: tuple[Phase, ...] = (
    "progressing",
    "waiting",
    "paused",
    "promoted",
    "rolled_back",
    "aborted",
)
RUNNING: frozenset[str] = frozenset({"progressing", "waiting"})
"""The phases in which the controller checks the plan."""
FINISHED: frozenset[str] = frozenset({"promoted", "rolled_back", "aborted"})
"""The phases that end a run: a new plan may start."""

CHECKS_KEPT = 20
"""The newest checks a plan keeps (the history keeps every one that gave a verdict)."""


class PlanError(Exception):
    """The plan cannot do what was asked in its current phase (409 to an admin)."""


class Gates(BaseModel):
    """The thresholds a check compares FastAPI with Flask by; null turns a gate off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_error_rate_increase: float | None = Field(default=0.01, ge=0, le=1)
    """FastAPI's 5xx rate (sheds included) may exceed Flask's by this much (0.01: one
    percentage point)."""
    max_p99_ratio: float | None = Field(default=1.5, ge=1)
    """FastAPI's p99 may be at most this many times Flask's..."""
    p99_floor_ms: float = Field(default=50.0, ge=0)
    """...or this many milliseconds, whichever is more: microsecond noise fails nothing."""
    max_breaking_shadow_rate: float | None = Field(default=0.01, ge=0, le=1)
    """With shadowing on: the share of shadow comparisons judged `breaking`."""


_GATE_FIELDS = frozenset(Gates.model_fields)


class PlanSpec(BaseModel):
    """What `PUT /_gateway/rollout/plan` asks for. Gate thresholds may be given in a
    `gates` object or at the top level."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str | None = None
    """The route prefix whose share the plan moves; none: the default share."""
    steps: tuple[float, ...] = Field(min_length=1, max_length=50)
    """FastAPI's share at each step, increasing; the last one reached ends the run."""
    interval_seconds: float = Field(ge=1, le=86_400)
    min_requests: int = Field(default=20, ge=1, le=10_000_000)
    """Requests each stack must serve in an interval for a verdict."""
    max_failed_checks: int = Field(default=2, ge=1, le=1000)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    gates: Gates = Field(default_factory=Gates)
    webhook_url: str | None = Field(default=None, max_length=2048)

    @model_validator(mode="before")
    @classmethod
    def _gates_at_top_level(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            top = {k: v for k, v in data.items() if k in _GATE_FIELDS}
            if top:
                nested = data.get("gates") or {}
                if not isinstance(nested, Mapping):
                    return data  # the gates field's own error says what is wrong
                clash = sorted(set(top) & set(nested))
                if clash:
                    raise ValueError(f"{', '.join(clash)} given both in gates and outside")
                rest = {k: v for k, v in data.items() if k not in _GATE_FIELDS}
                return {**rest, "gates": {**nested, **top}}
        return data

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, prefix: str | None) -> str | None:
        return None if prefix is None else validate_prefix(prefix)

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: tuple[float, ...]) -> tuple[float, ...]:
        for value in steps:
            if not (math.isfinite(value) and 0 < value <= 100):
                raise ValueError("each step must be a percentage above 0, at most 100")
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError("steps must increase")
        return steps

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("webhook_url must be an http:// or https:// URL")
        return url


@dataclass(frozen=True)
class Measured:
    """What a check measured over its interval, from the fleet's counters."""

    flask: StackWindow
    fastapi: StackWindow
    breaking: int = 0
    compared: int = 0
    """Shadow comparisons over the interval (match, additive or breaking)."""


@dataclass(frozen=True)
class Plan:
    """A plan and where it stands. `step` indexes `spec.steps`."""

    id: str
    spec: PlanSpec
    phase: Phase
    step: int
    start_percent: float
    started_at: float
    window_start: float
    """The current interval's start: counts from before it belong to another step."""
    next_check_at: float | None
    """When the current interval ends (None once paused or finished)."""
    failed_checks: int = 0
    checks_made: int = 0
    checks: tuple[Mapping[str, Any], ...] = ()
    """The newest `CHECKS_KEPT` checks, oldest first."""
    updated_at: float = 0.0
    reason: str = ""
    """Why the plan is in its phase, in a line."""
    seq: int = 0
    """Bumped by every write: a write conditional on it is never applied twice."""

    @property
    def running(self) -> bool:
        return self.phase in RUNNING

    @property
    def percent(self) -> float:
        """The share the plan's current step sets."""
        return self.spec.steps[self.step]

    def to_json(self) -> dict[str, Any]:
        """The plan as stored and shown (times in epoch seconds)."""
        return {
            "id": self.id,
            **self.spec.model_dump(mode="json"),
            "phase": self.phase,
            "step": self.step,
            "start_percent": self.start_percent,
            "started_at": self.started_at,
            "window_start": self.window_start,
            "next_check_at": self.next_check_at,
            "failed_checks": self.failed_checks,
            "checks_made": self.checks_made,
            "checks": [dict(c) for c in self.checks],
            "updated_at": self.updated_at,
            "reason": self.reason,
            "seq": self.seq,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        spec_fields = set(PlanSpec.model_fields)
        return cls(
            id=data["id"],
            spec=PlanSpec.model_validate({k: v for k, v in data.items() if k in spec_fields}),
            phase=data["phase"],
            step=int(data["step"]),
            start_percent=float(data["start_percent"]),
            started_at=float(data["started_at"]),
            window_start=float(data["window_start"]),
            next_check_at=None if data["next_check_at"] is None else float(data["next_check_at"]),
            failed_checks=int(data["failed_checks"]),
            checks_made=int(data["checks_made"]),
            checks=tuple(data.get("checks", ())),
            updated_at=float(data.get("updated_at", 0.0)),
            reason=str(data.get("reason", "")),
            seq=int(data.get("seq", 0)),
        )


@dataclass(frozen=True)
class Transition:
    """What an event made of a plan: the plan after it, the share to set (None: unchanged),
    what the history records of it, and whether the phase changed (a webhook is told)."""

    plan: Plan
    percent: float | None
    event: dict[str, Any] = field(default_factory=dict)
    audited: bool = True
    """False for a check that changes nothing a person would look for (another interval
    `waiting`): the plan is updated, the history not."""
    phase_changed: bool = False


def share_of(rollout: Rollout, prefix: str | None) -> float:
    """The share a plan on `prefix` moves, as `rollout` has it now."""
    if prefix is None:
        return rollout.fastapi_percent
    return rollout.routes.get(prefix, rollout.percent_for(prefix))


def with_share(rollout: Rollout, prefix: str | None, percent: float) -> dict[str, Any]:
    """The `RolloutStore` change that sets a plan's share."""
    if prefix is None:
        return {"fastapi_percent": percent}
    return {"routes": {prefix: percent}}


def _event(name: str, plan: Plan, **more: Any) -> dict[str, Any]:
    return {
        "kind": "plan",
        "action": name,
        "plan_id": plan.id,
        "phase": plan.phase,
        "step": plan.step + 1,
        "steps": list(plan.spec.steps),
        "percent": plan.percent,
        "failed_checks": plan.failed_checks,
        "reason": plan.reason,
        **more,
    }


def start(spec: PlanSpec, rollout: Rollout, now: float, current: Plan | None = None) -> Transition:
    """A new run of `spec`: the share set to its first step, the first interval from now.
    PlanError while another run is going (paused counts: abort it first)."""
    if current is not None and current.phase not in FINISHED:
        raise PlanError(f"A plan is already {current.phase}: abort it before starting another")
    plan = Plan(
        id=uuid.uuid4().hex[:12],
        spec=spec,
        phase="progressing",
        step=0,
        start_percent=share_of(rollout, spec.prefix),
        started_at=now,
        window_start=now,
        next_check_at=now + spec.interval_seconds,
        updated_at=now,
        reason=f"started: {spec.steps[0]:g} % to FastAPI",
        seq=0 if current is None else current.seq + 1,
    )
    return Transition(plan, plan.percent, _event("started", plan), phase_changed=True)


def check(plan: Plan, measured: Measured, now: float, *, shadowing: bool) -> Transition:
    """The verdict of the interval that ended at `plan.next_check_at`, and what follows."""
    if not plan.running or plan.next_check_at is None:
        raise PlanError(f"A {plan.phase} plan is not checked")
    spec = plan.spec
    window = {"start": iso(plan.window_start), "end": iso(plan.next_check_at)}
    requests = {"flask": measured.flask.requests, "fastapi": measured.fastapi.requests}
    record: dict[str, Any] = {
        "number": plan.checks_made + 1,
        "at": iso(now),
        "window": window,
        "step": plan.step + 1,
        "percent": plan.percent,
        "requests": requests,
        "min_requests": spec.min_requests,
    }
    fresh = {**_next_interval(plan, now), "updated_at": now}
    short = [name for name, n in requests.items() if n < spec.min_requests]
    if short:
        record.update(verdict="waiting", gates=[])
        reason = (
            f"waiting: {' and '.join(short)} served fewer than {spec.min_requests} requests "
            f"({requests['flask']} Flask, {requests['fastapi']} FastAPI): no verdict"
        )
        after = _recorded(plan, record, phase="waiting", reason=reason, **fresh)
        changed = plan.phase != "waiting"
        # Another interval without traffic changes nothing a person looks for: the plan is
        # updated, the history not (an idle plan would otherwise fill it).
        return Transition(
            after,
            None,
            _event("waiting", after, check=record),
            audited=changed,
            phase_changed=changed,
        )
    results = _gates(spec, measured, shadowing)
    failed = [r for r in results if not r.passed]
    record.update(verdict="failed" if failed else "passed", gates=[r.to_json() for r in results])
    if failed:
        count = plan.failed_checks + 1
        record["failed_checks"] = count
        why = "; ".join(r.reason for r in failed)
        if count >= spec.max_failed_checks:
            after = _recorded(
                plan,
                record,
                phase="rolled_back",
                failed_checks=count,
                next_check_at=None,
                updated_at=now,
                reason=f"rolled back to {plan.start_percent:g} % after {count} failed checks: "
                f"{why}",
            )
            return Transition(
                after,
                plan.start_percent,
                _event("rolled_back", after, check=record),
                phase_changed=True,
            )
        after = _recorded(
            plan,
            record,
            phase="progressing",
            failed_checks=count,
            reason=f"check {record['number']} failed ({count} of {spec.max_failed_checks}): {why}",
            **fresh,
        )
        return Transition(
            after,
            None,
            _event("check", after, check=record),
            phase_changed=plan.phase != after.phase,
        )
    step = plan.step + 1
    last = step == len(spec.steps) - 1
    after = _recorded(
        plan,
        record,
        phase="promoted" if last else "progressing",
        step=step,
        reason=(
            f"promoted: {spec.steps[step]:g} % to FastAPI"
            if last
            else f"check {record['number']} passed: step {step + 1}, {spec.steps[step]:g} %"
        ),
        **({"next_check_at": None, "updated_at": now, "window_start": now} if last else fresh),
    )
    return Transition(
        after,
        after.percent,
        _event("promoted" if last else "check", after, check=record),
        phase_changed=plan.phase != after.phase,
    )


def _next_interval(plan: Plan, now: float) -> dict[str, float]:
    """The interval after the one just checked: the next one on the plan's cadence, so
    checks come every `interval_seconds` however long each took to be made (the wait for
    the fleet's counts does not add up over a run); from now when the controller fell a
    whole interval behind (a handover, a store outage), as counts that old are stale."""
    assert plan.next_check_at is not None
    interval = plan.spec.interval_seconds
    following = plan.next_check_at + interval
    if following <= now:
        return {"window_start": now, "next_check_at": now + interval}
    return {"window_start": plan.next_check_at, "next_check_at": following}


def _gates(spec: PlanSpec, measured: Measured, shadowing: bool) -> list[GateResult]:
    gates, confidence = spec.gates, spec.confidence
    results: list[GateResult] = []
    if gates.max_error_rate_increase is not None:
        results.append(
            error_rate_gate(
                measured.flask,
                measured.fastapi,
                max_increase=gates.max_error_rate_increase,
                confidence=confidence,
            )
        )
    if gates.max_p99_ratio is not None:
        results.append(
            p99_gate(
                measured.flask,
                measured.fastapi,
                max_ratio=gates.max_p99_ratio,
                floor_ms=gates.p99_floor_ms,
                confidence=confidence,
            )
        )
    if shadowing and gates.max_breaking_shadow_rate is not None:
        results.append(
            breaking_shadow_gate(
                measured.breaking,
                measured.compared,
                max_rate=gates.max_breaking_shadow_rate,
                confidence=confidence,
            )
        )
    return results


def _recorded(plan: Plan, record: Mapping[str, Any], **changes: Any) -> Plan:
    checks = (*plan.checks, record)[-CHECKS_KEPT:]
    return replace(
        plan, checks=checks, checks_made=plan.checks_made + 1, seq=plan.seq + 1, **changes
    )


def pause(plan: Plan, now: float, reason: str) -> Transition:
    """Stop checking; the share stays where it is. PlanError unless running."""
    if not plan.running:
        raise PlanError(f"Only a running plan can be paused; this one is {plan.phase}")
    after = replace(
        plan, phase="paused", next_check_at=None, updated_at=now, reason=reason, seq=plan.seq + 1
    )
    return Transition(after, None, _event("paused", after), phase_changed=True)


def resume(plan: Plan, now: float) -> Transition:
    """Check again: the current step's share set again (a manual change may have moved it),
    and a new interval from now. PlanError unless paused."""
    if plan.phase != "paused":
        raise PlanError(f"Only a paused plan can be resumed; this one is {plan.phase}")
    after = replace(
        plan,
        phase="progressing",
        window_start=now,
        next_check_at=now + plan.spec.interval_seconds,
        updated_at=now,
        reason=f"resumed at step {plan.step + 1}, {plan.percent:g} %",
        seq=plan.seq + 1,
    )
    return Transition(after, after.percent, _event("resumed", after), phase_changed=True)


def abort(plan: Plan, now: float, *, rollback: bool = False) -> Transition:
    """End the run; the share stays where it is, or (`rollback`) goes back to where the plan
    started. PlanError when it has already ended."""
    if plan.phase in FINISHED:
        raise PlanError(f"The plan has already ended: {plan.phase}")
    reason = (
        f"aborted; share back to {plan.start_percent:g} %" if rollback else "aborted; share kept"
    )
    after = replace(
        plan, phase="aborted", next_check_at=None, updated_at=now, reason=reason, seq=plan.seq + 1
    )
    return Transition(
        after,
        plan.start_percent if rollback else None,
        _event("aborted", after, rollback=rollback),
        phase_changed=True,
    )
