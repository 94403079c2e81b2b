"""Fixtures for the gateway's rollout tests: a fresh table in the session's moto DynamoDB, and
real aioboto3 clients aimed at it."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import aioboto3
import pytest
from botocore.exceptions import EndpointConnectionError

from harness.emulators import LocalEmulators

OpenClient = Callable[[], AbstractAsyncContextManager[Any]]


class Flaky:
    """The real client, until `broken` is set: then every call fails to connect. Every
    client `open_client` gives is one, so a test can cut the store off mid-way."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.broken = False

    def __getattr__(self, operation: str) -> Callable[..., Awaitable[Any]]:
        async def call(**kwargs: Any) -> Any:
            if self.broken:
                raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
            return await getattr(self.client, operation)(**kwargs)

        return call


_tables = itertools.count()


@pytest.fixture(scope="session")
def _table_maker(emulators: LocalEmulators) -> Iterator[Any]:
    client = emulators.dynamodb.client()
    yield client
    client.close()


@pytest.fixture
def rollout_table(_table_maker: Any) -> str:
    """A table of this test's own, keyed by `session_id` like the session table, so no test
    sees another's rollout. Created directly (moto makes it active at once): a fresh client,
    waiter and TTL set-up per test, as `DynamoDBEmulator.create_table` does, cost 8x more."""
    name = f"rollout_{next(_tables)}"
    _table_maker.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "session_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "session_id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


@pytest.fixture(scope="session")
def open_client(emulators: LocalEmulators) -> OpenClient:
    """`async with open_client() as client:` a real aioboto3 DynamoDB client on the emulator,
    opened in the running event loop (each test runs its own with `asyncio.run`)."""
    # One session for all: a client's event loop is its own, but the session's loaded
    # service models are shared, which makes each client cheap to open.
    session = aioboto3.Session()

    @asynccontextmanager
    async def open_one() -> AsyncIterator[Flaky]:
        async with session.client(
            "dynamodb",
            endpoint_url=emulators.dynamodb_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ) as client:
            yield Flaky(client)

    return open_one
