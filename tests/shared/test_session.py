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


def _turn_plan(limit: int = 4, user: str | None = "u", *, fresh: bool = False) -> session.Plan:
    return session.record_turn_plan(
        "t",
        "s",
        user,
        "question",
        "answer",
        NOW,
        turn_id="T1",
        ttl_seconds=100,
        history_limit=limit,
        fresh=fresh,
    )


READ = Call(
    "get_item", {"TableName": "t", "Key": {"session_id": {"S": "s"}}, "ConsistentRead": True}
)


def test_turn_is_one_atomic_append_and_increment() -> None:
    call = _first_call(_turn_plan())
    assert call.operation == "update_item"
    # The owner is never written by a turn on an existing session: it was fixed at creation.
    assert call.kwargs["UpdateExpression"] == (
        "SET #h = list_append(if_not_exists(#h, :empty), :new), "
        "#ids = list_append(if_not_exists(#ids, :empty), :tids), #u = :now, #ttl = :ttl "
        "ADD #t :one"
    )
    assert call.kwargs["ConditionExpression"] == (
        "attribute_exists(session_id) AND #ttl > :epoch AND NOT contains(#ids, :tid) "
        "AND (attribute_not_exists(#uid) OR #uid = :uid)"
    )
    values = call.kwargs["ExpressionAttributeValues"]
    assert (values[":tid"], values[":uid"]) == ({"S": "T1"}, {"S": "u"})
    assert values[":ttl"] == {"N": str(int(NOW) + 100)}
    assert [e["M"]["role"]["S"] for e in values[":new"]["L"]] == ["user", "agent"]
    assert [e["M"]["text"]["S"] for e in values[":new"]["L"]] == ["question", "answer"]


def test_an_anonymous_turn_appends_only_to_an_anonymous_session() -> None:
    call = _first_call(_turn_plan(user=None))
    assert call.kwargs["ConditionExpression"].endswith("AND attribute_not_exists(#uid)")
    assert ":uid" not in call.kwargs["ExpressionAttributeValues"]


def test_a_new_session_is_one_conditional_put_owned_by_its_first_user() -> None:
    plan = _turn_plan(fresh=True)
    put = next(plan)
    assert put.operation == "put_item"
    assert put.kwargs["ConditionExpression"] == "attribute_not_exists(session_id) OR #ttl <= :epoch"
    assert put.kwargs["Item"]["user_id"] == {"S": "u"}
    with pytest.raises(StopIteration) as done:
        plan.send({})
    assert (done.value.value.user_id, done.value.value.turns) == ("u", 1)


