"""The rollout in DynamoDB, shared by every gateway worker and replica, and its in-memory view.

`RolloutStore` reads and changes the rollout with optimistic concurrency and audits every
change; `RolloutState` keeps the current rollout in memory and polls the store, so the request
path never waits on DynamoDB and every worker converges within one polling interval.

Layout, in a table keyed by `session_id` (the session table's schema; none of these keys is a
valid session id, since `#` is outside the id pattern):

- `gateway#rollout`: `fastapi_percent` (N), `routes` (M of N), `version` (N),
  `shadow_percent` (N; absent in items written before shadowing: 0), `updated_at`
  (S, ISO 8601 UTC). Small on purpose: every worker reads it every interval, and DynamoDB
  charges a read by the whole item's size.
- `gateway#rollout#change#<version>`, one per change: `change_id` (S), `at` (S), `actor` (S),
  `old` and `new` (M `{fastapi_percent, routes, version, shadow_percent}`). Written in the
  same transaction as the rollout (so a change is never applied unaudited), which also
  deletes the change `HISTORY_LIMIT` versions older: the newest 200 are kept.
- `gateway#rollout#plan`: the progressive rollout plan (`plan.py`): `plan` (S, its JSON)
  and `seq` (N, bumped by every write). Written in the rollout's transactions when a
  change is audited (a plan's start, check, step, pause...), so the version of the rollout
  orders plan events too, and a worker that polls the rollout sees a plan changed; alone,
  conditional on `seq`, for the one update nobody needs audited (another interval waiting).
  Change items of plan events carry `event` (S, JSON: what happened, the check's values).
- `gateway#controller#lease`: `holder` (S), `expires_at` (N, epoch seconds): which worker
  runs the plan's checks. Taken with a conditional write where it is free or expired.
- `gateway#salt`: `salt` (S), `origin` (S: `generated`, or `legacy` for the public salt a
  deployment already routed by), `created_at` (S). The routing salt, secret per deployment,
  read once when a gateway starts and never polled: a salt changing under a split would move
  conversations between the stacks. Written only where none is stored, with a condition, so
  gateways starting at once all end with the one that was written first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import structlog
from botocore.exceptions import ClientError

from harness.gateway import plan as plan_events
from harness.gateway.background import cancel
from harness.gateway.plan import Plan
from harness.gateway.policy import LEGACY_SALT, Rollout, validate_percent, validate_prefix
from shared.aws import error_code, is_store_down
from shared.session import iso

__all__ = [
    "HISTORY_LIMIT",
    "MAX_PREFIX_LENGTH",
    "MAX_ROUTES",
    "ROLLOUT_KEY",
    "SALT_KEY",
    "Change",
    "Decided",
    "RolloutConflict",
    "RolloutState",
    "RolloutStore",
    "RolloutUnavailable",
    "Salt",
    "VersionConflict",
]

ROLLOUT_KEY = "gateway#rollout"
"""The rollout item's key; each change is at `f"{ROLLOUT_KEY}#change#{version}"`."""

SALT_KEY = "gateway#salt"
"""The routing salt's item."""

PLAN_KEY = f"{ROLLOUT_KEY}#plan"
"""The progressive rollout plan's item."""

LEASE_KEY = "gateway#controller#lease"
"""The rollout controller's lease."""

HISTORY_LIMIT = 200
"""The newest changes kept."""

MAX_ROUTES = 64
"""Route overrides one rollout may hold: with `MAX_PREFIX_LENGTH`, a change item (two
rollouts) stays far below DynamoDB's 400 KB item limit."""

MAX_PREFIX_LENGTH = 256
"""Longest route prefix accepted, in characters."""

MAX_ATTEMPTS = 10
"""Read-modify-write attempts per update: each failed one means another writer succeeded,
so ten concurrent admins still all get through."""

_BATCH = 100
"""Keys per BatchGetItem, DynamoDB's maximum."""

Item = dict[str, Any]

log = structlog.get_logger("harness.gateway.rollout")


class RolloutUnavailable(Exception):
    """The rollout store could not be reached or did not answer in time; retry later."""


class RolloutConflict(RolloutUnavailable):
    """The rollout kept changing under an update, `MAX_ATTEMPTS` times in a row; retry later.

    A kind of `RolloutUnavailable`: to the caller it is the same (a transient refusal)."""


