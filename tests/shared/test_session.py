"""The session record codec and plans, as pure functions."""

from __future__ import annotations

from typing import Any

import pytest

from shared import session
from shared.session import Call, ConditionFailed, HistoryEntry, SessionRecord

NOW = 1_800_000_000.25


def test_iso_is_utc_with_milliseconds() -> None:
    assert session.iso(NOW) == "2027-01-15T08:00:00.250Z"


def test_record_round_trips_through_item() -> None:
    record = SessionRecord(
        session_id="s1",
        user_id="u1",
        created_at="2027-01-15T08:00:00.250Z",
        updated_at="2027-01-15T08:01:00.000Z",
        ttl=1_800_086_400,
        turns=2,
        history=(
            HistoryEntry("user", "hi 👋", "2027-01-15T08:00:00.250Z"),
            HistoryEntry("agent", "hello", "2027-01-15T08:00:00.250Z"),
        ),
    )
    item = session.to_item(record)
    assert item == {
        "session_id": {"S": "s1"},
        "user_id": {"S": "u1"},
        "created_at": {"S": "2027-01-15T08:00:00.250Z"},
        "updated_at": {"S": "2027-01-15T08:01:00.000Z"},
        "ttl": {"N": "1800086400"},
        "turns": {"N": "2"},
        "history": {
            "L": [
                {
                    "M": {
                        "role": {"S": "user"},
                        "text": {"S": "hi 👋"},
                        "at": {"S": "2027-01-15T08:00:00.250Z"},
                    }
                },
                {
                    "M": {
                        "role": {"S": "agent"},
                        "text": {"S": "hello"},
                        "at": {"S": "2027-01-15T08:00:00.250Z"},
                    }
                },
            ]
        },
    }
    assert session.from_item(item) == record


def test_anonymous_record_has_no_user_attribute() -> None:
    record = SessionRecord("s1", None, "a", "b", 5, 0)
    assert "user_id" not in session.to_item(record)
    assert session.from_item(session.to_item(record)) == record


def test_from_item_keeps_newest_entries() -> None:
    entries = tuple(HistoryEntry("user", str(i), "t") for i in range(6))
    item = session.to_item(SessionRecord("s", None, "a", "b", 5, 3, entries))
    assert session.from_item(item, history_limit=4).history == entries[-4:]


def _first_call(plan: session.Plan) -> Call:
    return next(plan)


def test_get_plan_ignores_expired_records() -> None:
    live = session.to_item(SessionRecord("s", None, "a", "b", int(NOW) + 1, 1))
    dead = session.to_item(SessionRecord("s", None, "a", "b", int(NOW), 1))
    for item, expected in [(live, session.from_item(live)), (dead, None), (None, None)]:
        plan = session.get_plan("t", "s", NOW, 20)
        call = next(plan)
        assert call == Call(
            "get_item",
            {"TableName": "t", "Key": {"session_id": {"S": "s"}}, "ConsistentRead": True},
        )
        reply: dict[str, Any] = {} if item is None else {"Item": item}
        with pytest.raises(StopIteration) as done:
            plan.send(reply)
        assert done.value.value == expected


def _turn_plan(limit: int = 4) -> session.Plan:
    return session.record_turn_plan(
        "t", "s", "u", "question", "answer", NOW, turn_id="T1", ttl_seconds=100, history_limit=limit
    )


def test_turn_is_one_atomic_append_and_increment() -> None:
    call = _first_call(_turn_plan())
    assert call.operation == "update_item"
    assert call.kwargs["UpdateExpression"] == (
        "SET #h = list_append(if_not_exists(#h, :empty), :new), "
        "#ids = list_append(if_not_exists(#ids, :empty), :tids), #u = :now, #ttl = :ttl, "
        "#c = if_not_exists(#c, :now), #uid = if_not_exists(#uid, :uid) ADD #t :one"
    )
    assert call.kwargs["ConditionExpression"] == (
        "(attribute_not_exists(session_id) OR #ttl > :epoch) AND NOT contains(#ids, :tid)"
    )
    assert call.kwargs["ExpressionAttributeValues"][":tid"] == {"S": "T1"}
    values = call.kwargs["ExpressionAttributeValues"]
    assert values[":ttl"] == {"N": str(int(NOW) + 100)}
    assert [e["M"]["role"]["S"] for e in values[":new"]["L"]] == ["user", "agent"]
    assert [e["M"]["text"]["S"] for e in values[":new"]["L"]] == ["question", "answer"]


