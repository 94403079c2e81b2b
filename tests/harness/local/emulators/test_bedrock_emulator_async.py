"""The Bedrock emulator through aioboto3, the async client the FastAPI stack uses."""

from __future__ import annotations

import asyncio
from typing import Any

import aioboto3
import pytest
from aiobotocore.config import AioConfig
from botocore.exceptions import EventStreamError, ReadTimeoutError

from harness.local.emulators.bedrock import BedrockEmulatorThread, compose_reply


def client(url: str, read_timeout: float = 5.0) -> Any:
    return aioboto3.Session().client(
        "bedrock-agent-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=AioConfig(
            retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=read_timeout
        ),
    )


async def invoke(agent: Any, text: str, **extra: Any) -> tuple[str, list[str]]:
    response = await agent.invoke_agent(
        agentId="A", agentAliasId="B", sessionId="s1", inputText=text, **extra
    )
    chunks: list[bytes] = []
    kinds: list[str] = []
    completion = response["completion"]
    try:
        async for event in completion:
            kinds.extend(event)
            if "chunk" in event:
                chunks.append(event["chunk"]["bytes"])
    finally:
        completion.close()  # sync even in aiobotocore; releases the aiohttp connection
    return b"".join(chunks).decode(), kinds


def test_async_client_parses_the_stream(bedrock: BedrockEmulatorThread) -> None:
    async def scenario() -> list[tuple[str, list[str]]]:
        async with client(bedrock.url) as agent:
            return [
                await invoke(agent, "hi", enableTrace=True),
                await invoke(agent, "hi"),
            ]

    first, second = asyncio.run(scenario())
    assert first == (compose_reply("hi", 1), ["trace", "chunk", "chunk", "chunk"])
    assert second == (compose_reply("hi", 2), ["chunk", "chunk", "chunk"])


def test_async_client_sees_stream_errors_and_timeouts(bedrock: BedrockEmulatorThread) -> None:
    async def scenario() -> tuple[BaseException, BaseException]:
        async with client(bedrock.url, read_timeout=0.5) as agent:
            with pytest.raises(EventStreamError) as stream_error:
                await invoke(agent, "[[emulator:stream-throttle]]")
            with pytest.raises(ReadTimeoutError) as timeout:
                await invoke(agent, "[[emulator:hang]]")
            return stream_error.value, timeout.value

    stream_error, _ = asyncio.run(scenario())
    assert isinstance(stream_error, EventStreamError)
    assert stream_error.response["Error"]["Code"] == "throttlingException"