class VersionConflict(Exception):
    """A change based on a version of the rollout that is no longer current (409)."""

    def __init__(self, based_on: int, current: int) -> None:
        super().__init__(
            f"The rollout changed since version {based_on}: it is at version {current} now; "
            "read it again and redo the change"
        )
        self.based_on = based_on
        self.current = current


class _ConditionFailed(Exception):
    """DynamoDB rejected a write's condition (or a transaction on the same item won)."""


@dataclass(frozen=True)
class Change:
    """One audited change of the rollout: when, by whom, and the rollout before and after."""

    at: str
    actor: str
    old: Rollout
    new: Rollout
    event: Mapping[str, Any] | None = None
    """What a plan event did (`plan.py`), for changes a plan made or that changed a plan."""

    def to_json(self) -> dict[str, Any]:
        """The change as JSON-ready data, as the admin API shows it."""
        shown = {
            "at": self.at,
            "actor": self.actor,
            "old": self.old.to_json(),
            "new": self.new.to_json(),
        }
        if self.event is not None:
            shown["event"] = dict(self.event)
        return shown


@dataclass(frozen=True)
class Decided:
    """What a `RolloutStore.transact` decision asks for: rollout changes (the `update`
    arguments), the plan after it (None: unchanged), what the history records, and whether
    the history records it at all (the plan alone is written otherwise)."""

    changes: Mapping[str, Any] = field(default_factory=dict)
    plan: Plan | None = None
    event: Mapping[str, Any] | None = None
    audited: bool = True


Decide = Callable[[Rollout, "Plan | None"], Decided]
"""Given the rollout and the plan as stored, what to change; raises to refuse."""


@dataclass(frozen=True)
class Salt:
    """The routing salt and where it came from: "setting" (`GATEWAY_SALT`), "generated" (by
    the first gateway of a deployment), "legacy" (the public salt a deployment that already
    routed kept), or "stored" (put in the table by hand, as a rotation does). The value is
    a secret: kept out of the repr, so a logged salt shows only its origin."""

    value: str = field(repr=False)
    origin: str


_ORIGINS = frozenset({"generated", "legacy", "stored"})


# --- the item codec: pure -------------------------------------------------------------------


def _key(name: str) -> Item:
    return {"session_id": {"S": name}}


def _change_key(version: int) -> Item:
    return _key(f"{ROLLOUT_KEY}#change#{version}")


def _number(value: float) -> Item:
    # Fixed-point text: DynamoDB numbers are decimal, and "1e-07" is best not relied on.
    return {"N": format(Decimal(repr(value)), "f")}


def _rollout_attributes(rollout: Rollout) -> Item:
    return {
        "fastapi_percent": _number(rollout.fastapi_percent),
        "routes": {"M": {prefix: _number(p) for prefix, p in rollout.routes.items()}},
        "version": {"N": str(rollout.version)},
        "shadow_percent": _number(rollout.shadow_percent),
    }


def _rollout_from(data: Mapping[str, Any]) -> Rollout:
    return Rollout(
        fastapi_percent=float(data["fastapi_percent"]["N"]),
        routes={k: float(v["N"]) for k, v in data.get("routes", {}).get("M", {}).items()},
        version=int(data["version"]["N"]),
        # Absent from rollouts written before shadowing existed: none then.
        shadow_percent=float(data.get("shadow_percent", {"N": "0"})["N"]),
    )


def _rollout_item(rollout: Rollout, updated_at: str) -> Item:
    return {**_key(ROLLOUT_KEY), **_rollout_attributes(rollout), "updated_at": {"S": updated_at}}


def _change_item(change: Change, change_id: str) -> Item:
    item = {
        **_change_key(change.new.version),
        "change_id": {"S": change_id},
        "at": {"S": change.at},
        "actor": {"S": change.actor},
        "old": {"M": _rollout_attributes(change.old)},
        "new": {"M": _rollout_attributes(change.new)},
    }
    if change.event is not None:
        item["event"] = {"S": json.dumps(change.event, separators=(",", ":"))}
    return item


def _plan_item(plan: Plan) -> Item:
    return {
        **_key(PLAN_KEY),
        "plan": {"S": json.dumps(plan.to_json(), separators=(",", ":"))},
        "seq": {"N": str(plan.seq)},
    }