def _item(length: int, ttl: int = int(NOW) + 50, turn_ids: tuple[str, ...] = ()) -> dict[str, Any]:
    entries = tuple(HistoryEntry("user", str(i), "t") for i in range(length))
    item = session.to_item(SessionRecord("s", "u", "a", "b", ttl, length // 2, entries))
    item[session.TURN_IDS] = {"L": [{"S": t} for t in turn_ids]}
    return item


def _attributes(length: int, turn_ids: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"Attributes": _item(length, turn_ids=turn_ids)}


def test_turn_trims_only_what_exceeds_the_limit() -> None:
    plan = _turn_plan(limit=4)
    next(plan)
    trim = plan.send(_attributes(6, turn_ids=("a", "b", "c", "d", "T1")))
    assert trim.kwargs["UpdateExpression"] == "REMOVE #h[0], #h[1], #ids[0]"
    assert trim.kwargs["ExpressionAttributeNames"] == {"#h": "history", "#ids": "turn_ids"}
    assert trim.kwargs["ConditionExpression"] == "size(#h) = :len"
    assert trim.kwargs["ExpressionAttributeValues"] == {":len": {"N": "6"}}
    with pytest.raises(StopIteration) as done:
        plan.throw(ConditionFailed())  # a later writer will trim: not an error
    assert [e.text for e in done.value.value.history] == ["2", "3", "4", "5"]


def test_turn_within_limit_does_not_trim() -> None:
    plan = _turn_plan(limit=4)
    next(plan)
    with pytest.raises(StopIteration) as done:
        plan.send(_attributes(4))
    assert done.value.value.turns == 2


def test_retried_turn_that_was_applied_is_not_applied_again() -> None:
    # botocore retried a timed-out update that had in fact been applied: the condition
    # fails on the turn id, and the plan returns the record instead of writing again.
    plan = _turn_plan()
    next(plan)
    read = plan.throw(ConditionFailed())
    assert read == Call(
        "get_item", {"TableName": "t", "Key": {"session_id": {"S": "s"}}, "ConsistentRead": True}
    )
    with pytest.raises(StopIteration) as done:
        plan.send({"Item": _item(4, turn_ids=("T0", "T1"))})
    assert done.value.value.turns == 2


def test_turn_on_expired_record_starts_afresh() -> None:
    plan = _turn_plan()
    next(plan)
    plan.throw(ConditionFailed())
    put = plan.send({"Item": _item(4, ttl=int(NOW) - 1, turn_ids=("old",))})
    assert put.operation == "put_item"
    assert put.kwargs["ConditionExpression"] == "attribute_not_exists(session_id) OR #ttl <= :epoch"
    with pytest.raises(StopIteration) as done:
        plan.send({})
    fresh = done.value.value
    assert {**session.to_item(fresh), "turn_ids": {"L": [{"S": "T1"}]}} == put.kwargs["Item"]
    assert (fresh.turns, [e.text for e in fresh.history]) == (1, ["question", "answer"])


def test_turn_retries_append_when_another_writer_renewed_first() -> None:
    plan = _turn_plan()
    next(plan)
    plan.throw(ConditionFailed())
    plan.send({"Item": _item(4, ttl=int(NOW) - 1)})
    again = plan.throw(ConditionFailed())  # the renewal raced ours
    assert again.operation == "update_item"
    assert again.kwargs["ExpressionAttributeValues"][":tid"] == {"S": "T1"}


@pytest.mark.parametrize(
    ("user_id", "condition"),
    [
        (None, "attribute_exists(session_id) AND #ttl > :epoch AND attribute_not_exists(user_id)"),
        ("u1", "attribute_exists(session_id) AND #ttl > :epoch AND user_id = :uid"),
    ],
)
def test_delete_requires_live_record_of_the_owner(user_id: str | None, condition: str) -> None:
    plan = session.delete_plan("t", "s", user_id, NOW)
    assert next(plan).kwargs["ConditionExpression"] == condition
    with pytest.raises(StopIteration) as done:
        plan.throw(ConditionFailed())
    assert done.value.value is False


@pytest.mark.parametrize(
    ("hits", "allowed", "retry_after"),
    [(1, True, 10), (3, True, 10), (4, False, 10)],
)
def test_rate_plan_counts_in_fixed_windows(hits: int, allowed: bool, retry_after: int) -> None:
    plan = session.rate_plan("t", "10.0.0.1", 1_000_010.0, limit=3, window=60)
    call = next(plan)
    assert call.kwargs["Key"] == {"session_id": {"S": session.rate_key("10.0.0.1", 1_000_000 - 40)}}
    with pytest.raises(StopIteration) as done:
        plan.send({"Attributes": {"hits": {"N": str(hits)}}})
    assert done.value.value == session.RateDecision(allowed, hits, retry_after)


def test_rate_keys_never_collide_with_session_ids() -> None:
    from shared.contract import is_identifier

    assert not is_identifier(session.rate_key("127.0.0.1", 0))
    assert session.rate_key("a", 60) != session.rate_key("b", 60)
    assert session.rate_key("a", 60) != session.rate_key("a", 120)


# A record expires in the very second its `ttl` names: with a whole-second `now`, `ttl == now`
# exactly. Python's check and the conditions DynamoDB evaluates must both call it expired.
WHOLE = float(int(NOW))


def test_expired_is_one_definition_for_checks_and_conditions() -> None:
    assert (session.LIVE, session.EXPIRED) == ("#ttl > :epoch", "#ttl <= :epoch")
    assert session.epoch(NOW) == session.epoch(WHOLE) == int(NOW)
    at_this_second = session.to_item(SessionRecord("s", None, "a", "b", int(WHOLE), 1))
    a_second_later = session.to_item(SessionRecord("s", None, "a", "b", int(WHOLE) + 1, 1))
    assert [session.is_expired(at_this_second, now) for now in (WHOLE - 1, WHOLE, NOW)] == [
        False,
        True,
        True,
    ]
    assert session.is_expired(a_second_later, WHOLE) is False


def test_a_read_at_the_ttl_second_finds_nothing() -> None:
    plan = session.get_plan("t", "s", WHOLE, 20)
    next(plan)
    with pytest.raises(StopIteration) as done:
        plan.send({"Item": session.to_item(SessionRecord("s", None, "a", "b", int(WHOLE), 1))})
    assert done.value.value is None


def test_a_turn_at_the_ttl_second_starts_afresh() -> None:
    plan = session.record_turn_plan(
        "t", "s", "u", "question", "answer", WHOLE, turn_id="T1", ttl_seconds=100, history_limit=4
    )
    first = next(plan)
    assert first.kwargs["ExpressionAttributeValues"][":epoch"] == {"N": str(int(WHOLE))}
    plan.throw(ConditionFailed())  # `#ttl > :epoch` is false when ttl == epoch
    put = plan.send({"Item": _item(4, ttl=int(WHOLE), turn_ids=("old",))})
    assert put.operation == "put_item"
    assert put.kwargs["ExpressionAttributeValues"] == {":epoch": {"N": str(int(WHOLE))}}
