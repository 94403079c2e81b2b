"""Fixtures for the emulator tests: real servers on 127.0.0.1, port 0, stopped on teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from harness.local.emulators.bedrock import BedrockAgentEmulator, BedrockEmulatorThread
from harness.local.emulators.dynamodb import DynamoDBEmulator

AgentClientFactory = Callable[..., Any]


@pytest.fixture
def bedrock() -> Iterator[BedrockEmulatorThread]:
    """A fresh Bedrock emulator (fresh turn counters) in its own thread."""
    thread = BedrockEmulatorThread(BedrockAgentEmulator())
    thread.start()
    yield thread
    thread.stop()


@pytest.fixture
def agent_client_for() -> Iterator[AgentClientFactory]:
    """Build real boto3 ``bedrock-agent-runtime`` clients; all are closed on teardown.

    ``total_max_attempts=1``: no retries at all. (``max_attempts=1`` would allow one retry:
    botocore counts ``max_attempts`` as retries, ``total_max_attempts`` as all attempts.)
    """
    clients: list[Any] = []

    def build(url: str, read_timeout: float = 5.0, pool: int = 10) -> Any:
        client = boto3.client(
            "bedrock-agent-runtime",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                read_timeout=read_timeout,
                connect_timeout=2,
                max_pool_connections=pool,
            ),
        )
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


@pytest.fixture
def agent_client(bedrock: BedrockEmulatorThread, agent_client_for: AgentClientFactory) -> Any:
    """A boto3 ``bedrock-agent-runtime`` client aimed at the ``bedrock`` fixture."""
    return agent_client_for(bedrock.url)


@pytest.fixture
def dynamodb() -> Iterator[DynamoDBEmulator]:
    """A moto DynamoDB server on loopback."""
    emulator = DynamoDBEmulator()
    emulator.start()
    yield emulator
    emulator.stop()