def _plan_from(item: Mapping[str, Any]) -> Plan:
    return Plan.from_json(json.loads(item["plan"]["S"]))


def _plan_condition(stored: Plan | None) -> dict[str, Any]:
    """The condition that the plan item is still as `stored` was read."""
    if stored is None:
        return {"ConditionExpression": "attribute_not_exists(session_id)"}
    return {
        "ConditionExpression": "#s = :s",
        "ExpressionAttributeNames": {"#s": "seq"},
        "ExpressionAttributeValues": {":s": {"N": str(stored.seq)}},
    }


def _salt_item(salt: Salt, created_at: str) -> Item:
    return {
        **_key(SALT_KEY),
        "salt": {"S": salt.value},
        "origin": {"S": salt.origin},
        "created_at": {"S": created_at},
    }


def _salt_from(item: Mapping[str, Any]) -> Salt:
    origin = item.get("origin", {}).get("S", "stored")
    return Salt(item["salt"]["S"], origin if origin in _ORIGINS else "stored")


def _change_from(item: Mapping[str, Any]) -> Change:
    event = item.get("event")
    return Change(
        at=item["at"]["S"],
        actor=item["actor"]["S"],
        old=_rollout_from(item["old"]["M"]),
        new=_rollout_from(item["new"]["M"]),
        event=None if event is None else json.loads(event["S"]),
    )


def _changed(old: Rollout, changes: Mapping[str, Any]) -> Rollout:
    """`old` with `changes` (the `update` arguments, validated) and the next version."""
    routes = _routes_after(old.routes, changes.get("routes") or {})
    if len(routes) > MAX_ROUTES:
        raise ValueError(f"At most {MAX_ROUTES} route overrides are allowed")
    return Rollout(
        fastapi_percent=changes.get("fastapi_percent", old.fastapi_percent),
        routes=routes,
        version=old.version + 1,
        shadow_percent=changes.get("shadow_percent", old.shadow_percent),
    )


def _moves_share(changes: Mapping[str, Any], plan: Plan) -> bool:
    """Whether `changes` set the share `plan` moves."""
    prefix = plan.spec.prefix
    if prefix is None:
        return "fastapi_percent" in changes
    return prefix in (changes.get("routes") or {})


def _routes_after(
    current: Mapping[str, float], changes: Mapping[str, float | None]
) -> dict[str, float]:
    routes = dict(current)
    for prefix, percent in changes.items():
        if percent is None:
            routes.pop(prefix, None)  # removing an absent override is a no-op, not an error
        else:
            routes[prefix] = percent
    return routes


def _labelled(label: str, check: Callable[[object], Any], value: object) -> Any:
    try:
        return check(value)
    except ValueError as exc:
        raise ValueError(f"{label}: {exc}") from None


def _validated_routes(routes: object) -> dict[str, float | None]:
    if not isinstance(routes, Mapping):
        raise ValueError("routes must map path prefixes to a percent or null")
    valid: dict[str, float | None] = {}
    for prefix, percent in routes.items():
        validate_prefix(prefix)
        if len(prefix) > MAX_PREFIX_LENGTH:
            raise ValueError(f"route prefix must be at most {MAX_PREFIX_LENGTH} characters")
        valid[prefix] = (
            None if percent is None else _labelled(f"routes[{prefix!r}]", validate_percent, percent)
        )
    return valid


def _cancellation_reasons(exc: BaseException) -> set[str]:
    if error_code(exc) != "TransactionCanceledException" or not isinstance(exc, ClientError):
        return set()
    reasons: list[dict[str, Any]] = exc.response.get("CancellationReasons", [])  # type: ignore[assignment]
    return {str(r.get("Code")) for r in reasons}


def _is_condition_failed(exc: BaseException) -> bool:
    if error_code(exc) in ("ConditionalCheckFailedException", "TransactionConflictException"):
        return True
    # Only a lost race is worth redoing; any other cancellation is a real error.
    return bool(_cancellation_reasons(exc) & {"ConditionalCheckFailed", "TransactionConflict"})


def _is_unavailable(exc: BaseException) -> bool:
    if is_store_down(exc):
        return True
    # A cancelled transaction names its reasons per item instead of one error code.
    throttled = {"ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"}
    return bool(_cancellation_reasons(exc) & throttled)


# --- the store ------------------------------------------------------------------------------


