"""The Bedrock Agent Runtime call: a pure request/reply codec and thin sync/async clients.

The answer of `invoke_agent` is the concatenation of the `completion` event stream's
chunk bytes; token usage comes from trace events when tracing is enabled. One deadline,
`AGENT_TIMEOUT_SECONDS`, bounds the whole call: every attempt and reading the stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.aws import AsyncRetrier, Retrier, agent_error, agent_policy, bound_reads
from shared.deadline import Deadline, DeadlineExceeded
from shared.session import HistoryEntry
from shared.settings import Settings


@dataclass(frozen=True)
class AgentReply:
    text: str
    tokens_used: int | None


def agent_session_id(session_id: str, owner: str | None, *, shadow: bool = False) -> str:
    """The agent's session for the stored session `session_id` of `owner` (None:
    anonymous): a digest of both, the same from both stacks. A shadow turn's (`shadow`) is
    another: the agent keeps each session's memory, and a shadow turn in the user's would
    put the turn into their conversation twice.

    Every agent session id is derived this way, never a client's id as it came, so no
    client id can name another conversation's agent memory: two stored sessions never
    share one (different owners of one id included), and "ds-" + 64 hex characters fits
    Bedrock's 2-100 characters whatever the contract's 1-128 allow."""
    fields: list[str | None] = [session_id, owner, "shadow"] if shadow else [session_id, owner]
    encoded = json.dumps(fields)  # unambiguous: null is no owner
    return "ds-" + hashlib.sha256(encoded.encode()).hexdigest()


def build_request(
    settings: Settings,
    agent_session: str,
    text: str,
    history: Sequence[HistoryEntry] | None = None,
) -> dict[str, Any]:
    """Keyword arguments of `invoke_agent` for one chat turn in `agent_session` (an
    `agent_session_id`); `history` seeds a new agent session with the conversation so far
    (`sessionState.conversationHistory`), as a shadow turn's is."""
    request: dict[str, Any] = {
        "agentId": settings.bedrock_agent_id,
        "agentAliasId": settings.bedrock_agent_alias_id,
        "sessionId": agent_session,
        "inputText": text,
        "enableTrace": settings.agent_enable_trace,
    }
    if history:
        messages = [
            {"role": "user" if e.role == "user" else "assistant", "content": [{"text": e.text}]}
            for e in history
        ]
        request["sessionState"] = {"conversationHistory": {"messages": messages}}
    return request


class ReplyBuilder:
    """Folds `completion` events into an `AgentReply`, one event at a time."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._tokens: int | None = None

    def add(self, event: Mapping[str, Any]) -> None:
        """Take one event: chunk bytes are kept in order, usage from traces is summed."""
        if "chunk" in event:
            self._parts.append(event["chunk"].get("bytes", b""))
        elif "trace" in event:
            usage = _usage(event["trace"])
            if usage is not None:
                self._tokens = (self._tokens or 0) + usage

    def reply(self) -> AgentReply:
        """The answer: all chunk bytes, decoded as UTF-8 once whole."""
        return AgentReply(b"".join(self._parts).decode("utf-8", "replace"), self._tokens)


def parse_reply(events: Iterable[Mapping[str, Any]]) -> AgentReply:
    """The answer carried by a whole `completion` stream."""
    builder = ReplyBuilder()
    for event in events:
        builder.add(event)
    return builder.reply()


def _usage(trace_part: Mapping[str, Any]) -> int | None:
    trace = trace_part.get("trace", {})
    for step in trace.values():
        if not isinstance(step, Mapping):
            continue
        output = step.get("modelInvocationOutput")
        if isinstance(output, Mapping):
            usage = output.get("metadata", {}).get("usage", {})
            if usage:
                return int(usage.get("inputTokens", 0)) + int(usage.get("outputTokens", 0))
    return None


class AgentClient:
    """Invokes the agent over a boto3 `bedrock-agent-runtime` client (one passed through
    `shared.aws.follow_deadlines`, for its attempts to end by the deadline)."""

    def __init__(self, client: Any, settings: Settings, *, retrier: Retrier | None = None) -> None:
        self._client = client
        self._settings = settings
        self._retrier = retrier or Retrier(agent_policy(settings))

    def invoke(
        self, agent_session: str, text: str, history: Sequence[HistoryEntry] | None = None
    ) -> AgentReply:
        """The agent's answer in `agent_session` (an `agent_session_id`; `history` seeds a
        new one, see `build_request`); raises AgentThrottled, AgentTimeout or AgentFailed."""
        request = build_request(self._settings, agent_session, text, history)
        deadline = self._retrier.deadline()
        try:
            response = self._retrier.call(deadline, lambda: self._client.invoke_agent(**request))
            stream = response["completion"]
            try:
                return parse_reply(_until(deadline, stream))
            finally:
                stream.close()  # an error mid-stream would otherwise leak the connection
        except Exception as exc:
            raise agent_error(exc, self._settings) from exc


def _until(deadline: Deadline, stream: Any) -> Iterator[Mapping[str, Any]]:
    """The stream's events, each socket read cut to the time the deadline leaves: a
    blocking read cannot be cancelled, so it must not be allowed to wait longer."""
    events = iter(stream)
    while True:
        left = deadline.left()
        if left <= 0:
            raise DeadlineExceeded("the agent's answer was still streaming at the deadline")
        bound_reads(stream, left)
        try:
            event = next(events)
        except StopIteration:
            return
        yield event


class AsyncAgentClient:
    """Invokes the agent over an aioboto3 `bedrock-agent-runtime` client."""

    def __init__(
        self, client: Any, settings: Settings, *, retrier: AsyncRetrier | None = None
    ) -> None:
        self._client = client
        self._settings = settings
        self._retrier = retrier or AsyncRetrier(agent_policy(settings))

    async def invoke(
        self, agent_session: str, text: str, history: Sequence[HistoryEntry] | None = None
    ) -> AgentReply:
        """The agent's answer in `agent_session` (an `agent_session_id`; `history` seeds a
        new one, see `build_request`); raises AgentThrottled, AgentTimeout or AgentFailed."""
        request = build_request(self._settings, agent_session, text, history)
        deadline = self._retrier.deadline()
        builder = ReplyBuilder()
        try:
            # The whole call, stream included: at the deadline whatever is in flight is
            # cancelled and `asyncio.timeout` raises TimeoutError, an AgentTimeout.
            async with asyncio.timeout(deadline.left()):
                response = await self._retrier.call(
                    deadline, lambda: self._client.invoke_agent(**request)
                )
                stream = response["completion"]
                try:
                    async for event in stream:
                        builder.add(event)
                finally:
                    stream.close()  # an error mid-stream would otherwise leak the connection
        except Exception as exc:
            raise agent_error(exc, self._settings) from exc
        return builder.reply()
