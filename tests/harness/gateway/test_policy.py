"""The routing policy, as pure functions: tables of facts in, whole decisions out."""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from harness.gateway.policy import (
    BUCKETS,
    Backend,
    Decision,
    Facts,
    Policy,
    Rollout,
    bucket,
    choose,
    validate_percent,
    validate_prefix,
)

KEYS = [f"session-{i}" for i in range(10_000)]
BOTH: frozenset[Backend] = frozenset({"flask", "fastapi"})
PATH = "/api/v1/chat"


def no_draw() -> float:
    raise AssertionError("draw() must not be called when something else decides")


def constant(value: float) -> Callable[[], float]:
    return lambda: value


def policy(percent: float, **options: Any) -> Policy:
    return Policy(Rollout(fastapi_percent=percent), **{"salt": "dualstack", **options})


def sticky(pol: Policy, key: str, path: str = PATH) -> Backend:
    return choose(pol, Facts(path, BOTH, sticky_key=key), no_draw).backend


def fastapi_keys(pol: Policy) -> set[str]:
    return {key for key in KEYS if sticky(pol, key) == "fastapi"}


# --- buckets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("salt", "key", "expected"),
    [
        ("dualstack", "session-1", 5746),
        ("other", "session-1", 6927),
        ("dualstack", "user-42", 2783),
        ("dualstack", "", 3185),
        ("dualstack", "é😀", 1296),
        ("dualstack", "\udcff", 2811),  # a lone surrogate still hashes
    ],
)
def test_bucket_is_a_pinned_salted_sha256(salt: str, key: str, expected: int) -> None:
    assert bucket(salt, key) == expected


def test_bucket_follows_the_documented_formula() -> None:
    for key in KEYS[:200]:
        digest = hashlib.sha256(b"dualstack\x00" + key.encode()).digest()
        assert bucket("dualstack", key) == int.from_bytes(digest[:8], "big") % BUCKETS


# --- sticky split ---------------------------------------------------------------------------


@pytest.mark.parametrize("percent", [1, 10, 30, 50, 90])
def test_sticky_split_matches_the_percentage(percent: float) -> None:
    share = len(fastapi_keys(policy(percent))) / len(KEYS) * 100
    assert percent - 1.5 <= share <= percent + 1.5


def test_same_key_same_backend_every_time_and_across_policies() -> None:
    first = policy(50)
    decisions = {choose(first, Facts(PATH, BOTH, sticky_key="s-7"), no_draw) for _ in range(1000)}
    assert decisions == {Decision("fastapi", "sticky", bucket("dualstack", "s-7"))}
    assert len(decisions) == 1
    # A fresh Policy (another worker, another process) decides the same for every key.
    assert fastapi_keys(policy(50)) == fastapi_keys(Policy(Rollout(50.0), salt="dualstack"))


@pytest.mark.parametrize(
    ("percent", "expected"),
    [(18.32, "flask"), (18.33, "fastapi"), (18.3201, "fastapi"), (0, "flask"), (100, "fastapi")],
)
def test_sticky_threshold_at_the_key_bucket(percent: float, expected: Backend) -> None:
    assert bucket("dualstack", "s-7") == 1832
    facts = Facts(PATH, BOTH, sticky_key="s-7")
    assert choose(policy(percent), facts, no_draw) == Decision(expected, "sticky", 1832)


@functools.cache
def key_in_bucket(slot: int) -> str:
    return next(k for k in (f"k{i}" for i in itertools.count()) if bucket("dualstack", k) == slot)


# In floats 0.07 * 100 is 7.000000000000001: a bare `bucket < percent * 100` lets bucket 7 in.
@pytest.mark.parametrize("percent", [0.07, 0.14, 0.28, 0.55, 1.09, 2.18, 4.35, 30.0, 57.01])
def test_two_decimal_percentages_take_exactly_that_many_buckets(percent: float) -> None:
    hundredths = round(percent * 100)
    last_in, first_out = key_in_bucket(hundredths - 1), key_in_bucket(hundredths)
    assert [sticky(policy(percent), key) for key in (last_in, first_out)] == ["fastapi", "flask"]


def test_raising_the_percentage_only_moves_keys_to_fastapi() -> None:
    at_30, at_60 = fastapi_keys(policy(30)), fastapi_keys(policy(60))
    assert at_30 <= at_60  # nobody goes back to Flask
    assert len(at_60) - len(at_30) > 2500  # and about 30 % of keys did move


