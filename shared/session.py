"""The session record: one schema written by both stacks, and the DynamoDB requests
that read and update it, as pure functions and sans-I/O plans.

A plan is a generator that yields `Call`s (a DynamoDB operation and its arguments)
and receives each response, or has `ConditionFailed` thrown into it; it returns its
result. `SessionStore` and `AsyncSessionStore` (in `shared.store`) only drive plans,
so the sync and async stacks run the very same logic.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Item = dict[str, Any]
"""A DynamoDB item in the low-level typed form (`{"S": ...}`, `{"N": ...}`, ...)."""

Role = Literal["user", "agent"]

TURN_IDS = "turn_ids"
"""Bookkeeping attribute: ids of the newest turns, so a retried write is applied once."""


@dataclass(frozen=True)
class HistoryEntry:
    role: Role
    text: str
    at: str


@dataclass(frozen=True)
class SessionRecord:
    session_id: str
    user_id: str | None
    created_at: str
    updated_at: str
    ttl: int
    turns: int
    history: tuple[HistoryEntry, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The record as the FastAPI session endpoint returns it."""
        return {
            "session_id": self.session_id,
            "user_id": self.user_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "ttl": self.ttl,
            "turns": self.turns,
            "history": [{"role": e.role, "text": e.text, "at": e.at} for e in self.history],
        }


@dataclass(frozen=True)
class Call:
    """One DynamoDB operation for a store to perform."""

    operation: Literal["get_item", "put_item", "update_item", "delete_item", "describe_table"]
    kwargs: dict[str, Any] = field(default_factory=dict)


class ConditionFailed(Exception):
    """Thrown into a plan when DynamoDB rejected its call's condition."""


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    count: int
    retry_after: int


Plan = Generator[Call, Mapping[str, Any], Any]