class RolloutStore:
    """The rollout in DynamoDB, over an aioboto3 client (or a fake with its methods)."""

    def __init__(
        self,
        client: Any,
        table: str,
        *,
        initial: Rollout,
        salt: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._table = table
        self._initial = initial
        self._salt = salt
        self._clock = clock

    @property
    def initial(self) -> Rollout:
        """The rollout the item is created with when it does not exist yet."""
        return self._initial

    async def load(self) -> Rollout:
        """The stored rollout; the item is created from `initial` when absent.

        Raises `RolloutUnavailable` when DynamoDB cannot be reached.
        """
        return await self._read() or await self._create()

    async def load_salt(self) -> Salt:
        """The routing salt: the one given (`GATEWAY_SALT`), else the one stored, else one
        stored now. Call it before `load()` creates the rollout, so a deployment's first
        gateway finds neither.

        A new secret salt is generated only where no rollout exists yet. A deployment that
        already routes (its rollout item exists, but no salt) routed by the public
        `LEGACY_SALT`, and a new salt would move every conversation between the stacks: it
        keeps that one, stored as "legacy", until rotated (README). Either is written in one
        transaction with a check of the rollout item, so the rollout cannot appear between
        the decision and the write; a gateway that loses the race reads the winner's salt.
        Raises `RolloutUnavailable` when DynamoDB cannot be reached.
        """
        if self._salt is not None:
            return Salt(self._salt, "setting")
        for _ in range(3):
            stored = await self._get(_key(SALT_KEY))
            if stored is not None:
                return _salt_from(stored)
            routes = await self._get(_key(ROLLOUT_KEY)) is not None
            salt = (
                Salt(LEGACY_SALT, "legacy")
                if routes
                else Salt(secrets.token_urlsafe(32), "generated")
            )
            rollout_is = "attribute_exists" if routes else "attribute_not_exists"
            writes: list[Item] = [
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": _salt_item(salt, iso(self._clock())),
                        "ConditionExpression": "attribute_not_exists(session_id)",
                    }
                },
                {
                    "ConditionCheck": {
                        "TableName": self._table,
                        "Key": _key(ROLLOUT_KEY),
                        "ConditionExpression": f"{rollout_is}(session_id)",
                    }
                },
            ]
            try:
                await self._call("transact_write_items", TransactItems=writes)
            except _ConditionFailed:
                # Another gateway stored a salt first, or the rollout came or went since it
                # was read: read both again.
                continue
            return salt
        raise RolloutConflict("the routing salt kept changing while being stored")

    async def update(
        self,
        *,
        fastapi_percent: float | None = None,
        routes: Mapping[str, float | None] | None = None,
        shadow_percent: float | None = None,
        actor: str,
        version: int | None = None,
    ) -> Change:
        """Change the default percentage, route overrides (a percent, or None to remove
        that prefix's override) and/or the shadowed share, bump the version and audit the
        change; returns it. `version`: the version the change was based on.

        A running plan whose share this changes is paused by it, in the same change: a
        person has taken the share over (`plan.py`).

        Raises ValueError for an invalid value (nothing is written), `VersionConflict` when
        `version` is no longer current, `RolloutUnavailable` when DynamoDB cannot be
        reached, `RolloutConflict` when other writers kept winning.
        """
        if fastapi_percent is None and shadow_percent is None and not routes:
            raise ValueError(
                "Nothing to change: give fastapi_percent, shadow_percent and/or routes"
            )
        changes: dict[str, Any] = {}
        if fastapi_percent is not None:
            changes["fastapi_percent"] = _labelled(
                "fastapi_percent", validate_percent, fastapi_percent
            )
        if shadow_percent is not None:
            changes["shadow_percent"] = _labelled(
                "shadow_percent", validate_percent, shadow_percent
            )
        if routes:
            changes["routes"] = _validated_routes(routes)

        def decide(old: Rollout, plan: Plan | None) -> Decided:
            if plan is None or not plan.running or not _moves_share(changes, plan):
                return Decided(changes)
            paused = plan_events.pause(plan, self._clock(), f"paused: {actor} changed the share")
            return Decided(changes, paused.plan, paused.event)

        return await self.transact(actor, decide, version=version)

    async def transact(self, actor: str, decide: Decide, *, version: int | None = None) -> Change:
        """One audited change, decided by `decide(rollout, plan)` on what is stored now and
        written in one transaction: the rollout (its version bumped), the change item and,
        when the decision changes it, the plan. Redone on a fresh read when another writer
        got in between, so `decide` may run more than once; it raises to refuse (ValueError,
        `PlanError`), and nothing is written then. A decision that is not `audited` writes
        the plan alone and returns the change it would have been (version not bumped).

        Raises `VersionConflict` when `version` is given and no longer current,
        `RolloutUnavailable` when DynamoDB cannot be reached, `RolloutConflict` when other
        writers kept winning.
        """
        # Recorded with the change, so that a write which landed although its reply was lost
        # (botocore then retries it, and the retry's condition fails) is recognised as ours
        # instead of being applied a second time.
        change_id = uuid.uuid4().hex
        for attempt in range(MAX_ATTEMPTS):
            old = await self.load()
            if version is not None and old.version != version:
                raise VersionConflict(version, old.version)
            stored = await self.load_plan()
            decided = decide(old, stored)
            new = _changed(old, decided.changes)
            event = decided.event
            if event is not None and decided.plan is not None:
                was = None if stored is None else stored.phase
                event = {**event, "previous_phase": was}
            change = Change(at=iso(self._clock()), actor=actor, old=old, new=new, event=event)
            try:
                if not decided.audited:
                    if decided.plan is not None:
                        await self._put_plan(decided.plan, stored)
                    return replace(change, new=old)
                await self._write(change, change_id, decided.plan, stored)
            except _ConditionFailed:
                landed = await self._get(_change_key(new.version))
                if landed is not None and landed.get("change_id", {}).get("S") == change_id:
                    return _change_from(landed)
                # Another writer got in between: back off a little, with jitter so that
                # writers in lockstep spread out, and redo the change on the new state.
                await asyncio.sleep(random.uniform(0, 0.005 * (attempt + 1)))
                continue
            return change
        raise RolloutConflict(f"the rollout changed under {MAX_ATTEMPTS} attempts to update it")

    async def load_plan(self) -> Plan | None:
        """The stored plan (any phase), or None when none was ever started."""
        item = await self._get(_key(PLAN_KEY))
        return None if item is None else _plan_from(item)

    async def lease(self) -> tuple[str, float] | None:
        """The controller's lease as stored: its holder and when it expires (epoch s)."""
        item = await self._get(_key(LEASE_KEY))
        if item is None:
            return None
        return item["holder"]["S"], float(item["expires_at"]["N"])

    async def take_lease(self, holder: str, seconds: float) -> float | None:
        """Take or renew the controller's lease for `seconds`: its expiry when `holder`
        has it now, None when another holder's lease has not expired."""
        now = self._clock()
        expires = now + seconds
        try:
            await self._call(
                "put_item",
                TableName=self._table,
                Item={
                    **_key(LEASE_KEY),
                    "holder": {"S": holder},
                    "expires_at": _number(expires),
                    "taken_at": {"S": iso(now)},
                },
                ConditionExpression="attribute_not_exists(session_id) OR #h = :h OR #e < :now",
                ExpressionAttributeNames={"#h": "holder", "#e": "expires_at"},
                ExpressionAttributeValues={":h": {"S": holder}, ":now": _number(now)},
            )
        except _ConditionFailed:
            return None
        return expires

    async def release_lease(self, holder: str) -> None:
        """Give the lease up (at shutdown), so another worker need not wait for it to
        expire; nothing when `holder` no longer has it."""
        with contextlib.suppress(_ConditionFailed):
            await self._call(
                "delete_item",
                TableName=self._table,
                Key=_key(LEASE_KEY),
                ConditionExpression="#h = :h",
                ExpressionAttributeNames={"#h": "holder"},
                ExpressionAttributeValues={":h": {"S": holder}},
            )

    async def history(self, limit: int = 100) -> list[Change]:
        """The newest `limit` changes (at most `HISTORY_LIMIT` are kept), newest first."""
        if limit < 0:
            raise ValueError("limit must not be negative")
        limit = min(limit, HISTORY_LIMIT)
        current = await self._read()
        if current is None:
            return []
        versions = range(current.version, max(current.version - limit, 0), -1)
        found: dict[int, Change] = {}
        keys = [_change_key(v) for v in versions]
        for start in range(0, len(keys), _BATCH):
            for item in await self._batch_get(keys[start : start + _BATCH]):
                stored = _change_from(item)
                found[stored.new.version] = stored
        # Follow the chain back from the current rollout: it ends where changes were trimmed,
        # or at the item's creation (a change item left from before the rollout item was
        # deleted and recreated does not lead to it, so it is not shown).
        history: list[Change] = []
        expected = current
        for version in versions:
            change = found.get(version)
            if change is None or change.new != expected:
                break
            history.append(change)
            expected = change.old
        return history

    async def _put_plan(self, plan: Plan, stored: Plan | None) -> None:
        await self._call(
            "put_item", TableName=self._table, Item=_plan_item(plan), **_plan_condition(stored)
        )

    async def _write(
        self,
        change: Change,
        change_id: str,
        plan: Plan | None = None,
        stored: Plan | None = None,
    ) -> None:
        writes: list[Item] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": _rollout_item(change.new, change.at),
                    "ConditionExpression": "#v = :v",
                    "ExpressionAttributeNames": {"#v": "version"},
                    "ExpressionAttributeValues": {":v": {"N": str(change.old.version)}},
                }
            },
            # Unconditional: a change item left from before the rollout item was deleted and
            # recreated must not block new changes; the version condition already makes this
            # writer the only one for this version.
            {"Put": {"TableName": self._table, "Item": _change_item(change, change_id)}},
        ]
        if plan is not None:
            # Conditional too: the plan is also written alone (`_put_plan`), outside the
            # rollout's version.
            put = {"TableName": self._table, "Item": _plan_item(plan), **_plan_condition(stored)}
            writes.append({"Put": put})
        stale = change.new.version - HISTORY_LIMIT
        if stale > 0:
            writes.append({"Delete": {"TableName": self._table, "Key": _change_key(stale)}})
        await self._call("transact_write_items", TransactItems=writes)

    async def _get(self, key: Item) -> Item | None:
        reply = await self._call(
            "get_item",
            TableName=self._table,
            Key=key,
            # Strongly consistent: a worker must see a change by its next poll.
            ConsistentRead=True,
        )
        item: Item | None = reply.get("Item")
        return item

    async def _read(self) -> Rollout | None:
        item = await self._get(_key(ROLLOUT_KEY))
        return None if item is None else _rollout_from(item)

    async def _create(self) -> Rollout:
        for _ in range(3):
            try:
                await self._call(
                    "put_item",
                    TableName=self._table,
                    Item=_rollout_item(self._initial, iso(self._clock())),
                    ConditionExpression="attribute_not_exists(session_id)",
                )
            except _ConditionFailed:
                # Another worker created it first: theirs wins (the same initial rollout,
                # or already a change of it).
                winner = await self._read()
                if winner is not None:
                    return winner
                continue  # deleted again meanwhile: try creating once more
            return self._initial
        raise RolloutConflict("the rollout item kept disappearing while being created")

    async def _batch_get(self, keys: list[Item]) -> list[Item]:
        items: list[Item] = []
        pending: Item = {self._table: {"Keys": keys, "ConsistentRead": True}}
        for attempt in range(5):
            reply = await self._call("batch_get_item", RequestItems=pending)
            items += reply.get("Responses", {}).get(self._table, [])
            pending = reply.get("UnprocessedKeys") or {}
            if not pending:
                return items
            # DynamoDB returns unprocessed keys when throttled: back off before asking again.
            await asyncio.sleep(0.05 * 2**attempt)
        raise RolloutUnavailable("rollout history: keys kept coming back unprocessed")

    async def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return await getattr(self._client, operation)(**kwargs)
        except Exception as exc:
            if _is_condition_failed(exc):
                raise _ConditionFailed() from exc
            if _is_unavailable(exc):
                raise RolloutUnavailable(f"rollout store unavailable: {exc}") from exc
            raise