def _item(
    length: int,
    ttl: int = int(NOW) + 50,
    turn_ids: tuple[str, ...] = (),
    owner: str | None = "u",
) -> dict[str, Any]:
    entries = tuple(HistoryEntry("user", str(i), "t") for i in range(length))
    item = session.to_item(SessionRecord("s", owner, "a", "b", ttl, length // 2, entries))
    item[session.TURN_IDS] = {"L": [{"S": t} for t in turn_ids]}
    return item


def _attributes(length: int, turn_ids: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"Attributes": _item(length, turn_ids=turn_ids)}


@pytest.mark.parametrize("fresh", [False, True])
@pytest.mark.parametrize("user", [None, "mallory"])
def test_a_turn_on_another_users_session_writes_nothing(fresh: bool, user: str | None) -> None:
    # Refused by the owner condition (or, for a put, by the session being there: created
    # meanwhile), the plan reads the record, sees another owner and gives up.
    plan = _turn_plan(user=user, fresh=fresh)
    next(plan)
    assert plan.throw(ConditionFailed()) == READ
    with pytest.raises(StopIteration) as done:
        plan.send({"Item": _item(4, owner="alice")})
    assert done.value.value is None


@pytest.mark.parametrize("owner", [None, "u"])
def test_a_put_raced_by_a_session_the_user_may_continue_appends_to_it(owner: str | None) -> None:
    plan = _turn_plan(fresh=True)
    next(plan)
    assert plan.throw(ConditionFailed()) == READ
    append = plan.send({"Item": _item(4, owner=owner)})
    assert append.operation == "update_item"
    assert "#uid = :uid" in append.kwargs["ConditionExpression"]


def test_turn_trims_only_what_exceeds_the_limit() -> None:
    plan = _turn_plan(limit=4)
    next(plan)
    trim = plan.send(_attributes(6, turn_ids=("a", "b", "c", "d", "T1")))
    assert trim.kwargs["UpdateExpression"] == "REMOVE #h[1], #h[0], #ids[0]"
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


@pytest.mark.parametrize("fresh", [False, True])
def test_retried_turn_that_was_applied_is_not_applied_again(fresh: bool) -> None:
    # botocore retried a timed-out write that had in fact been applied: the condition
    # fails on the turn id (or the session being there), and the plan returns the record
    # instead of writing again.
    plan = _turn_plan(fresh=fresh)
    next(plan)
    assert plan.throw(ConditionFailed()) == READ
    with pytest.raises(StopIteration) as done:
        plan.send({"Item": _item(4, turn_ids=("T0", "T1"), owner=None if fresh else "u")})
    assert done.value.value.turns == 2


def test_turn_on_expired_record_starts_afresh() -> None:
    plan = _turn_plan()
    next(plan)
    plan.throw(ConditionFailed())
    put = plan.send({"Item": _item(4, ttl=int(NOW) - 1, turn_ids=("old",), owner="alice")})
    assert put.operation == "put_item"
    assert put.kwargs["ConditionExpression"] == "attribute_not_exists(session_id) OR #ttl <= :epoch"
    with pytest.raises(StopIteration) as done:
        plan.send({})
    fresh = done.value.value
    assert {**session.to_item(fresh), "turn_ids": {"L": [{"S": "T1"}]}} == put.kwargs["Item"]
    assert (fresh.turns, [e.text for e in fresh.history]) == (1, ["question", "answer"])
    assert fresh.user_id == "u"  # an expired session is gone: the new one is the caller's


def test_turn_retries_append_when_another_writer_renewed_first() -> None:
    plan = _turn_plan()
    next(plan)
    plan.throw(ConditionFailed())
    plan.send({"Item": _item(4, ttl=int(NOW) - 1)})
    assert plan.throw(ConditionFailed()) == READ  # the renewal raced ours
    again = plan.send({"Item": _item(2)})
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


def _rate_plan() -> session.Plan:
    return session.rate_plan("t", "10.0.0.1", 1_000_010.0, limit=3, window=60, request_id="R1")


@pytest.mark.parametrize(
    ("hits", "allowed", "retry_after"),
    [(1, True, 10), (3, True, 10)],
)
def test_rate_plan_counts_in_fixed_windows(hits: int, allowed: bool, retry_after: int) -> None:
    plan = _rate_plan()
    call = next(plan)
    assert call.kwargs["Key"] == {"session_id": {"S": session.rate_key("10.0.0.1", 1_000_000 - 40)}}
    assert call.kwargs["ExpressionAttributeValues"][":ids"] == {"SS": ["R1"]}
    with pytest.raises(StopIteration) as done:
        plan.send({"Attributes": {"hits": {"N": str(hits)}}})
    assert done.value.value == session.RateDecision(allowed, hits, retry_after)


def test_a_retried_hit_that_was_counted_is_not_counted_again() -> None:
    plan = _rate_plan()
    first = next(plan)
    assert first.kwargs["ConditionExpression"] == (
        "(attribute_not_exists(hits) OR hits < :limit) AND NOT contains(#ids, :id)"
    )
    read = plan.throw(ConditionFailed())  # the timed-out first attempt had been applied
    assert read.operation == "get_item"
    assert read.kwargs["Key"] == first.kwargs["Key"]
    with pytest.raises(StopIteration) as done:
        plan.send({"Item": {"hits": {"N": "2"}, "request_ids": {"SS": ["R0", "R1"]}}})
    assert done.value.value == session.RateDecision(True, 2, 10)


def test_a_hit_over_the_limit_is_counted_without_keeping_its_id() -> None:
    plan = _rate_plan()
    next(plan)
    plan.throw(ConditionFailed())
    plain = plan.send({"Item": {"hits": {"N": "3"}, "request_ids": {"SS": ["a", "b", "c"]}}})
    assert plain.kwargs["UpdateExpression"] == "ADD hits :one SET #ttl = :ttl"
    assert "ConditionExpression" not in plain.kwargs
    with pytest.raises(StopIteration) as done:
        plan.send({"Attributes": {"hits": {"N": "4"}}})
    assert done.value.value == session.RateDecision(False, 4, 10)


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


# -- shadow turns -------------------------------------------------------------------------------


def test_turn_ids_are_derived_from_the_request_alike_in_both_stacks() -> None:
    one = session.turn_id_for("rid-1", "s", "hello")
    assert one == session.turn_id_for("rid-1", "s", "hello")
    others = {
        session.turn_id_for("rid-2", "s", "hello"),
        session.turn_id_for("rid-1", "t", "hello"),
        session.turn_id_for("rid-1", "s", "hello!"),
    }
    assert one not in others and len(others) == 3


def _seed_plan() -> session.Plan:
    return session.shadow_seed_plan("shadow", "primary", "s", "T2", NOW, 20)


def test_a_live_shadow_record_is_used_as_it_is() -> None:
    plan = _seed_plan()
    assert next(plan).kwargs["TableName"] == "shadow"
    with pytest.raises(StopIteration) as done:
        plan.send({"Item": _item(4, turn_ids=("T1", "T2"))})
    record, seeded = done.value.value
    assert (record.turns, seeded) == (2, False)


def test_the_shadow_is_seeded_with_the_primary_before_its_own_turn() -> None:
    plan = _seed_plan()
    next(plan)
    read = plan.send({})  # no shadow record yet
    assert (read.operation, read.kwargs["TableName"]) == ("get_item", "primary")
    # The primary has written this turn (T2) and a later one (T3): both are left out.
    put = plan.send({"Item": _item(6, turn_ids=("T1", "T2", "T3"))})
    assert (put.operation, put.kwargs["TableName"]) == ("put_item", "shadow")
    assert put.kwargs["Item"]["turns"] == {"N": "1"}
    assert put.kwargs["Item"]["turn_ids"] == {"L": [{"S": "T1"}]}
    assert [e["M"]["text"]["S"] for e in put.kwargs["Item"]["history"]["L"]] == ["0", "1"]
    with pytest.raises(StopIteration) as done:
        plan.send({})
    record, seeded = done.value.value
    assert (record.turns, seeded, record.user_id) == (1, True, "u")


@pytest.mark.parametrize("primary", [None, "only-this-turn"])
def test_nothing_is_seeded_for_a_new_conversation(primary: str | None) -> None:
    plan = _seed_plan()
    next(plan)
    plan.send({})
    item = None if primary is None else _item(2, turn_ids=("T2",))
    with pytest.raises(StopIteration) as done:
        plan.send({} if item is None else {"Item": item})
    assert done.value.value == (None, False)