@pytest.mark.parametrize(("percent", "expected"), [(0, set()), (100, set(KEYS))])
def test_extremes_send_every_key_one_way(percent: float, expected: set[str]) -> None:
    assert fastapi_keys(policy(percent)) == expected


def test_the_salt_reshuffles_keys() -> None:
    a, b = fastapi_keys(policy(50, salt="a")), fastapi_keys(policy(50, salt="b"))
    moved = len(a ^ b) / len(KEYS)
    assert 0.4 < moved < 0.6  # independent halves: about half the keys differ


def test_empty_sticky_key_falls_back_to_the_draw() -> None:
    facts = Facts(PATH, BOTH, sticky_key="")
    assert choose(policy(50), facts, constant(0.1)) == Decision("fastapi", "random")


# --- owners and overrides -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("owners", "override", "expected"),
    [
        # The only stack that serves the path wins over everything.
        (frozenset({"flask"}), "fastapi", Decision("flask", "owner")),
        (frozenset({"fastapi"}), "flask", Decision("fastapi", "owner")),
        (frozenset({"fastapi"}), None, Decision("fastapi", "owner")),
        # Both or neither serve it: the override decides where it counts (test_override).
        (BOTH, "fastapi", Decision("fastapi", "override")),
        (frozenset(), "fastapi", Decision("fastapi", "override")),
        (frozenset(), None, Decision("flask", "sticky", 5746)),
    ],
)
def test_owner_then_override_then_sticky(
    owners: frozenset[Backend], override: str | None, expected: Decision
) -> None:
    pol = policy(0, override="open")
    facts = Facts(PATH, owners, override=override, sticky_key="session-1")
    assert choose(pol, facts, no_draw) == expected


def test_override_beats_a_sticky_key_at_100_percent() -> None:
    facts = Facts(PATH, BOTH, override="flask", sticky_key="session-1")
    assert choose(policy(100, override="open"), facts, no_draw) == Decision("flask", "override")


# --- random draw ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("percent", "draw", "expected"),
    [
        (0, 0.0, "flask"),
        (0, 0.9999, "flask"),
        (100, 0.0, "fastapi"),
        (100, 0.9999, "fastapi"),
        (30, 0.2999, "fastapi"),
        (30, 0.3, "flask"),
        (0.01, 0.0, "fastapi"),
        (99.99, 0.9999, "flask"),
    ],
)
def test_random_draw_edges(percent: float, draw: float, expected: Backend) -> None:
    decision = choose(policy(percent), Facts(PATH, BOTH), constant(draw))
    assert decision == Decision(expected, "random")


# --- route prefixes -------------------------------------------------------------------------

ROUTED = Rollout(
    fastapi_percent=5,
    routes={"/api/v1/chat": 25, "/api/v1/chat/sessions": 75, "/health": 100, "/api": 50},
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/v1/chat", 25),
        ("/api/v1/chat/", 25),
        ("/api/v1/chat/x", 25),
        ("/api/v1/chat/sessions", 75),  # the longest matching prefix wins
        ("/api/v1/chat/sessions/abc", 75),
        ("/api/v1/chatty", 50),  # not on a segment boundary: falls to "/api"
        ("/api/v1/chat-sessions", 50),
        ("/api", 50),
        ("/apis", 5),
        ("/health", 100),
        ("/healthz", 5),
        ("/", 5),
        ("", 5),
        ("/API/v1/chat", 5),  # paths are case-sensitive
    ],
)
def test_percent_for_matches_prefixes_on_segment_boundaries(path: str, expected: float) -> None:
    assert ROUTED.percent_for(path) == expected


def test_root_prefix_covers_every_path() -> None:
    rollout = Rollout(fastapi_percent=0, routes={"/": 40, "/x": 10})
    assert [rollout.percent_for(p) for p in ("/", "/a/b", "/x/y", "/xy")] == [40, 40, 10, 40]