def iso(now: float) -> str:
    """ISO 8601 UTC with milliseconds and a `Z`, the format of every record timestamp."""
    stamp = datetime.fromtimestamp(now, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _entry_item(entry: HistoryEntry) -> Item:
    return {"M": {"role": {"S": entry.role}, "text": {"S": entry.text}, "at": {"S": entry.at}}}


def to_item(record: SessionRecord) -> Item:
    """The record as a typed DynamoDB item."""
    item: Item = {
        "session_id": {"S": record.session_id},
        "created_at": {"S": record.created_at},
        "updated_at": {"S": record.updated_at},
        "ttl": {"N": str(record.ttl)},
        "turns": {"N": str(record.turns)},
        "history": {"L": [_entry_item(e) for e in record.history]},
    }
    if record.user_id is not None:
        item["user_id"] = {"S": record.user_id}
    return item


def from_item(item: Mapping[str, Any], *, history_limit: int | None = None) -> SessionRecord:
    """The record in a typed DynamoDB item; keeps only the newest `history_limit` entries."""
    entries = tuple(
        HistoryEntry(role=e["M"]["role"]["S"], text=e["M"]["text"]["S"], at=e["M"]["at"]["S"])
        for e in item.get("history", {}).get("L", [])
    )
    if history_limit is not None:
        entries = entries[-history_limit:]
    return SessionRecord(
        session_id=item["session_id"]["S"],
        user_id=item["user_id"]["S"] if "user_id" in item else None,
        created_at=item["created_at"]["S"],
        updated_at=item["updated_at"]["S"],
        ttl=int(item["ttl"]["N"]),
        turns=int(item["turns"]["N"]),
        history=entries,
    )


# One definition of "expired", for reads, writes and conditions alike: a record is expired
# once the whole second `now` falls in has reached its `ttl` (`ttl <= epoch`). Python's check
# and DynamoDB's conditions must agree exactly, or a turn on a record expiring this very
# second would be refused as expired by the condition and retried as live by Python.
LIVE = "#ttl > :epoch"
"""The condition a live record meets, with `#ttl` the ttl attribute and `:epoch` `epoch(now)`."""
EXPIRED = "#ttl <= :epoch"
"""The condition an expired record meets."""


def epoch(now: float) -> int:
    """The whole second records are judged at: what `:epoch` holds in the conditions."""
    return int(now)


def is_expired(item: Mapping[str, Any], now: float) -> bool:
    """Whether `item` has expired at `now` (as `EXPIRED` says). DynamoDB deletes expired
    items late (moto never does): readers must skip them."""
    return int(item["ttl"]["N"]) <= epoch(now)


def get_plan(table: str, session_id: str, now: float, history_limit: int) -> Plan:
    """Read a live session; returns None when absent or expired."""
    reply = yield Call("get_item", _read(table, session_id))
    item = reply.get("Item")
    if item is None or is_expired(item, now):
        return None
    return from_item(item, history_limit=history_limit)


def may_continue(record: SessionRecord | None, user_id: str | None) -> bool:
    """Whether a turn by `user_id` may continue the live session `record` (None: there is
    none, and the turn starts it). The owner is fixed when a session is created: an owned
    session takes turns from its owner only; an anonymous one from anyone, and stays
    anonymous."""
    return record is None or _may_take_turns(record.user_id, user_id)


def _may_take_turns(owner: str | None, user_id: str | None) -> bool:
    """The owner rule itself: an anonymous session takes anyone's turns, an owned one its
    owner's only."""
    return owner is None or owner == user_id


def record_turn_plan(
    table: str,
    session_id: str,
    user_id: str | None,
    user_text: str,
    agent_text: str,
    now: float,
    *,
    turn_id: str,
    ttl_seconds: int,
    history_limit: int,
    fresh: bool = False,
) -> Plan:
    """Append one exchange to a session and count the turn, atomically and exactly once;
    returns the record, or None (nothing written) when the live session belongs to another
    user (`may_continue`).

    A new session is one conditional put, owned by `user_id` (None: anonymous). An
    existing one takes a single `list_append` + `ADD turns` update, so concurrent turns on
    one session are all kept without read-modify-write races; its condition carries the
    ownership rule, so a session created meanwhile by someone else is never written to, and
    the owner is never changed (an anonymous session stays anonymous). `fresh` says which
    to try first: the caller's read found no live session. Either write is idempotent: the
    turn's `turn_id` is recorded with it and checked, so a retried request (the stores
    retry a timed-out call, which may have been applied) is not counted twice. An expired
    record is replaced by a fresh one. Trimming to `history_limit` is a second, conditional
    update: only the writer that saw the current length trims, and the last writer always
    does.
    """
    stamp = iso(now)
    entries = (
        HistoryEntry("user", user_text, stamp),
        HistoryEntry("agent", agent_text, stamp),
    )
    expires = epoch(now) + ttl_seconds
    at = {"N": str(epoch(now))}
    create = fresh
    for _ in range(5):
        if create:
            record = SessionRecord(session_id, user_id, stamp, stamp, expires, 1, entries)
            try:
                yield Call(
                    "put_item",
                    {
                        "TableName": table,
                        "Item": {**to_item(record), TURN_IDS: {"L": [{"S": turn_id}]}},
                        "ConditionExpression": f"attribute_not_exists(session_id) OR {EXPIRED}",
                        "ExpressionAttributeNames": {"#ttl": "ttl"},
                        "ExpressionAttributeValues": {":epoch": at},
                    },
                )
            except ConditionFailed:
                pass  # a live session is there (maybe this very turn, retried): see below
            else:
                return record
        else:
            try:
                reply = yield _append_call(
                    table, session_id, user_id, entries, stamp, expires, at, turn_id
                )
            except ConditionFailed:
                pass  # absent, expired, another user's, or this very turn: see below
            else:
                item = reply["Attributes"]
                yield from _trim(table, session_id, item, history_limit)
                return from_item(item, history_limit=history_limit)
        # A consistent read tells why the write was refused.
        current = (yield Call("get_item", _read(table, session_id))).get("Item")
        if current is not None and _has_turn(current, turn_id):
            return from_item(current, history_limit=history_limit)
        create = current is None or is_expired(current, now)
        if current is not None and not create and not _may_take_turns(_owner(current), user_id):
            return None  # another user's
    raise RuntimeError("session record kept changing under the turn")  # pragma: no cover


def _append_call(
    table: str,
    session_id: str,
    user_id: str | None,
    entries: tuple[HistoryEntry, ...],
    stamp: str,
    expires: int,
    at: Item,
    turn_id: str,
) -> Call:
    """The update appending `entries` to a live session `user_id` may continue."""
    names = {
        "#h": "history",
        "#t": "turns",
        "#ttl": "ttl",
        "#u": "updated_at",
        "#ids": TURN_IDS,
        "#uid": "user_id",
    }
    values: Item = {
        ":new": {"L": [_entry_item(e) for e in entries]},
        ":tids": {"L": [{"S": turn_id}]},
        ":tid": {"S": turn_id},
        ":empty": {"L": []},
        ":one": {"N": "1"},
        ":now": {"S": stamp},
        ":ttl": {"N": str(expires)},
        ":epoch": at,
    }
    owner = "attribute_not_exists(#uid)"
    if user_id is not None:
        values[":uid"] = {"S": user_id}
        owner = f"({owner} OR #uid = :uid)"
    return Call(
        "update_item",
        {
            "TableName": table,
            "Key": _key(session_id),
            "UpdateExpression": (
                "SET #h = list_append(if_not_exists(#h, :empty), :new), "
                "#ids = list_append(if_not_exists(#ids, :empty), :tids), "
                "#u = :now, #ttl = :ttl ADD #t :one"
            ),
            "ConditionExpression": (
                f"attribute_exists(session_id) AND {LIVE} AND NOT contains(#ids, :tid) AND {owner}"
            ),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ReturnValues": "ALL_NEW",
        },
    )


def turn_id_for(request_id: str, session_id: str, user_text: str) -> str:
    """A turn's id, derived from its request as both stacks see it: the request id the
    gateway forwards (kept or minted), the session and the message. A shadow turn (the same
    request, sent by the gateway to the other stack) so knows which write is the primary's
    own; a client resending a request with its id unchanged is one turn, not two."""
    key = json.dumps([request_id, session_id, user_text]).encode("utf-8", "surrogatepass")
    return hashlib.sha256(key).hexdigest()[:32]


def shadow_seed_plan(
    shadow_table: str,
    primary_table: str,
    session_id: str,
    primary_turn_id: str,
    now: float,
    history_limit: int,
) -> Plan:
    """The shadow copy of a session, for a shadow turn: (record, seeded).

    The live record in `shadow_table` when there is one (seeded False). Otherwise the
    primary's record as it stood before the turn `primary_turn_id` (the primary has written
    it already: the gateway shadows a request once the primary answered), put into the
    shadow table (seeded True: the shadow agent session must be given that history), so a
    conversation that began before shadowing was switched on is shadowed from where it is.
    (None, False): the conversation is new, this turn starts it."""
    for _ in range(5):
        item = (yield Call("get_item", _read(shadow_table, session_id))).get("Item")
        if item is not None and not is_expired(item, now):
            return from_item(item, history_limit=history_limit), False
        primary = (yield Call("get_item", _read(primary_table, session_id))).get("Item")
        if primary is None or is_expired(primary, now):
            return None, False
        before = _before_turn(primary, primary_turn_id)
        if before is None:
            return None, False  # the primary's record holds this very turn only
        try:
            yield Call(
                "put_item",
                {
                    "TableName": shadow_table,
                    "Item": before,
                    "ConditionExpression": f"attribute_not_exists(session_id) OR {EXPIRED}",
                    "ExpressionAttributeNames": {"#ttl": "ttl"},
                    "ExpressionAttributeValues": {":epoch": {"N": str(epoch(now))}},
                },
            )
        except ConditionFailed:
            continue  # another shadow turn seeded it first: take theirs
        return from_item(before, history_limit=history_limit), True
    raise RuntimeError("shadow record kept changing under the seed")  # pragma: no cover


def _before_turn(item: Mapping[str, Any], turn_id: str) -> Item | None:
    """`item` without the turn `turn_id` and those after it; None when no turn is left."""
    ids = [entry["S"] for entry in item.get(TURN_IDS, {}).get("L", [])]
    history = list(item.get("history", {}).get("L", []))
    turns = int(item["turns"]["N"])
    if turn_id in ids:
        dropped = len(ids) - ids.index(turn_id)
        ids = ids[: len(ids) - dropped]
        history = history[: max(0, len(history) - 2 * dropped)]
        turns -= dropped
    if turns <= 0:
        return None
    return {
        **item,
        "history": {"L": history},
        "turns": {"N": str(turns)},
        TURN_IDS: {"L": [{"S": i} for i in ids]},
    }


def _owner(item: Mapping[str, Any]) -> str | None:
    owner: str | None = item.get("user_id", {}).get("S")
    return owner


def _has_turn(item: Mapping[str, Any], turn_id: str) -> bool:
    return {"S": turn_id} in item.get(TURN_IDS, {}).get("L", [])


def _trim(table: str, session_id: str, item: Mapping[str, Any], history_limit: int) -> Plan:
    length = len(item["history"]["L"])
    if length <= history_limit:
        return
    # Highest index first: DynamoDB names every element by the list as it was before the
    # update, but an emulator that removes them one at a time (dynalite) then agrees too.
    removals = [f"#h[{i}]" for i in reversed(range(length - history_limit))]
    # Turn ids are kept for as many turns as history is: enough to spot a retry.
    names = {"#h": "history"}
    extra_ids = len(item.get(TURN_IDS, {}).get("L", [])) - history_limit
    if extra_ids > 0:
        names["#ids"] = TURN_IDS
        removals += [f"#ids[{i}]" for i in reversed(range(extra_ids))]
    # A failed condition means a later append changed the length: its writer trims instead.
    with contextlib.suppress(ConditionFailed):
        yield Call(
            "update_item",
            {
                "TableName": table,
                "Key": _key(session_id),
                "UpdateExpression": "REMOVE " + ", ".join(removals),
                "ConditionExpression": "size(#h) = :len",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": {":len": {"N": str(length)}},
            },
        )


def delete_plan(table: str, session_id: str, user_id: str | None, now: float) -> Plan:
    """Delete a live session owned by `user_id` (None: an anonymous session)."""
    if user_id is None:
        owner = "attribute_not_exists(user_id)"
        values: Item = {":epoch": {"N": str(epoch(now))}}
    else:
        owner = "user_id = :uid"
        values = {":epoch": {"N": str(epoch(now))}, ":uid": {"S": user_id}}
    try:
        yield Call(
            "delete_item",
            {
                "TableName": table,
                "Key": _key(session_id),
                "ConditionExpression": f"attribute_exists(session_id) AND {LIVE} AND {owner}",
                "ExpressionAttributeNames": {"#ttl": "ttl"},
                "ExpressionAttributeValues": values,
            },
        )
    except ConditionFailed:
        return False
    return True


def check_plan(table: str) -> Plan:
    """Succeed when the table answers DescribeTable (the store's health check)."""
    yield Call("describe_table", {"TableName": table})


def rate_key(client: str, window_start: int) -> str:
    """The counter's key: hashed so any client string fits, and never a valid session id."""
    digest = hashlib.sha256(client.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"ratelimit#{digest}#{window_start}"


def rate_plan(
    table: str, client: str, now: float, *, limit: int, window: int, request_id: str
) -> Plan:
    """Count one request of `client` in the current fixed window, shared by both stacks,
    exactly once: a retried call (the stores retry one that timed out, which may have been
    applied) is not counted again.

    While the window is under `limit`, the count and the request's id are added together,
    conditional on the id's absence; a refused condition means either this very request
    was counted already (allowed: it was counted under the limit) or the window is full.
    Over the limit the ids are no longer kept (the item stays small however many requests
    a client sends) and a plain increment counts the refused request.
    """
    start = math.floor(now / window) * window
    end = start + window
    key = _key(rate_key(client, start))
    ttl = {"N": str(end + window)}
    retry_after = max(1, math.ceil(end - now))
    try:
        reply = yield Call(
            "update_item",
            {
                "TableName": table,
                "Key": key,
                "UpdateExpression": "ADD hits :one, #ids :ids SET #ttl = :ttl",
                "ConditionExpression": (
                    "(attribute_not_exists(hits) OR hits < :limit) AND NOT contains(#ids, :id)"
                ),
                "ExpressionAttributeNames": {"#ttl": "ttl", "#ids": "request_ids"},
                "ExpressionAttributeValues": {
                    ":one": {"N": "1"},
                    ":ids": {"SS": [request_id]},
                    ":id": {"S": request_id},
                    ":limit": {"N": str(limit)},
                    ":ttl": ttl,
                },
                "ReturnValues": "UPDATED_NEW",
            },
        )
    except ConditionFailed:
        current = (yield Call("get_item", {**_read(table, ""), "Key": key})).get("Item", {})
        if request_id in current.get("request_ids", {}).get("SS", []):
            count = min(int(current["hits"]["N"]), limit)
            return RateDecision(allowed=True, count=count, retry_after=retry_after)
        reply = yield Call(
            "update_item",
            {
                "TableName": table,
                "Key": key,
                "UpdateExpression": "ADD hits :one SET #ttl = :ttl",
                "ExpressionAttributeNames": {"#ttl": "ttl"},
                "ExpressionAttributeValues": {":one": {"N": "1"}, ":ttl": ttl},
                "ReturnValues": "UPDATED_NEW",
            },
        )
    count = int(reply["Attributes"]["hits"]["N"])
    return RateDecision(allowed=count <= limit, count=count, retry_after=retry_after)


def _key(session_id: str) -> Item:
    return {"session_id": {"S": session_id}}


def _read(table: str, session_id: str) -> dict[str, Any]:
    return {"TableName": table, "Key": _key(session_id), "ConsistentRead": True}