# --- the in-memory view ---------------------------------------------------------------------


Listener = Callable[[Rollout], None]


class RolloutState:
    """The current rollout in memory, refreshed from the store in the background, so every
    worker and replica converges within `interval` seconds of a change."""

    def __init__(self, store: RolloutStore, *, interval: float = 1.0) -> None:
        if not interval > 0:
            raise ValueError("interval must be positive")
        self._store = store
        self._interval = interval
        self._current: Rollout | None = None
        self._plan: Plan | None = None
        self._salt: Salt | None = None
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        # Bumped by apply(): a poll that was in flight across an apply() may carry the state
        # from before that change, so its result is dropped (the next poll is fresh).
        self._generation = 0
        self._failures = 0
        self._last_error: str | None = None
        self._last_read: float | None = None

    @property
    def store(self) -> RolloutStore:
        """The store this state polls (the admin API changes the rollout through it)."""
        return self._store

    @property
    def salt(self) -> str:
        """The routing salt, read once at `start()`. RuntimeError before it."""
        if self._salt is None:
            raise RuntimeError("RolloutState.salt read before start()")
        return self._salt.value

    @property
    def current(self) -> Rollout:
        """The rollout this worker routes by; never blocks. RuntimeError before `start()`."""
        if self._current is None:
            raise RuntimeError("RolloutState.current read before start()")
        return self._current

    @property
    def plan(self) -> Plan | None:
        """The plan as of the last rollout version this worker saw (every audited plan
        event bumps the version, so a phase or step change is seen within one poll)."""
        return self._plan

    def health(self) -> dict[str, Any]:
        """How this worker's view of the rollout stands: `ok`, or `degraded` while the store
        cannot be read (the last rollout read keeps routing), with why and since when."""
        degraded = self._failures > 0
        return {
            "status": "degraded" if degraded else "ok",
            "reason": f"rollout store unreachable: {self._last_error}" if degraded else None,
            "consecutive_failures": self._failures,
            "last_read_at": None if self._last_read is None else iso(self._last_read),
            "rollout_version": None if self._current is None else self._current.version,
            "salt_origin": None if self._salt is None else self._salt.origin,
        }

    def add_listener(self, callback: Listener) -> None:
        """Call `callback(rollout)` on every change of `current` (and once at start)."""
        self._listeners.append(callback)

    async def start(self) -> None:
        """Load the routing salt and the rollout (raising `RolloutUnavailable` if the store
        is unreachable), then poll the rollout every `interval` seconds in a background
        task. The salt first: a rollout created before the salt would make the deployment's
        first gateway keep the legacy salt."""
        if self._task is not None:
            raise RuntimeError("RolloutState already started")
        self._salt = await self._store.load_salt()
        if self._salt.origin == "legacy":
            log.warning(
                "rollout.legacy_salt",
                reason="this deployment routes by the public salt of earlier versions: anyone "
                "can work out which stack a conversation lands on; rotate it at 0 % or 100 % "
                "(README, 'The routing salt')",
            )
        rollout = await self._store.load()
        self._plan = await self._store.load_plan()
        self._set(rollout)
        self._last_read = time.time()
        self._task = asyncio.create_task(self._poll(), name="rollout-poll")

    async def stop(self) -> None:
        """Stop polling (safe to call twice, or without a start)."""
        task, self._task = self._task, None
        await cancel(task)

    async def apply(self, change: Change, plan: Plan | None = None) -> None:
        """Route by `change.new` at once: the worker that made a change sees it immediately,
        and the plan it wrote, if any.

        A change older than what a poll has already brought in is ignored.
        """
        self._generation += 1
        if self._current is None or change.new.version >= self._current.version:
            if plan is not None:
                self._plan = plan
            self._set(change.new)

    def _set(self, rollout: Rollout) -> None:
        if rollout == self._current:
            return
        self._current = rollout
        for callback in list(self._listeners):
            try:
                callback(rollout)
            except Exception:
                # A broken listener (metrics) must not stop routing or the poll loop.
                log.exception("rollout.listener_failed", listener=repr(callback))

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            generation = self._generation
            try:
                rollout = await self._store.load()
                if self._current is None or rollout.version != self._current.version:
                    plan = await self._store.load_plan()  # only read when it may have changed
                    if generation == self._generation:
                        self._plan = plan
            except Exception as exc:
                # Keep routing by the last known rollout: the store being down must not
                # change where traffic goes.
                self._failures += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "rollout.poll_failed",
                    error=self._last_error,
                    consecutive_failures=self._failures,
                    version=self.current.version,
                )
                continue
            self._last_read = time.time()
            if self._failures:
                log.info("rollout.poll_recovered", after_failures=self._failures)
                self._failures, self._last_error = 0, None
            if generation == self._generation:
                self._set(rollout)