def test_route_percent_decides_for_its_paths() -> None:
    pol = Policy(Rollout(fastapi_percent=0, routes={"/api/v1/chat": 100}), salt="dualstack")
    assert sticky(pol, "session-1", "/api/v1/chat/sessions/x") == "fastapi"
    assert sticky(pol, "session-1", "/health") == "flask"
    assert choose(pol, Facts("/api/v1/chat", BOTH), constant(0.9999)).backend == "fastapi"
    assert choose(pol, Facts("/api/v2/chat", BOTH), constant(0.0)).backend == "flask"


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0.0), (100, 100.0), (30, 30.0), (30.5, 30.5), (0.01, 0.01), (Fraction(1, 4), 0.25)],
)
def test_validate_percent_accepts_real_numbers_in_range(value: object, expected: float) -> None:
    result = validate_percent(value)
    assert result == expected
    assert type(result) is float


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "percent must be a number from 0 to 100, not True"),
        (False, "percent must be a number from 0 to 100, not False"),
        ("30", "percent must be a number from 0 to 100, not '30'"),
        (None, "percent must be a number from 0 to 100, not None"),
        ([30], "percent must be a number from 0 to 100, not [30]"),
        (Decimal("30"), "percent must be a number from 0 to 100, not Decimal('30')"),
        (-0.01, "percent must be from 0 to 100, not -0.01"),
        (100.01, "percent must be from 0 to 100, not 100.01"),
        (math.nan, "percent must be from 0 to 100, not nan"),
        (math.inf, "percent must be from 0 to 100, not inf"),
        ("x" * 100, "percent must be a number from 0 to 100, not '" + "x" * 56 + "..."),
    ],
)
def test_validate_percent_refuses(value: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        validate_percent(value)
    assert str(caught.value) == message


@pytest.mark.parametrize("prefix", ["/", "/api", "/api/v1/chat", "/a.b/c-d_e", "/é"])
def test_validate_prefix_accepts(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        (None, "route prefix must be a string, not None"),
        (5, "route prefix must be a string, not 5"),
        ("", "route prefix must start with '/', not ''"),
        ("api", "route prefix must start with '/', not 'api'"),
        ("/api/", "route prefix must not end with '/', not '/api/'"),
        ("//", "route prefix must not end with '/', not '//'"),
        ("/a b", "route prefix must not contain whitespace, not '/a b'"),
        ("/a\tb", "route prefix must not contain whitespace, not '/a\\tb'"),
        ("/a\n", "route prefix must not contain whitespace, not '/a\\n'"),
    ],
)
def test_validate_prefix_refuses(prefix: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        validate_prefix(prefix)
    assert str(caught.value) == message


# --- the rollout value ----------------------------------------------------------------------


def test_rollout_round_trips_through_json() -> None:
    rollout = Rollout(fastapi_percent=30, routes={"/b": 75.5, "/a": 0}, version=7, shadow_percent=5)
    data = rollout.to_json()
    assert data == {
        "fastapi_percent": 30.0,
        "routes": {"/a": 0.0, "/b": 75.5},
        "version": 7,
        "shadow_percent": 5.0,
    }
    assert list(data["routes"]) == ["/a", "/b"]  # sorted: the same rollout, the same JSON
    assert Rollout.from_json(data) == rollout
    assert Rollout.from_json({"fastapi_percent": 12}) == Rollout(12.0, {}, 0)


def test_equal_rollouts_and_policies_hash_alike() -> None:
    one = Rollout(30, {"/b": 1, "/a": 2}, version=3)
    same = Rollout(30.0, {"/a": 2.0, "/b": 1.0}, version=3)
    later = Rollout(30, {"/a": 2, "/b": 1}, version=4)
    assert {one: "x", later: "y"}[same] == "x"
    assert len({one, same, later}) == 2
    assert hash(Policy(one, "salt")) == hash(Policy(same, "salt"))


def test_rollout_copies_the_routes_it_is_given() -> None:
    routes = {"/a": 10.0}
    rollout = Rollout(fastapi_percent=0, routes=routes)
    routes["/a"] = 90.0
    assert rollout.percent_for("/a") == 10.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "a rollout needs fastapi_percent"),
        ({"fastapi_percent": 101}, "percent must be from 0 to 100, not 101"),
        ({"fastapi_percent": 1, "extra": 1}, "unknown rollout fields: extra"),
        ({"fastapi_percent": 1, "routes": []}, "routes must be a JSON object, not []"),
        ({"fastapi_percent": 1, "routes": {"x": 1}}, "route prefix must start with '/', not 'x'"),
        ({"fastapi_percent": 1, "routes": {"/x": "1"}}, "percent must be a number from 0 to 100"),
        ({"fastapi_percent": 1, "version": -1}, "version must be a non-negative integer, not -1"),
        ({"fastapi_percent": 1, "version": 1.5}, "version must be a non-negative integer, not 1.5"),
        ({"fastapi_percent": 1, "version": True}, "version must be a non-negative integer"),
        ([1], "a rollout must be a JSON object, not [1]"),
    ],
)
def test_rollout_from_json_refuses(data: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        Rollout.from_json(data)
    assert str(caught.value).startswith(message)
