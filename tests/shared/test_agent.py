"""The Bedrock request/reply codec, as pure functions; the clients over fake runtimes."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from shared import agent, aws, errors
from shared.aws import Retrier
from shared.settings import Settings


def test_build_request_is_the_invoke_agent_call() -> None:
    settings = Settings(bedrock_agent_id="AGENT1", bedrock_agent_alias_id="ALIAS1")
    assert agent.build_request(settings, "sess-1", "hello") == {
        "agentId": "AGENT1",
        "agentAliasId": "ALIAS1",
        "sessionId": "sess-1",
        "inputText": "hello",
        "enableTrace": True,
    }


BEDROCK_SESSION_ID = r"[0-9a-zA-Z._:-]{2,100}"


@pytest.mark.parametrize("session_id", ["a", "ab", "a" * 128, "a:b.c-d_e", "ds-" + "0" * 64])
@pytest.mark.parametrize("owner", [None, "alice", "u" * 128])
def test_agent_session_id_fits_bedrock_and_is_never_the_client_id(
    session_id: str, owner: str | None
) -> None:
    mapped = agent.agent_session_id(session_id, owner)
    assert re.fullmatch(BEDROCK_SESSION_ID, mapped)
    assert mapped != session_id  # a client id never names an agent session as it came
    assert agent.agent_session_id(session_id, owner) == mapped  # stable across calls and stacks


def test_agent_sessions_differ_by_owner_and_never_collide_through_a_client_id() -> None:
    anonymous = agent.agent_session_id("s1", None)
    alice = agent.agent_session_id("s1", "alice")
    mallory = agent.agent_session_id("s1", "mallory")
    assert len({anonymous, alice, mallory}) == 3
    # A client choosing the derived id as its own session id gets another agent session.
    assert agent.agent_session_id(alice, None) not in {anonymous, alice, mallory}
    assert agent.agent_session_id(alice, "alice") != alice


def test_parse_reply_joins_chunks_and_sums_usage() -> None:
    usage = {"inputTokens": 7, "outputTokens": 5}
    events = [
        {
            "trace": {
                "trace": {
                    "orchestrationTrace": {"modelInvocationOutput": {"metadata": {"usage": usage}}}
                }
            }
        },
        {"chunk": {"bytes": "héllo, ".encode()}},
        {"trace": {"trace": {"orchestrationTrace": {"rationale": {"text": "thinking"}}}}},
        {"chunk": {"bytes": "wörld".encode()[:3]}},
        {"chunk": {"bytes": "wörld".encode()[3:]}},
    ]
    assert agent.parse_reply(events) == agent.AgentReply("héllo, wörld", 12)


def test_parse_reply_without_trace_has_no_token_count() -> None:
    assert agent.parse_reply([{"chunk": {"bytes": b"ok"}}]) == agent.AgentReply("ok", None)


# -- the clients, over fakes: one deadline for the whole call, its stream included -------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now


class DrippingStream:
    """A completion stream whose events arrive `gap` seconds of fake time apart."""

    def __init__(self, time: FakeTime, gap: float, chunks: list[bytes]) -> None:
        self._time = time
        self._gap = gap
        self._chunks = chunks
        self.closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for chunk in self._chunks:
            self._time.now += self._gap
            yield {"chunk": {"bytes": chunk}}

    def close(self) -> None:
        self.closed = True


class FakeRuntime:
    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def invoke_agent(self, **kwargs: Any) -> dict[str, Any]:
        return {"completion": self.stream}


@pytest.mark.parametrize(
    ("gap", "answer"),
    [(0.5, agent.AgentReply("abc", None)), (1.25, errors.AgentTimeout)],
    ids=["streamed-within-the-deadline", "still-streaming-at-the-deadline"],
)
def test_the_agent_deadline_covers_reading_the_stream(
    gap: float, answer: agent.AgentReply | type[errors.AgentTimeout]
) -> None:
    time = FakeTime()
    stream = DrippingStream(time, gap, [b"a", b"b", b"c"])
    settings = Settings(agent_timeout_seconds=3.0)
    retrier = Retrier(aws.agent_policy(settings), clock=time.clock)
    client = agent.AgentClient(FakeRuntime(stream), settings, retrier=retrier)
    try:
        result: object = client.invoke("sess-1", "hello")
    except errors.AgentTimeout as exc:
        result = type(exc)
    assert (result, stream.closed) == (answer, True)


class HungRuntime:
    """An aioboto3 client whose answer never comes, or whose stream stops after one event."""

    def __init__(self, *, stream_stops: bool) -> None:
        self._stream_stops = stream_stops
        self.closed = False

    async def invoke_agent(self, **kwargs: Any) -> dict[str, Any]:
        if not self._stream_stops:
            await asyncio.Event().wait()
        return {"completion": self}

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        yield {"chunk": {"bytes": b"a"}}
        await asyncio.Event().wait()

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("stream_stops", [False, True], ids=["no-answer", "stream-stops"])
def test_the_async_agent_deadline_cancels_what_is_in_flight(stream_stops: bool) -> None:
    runtime = HungRuntime(stream_stops=stream_stops)
    client = agent.AsyncAgentClient(runtime, Settings(agent_timeout_seconds=0.05))
    with pytest.raises(errors.AgentTimeout):
        asyncio.run(client.invoke("sess-1", "hello"))
    assert runtime.closed is stream_stops  # a stream that was opened is closed


def test_a_shadow_turn_has_an_agent_session_of_its_own() -> None:
    assert agent.agent_session_id("s1", "alice", shadow=True) != agent.agent_session_id(
        "s1", "alice"
    )


def test_history_seeds_a_new_agent_session() -> None:
    from shared.session import HistoryEntry

    history = [HistoryEntry("user", "one", "t"), HistoryEntry("agent", "reply", "t")]
    request = agent.build_request(Settings(), "ds-x", "two", history)
    assert request["sessionState"] == {
        "conversationHistory": {
            "messages": [
                {"role": "user", "content": [{"text": "one"}]},
                {"role": "assistant", "content": [{"text": "reply"}]},
            ]
        }
    }
    assert "sessionState" not in agent.build_request(Settings(), "ds-x", "two")
