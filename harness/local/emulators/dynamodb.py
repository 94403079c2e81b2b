"""DynamoDB on loopback: moto's DynamoDB backend, speaking the real DynamoDB wire protocol.

Served by `WSGIServerThread` (persistent connections, one request at a time, no request
log) from the app `moto_dynamodb.build_app()` makes: moto's own handler and backend, minus
the all-services dispatch and with a faster writer of item attributes.

moto keeps its state in process-global backends, so two emulators in one process share
their tables. moto never expires TTL items: readers must ignore expired records themselves.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import aioboto3
import boto3
from botocore.config import Config

from harness.local.emulators.wsgi_server import WSGIServerThread

if TYPE_CHECKING:
    from types_boto3_dynamodb.client import DynamoDBClient

__all__ = ["DUMMY_ACCESS_KEY_ID", "DUMMY_SECRET_ACCESS_KEY", "DynamoDBEmulator"]

# moto accepts any credentials; these are the conventional placeholders.
DUMMY_ACCESS_KEY_ID = "testing"
DUMMY_SECRET_ACCESS_KEY = "testing"  # noqa: S105 - a placeholder, not a secret

_TTL_ATTRIBUTE = "ttl"


class DynamoDBEmulator:
    """``start()`` a moto DynamoDB server on ``host:port`` (0: a free port), ``create_table()``,
    ``stop()``. Usable as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: WSGIServerThread | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` once started."""
        if self._url is None:
            raise RuntimeError("DynamoDB emulator not started")
        return self._url

    def start(self) -> str:
        """Start the server thread; returns the url once it accepts connections."""
        if self._server is not None:
            raise RuntimeError("DynamoDB emulator already started")
        # Imported here: moto pulls in Flask and every moto backend, which importers of this
        # package that only want the Bedrock emulator should not pay for.
        from harness.local.emulators.moto_dynamodb import build_app

        server = WSGIServerThread(build_app(), self._host, self._port)
        self._url = server.start()
        self._server = server
        return self._url

    def stop(self) -> None:
        """Stop the server and join its thread."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def client(self, region: str = "us-east-1") -> DynamoDBClient:
        """A real boto3 DynamoDB client aimed at this emulator (close it when done)."""
        return boto3.client(
            "dynamodb",
            endpoint_url=self.url,
            region_name=region,
            aws_access_key_id=DUMMY_ACCESS_KEY_ID,
            aws_secret_access_key=DUMMY_SECRET_ACCESS_KEY,
            config=Config(retries={"total_max_attempts": 2, "mode": "standard"}),
        )

    def async_client(
        self, region: str = "us-east-1", session: aioboto3.Session | None = None
    ) -> AbstractAsyncContextManager[Any]:
        """A real aioboto3 DynamoDB client aimed at this emulator: `async with` it, in the
        event loop that uses it. Pass one `session` to open many clients cheaply (it keeps
        the loaded service models)."""
        return (session or aioboto3.Session()).client(
            "dynamodb",
            endpoint_url=self.url,
            region_name=region,
            aws_access_key_id=DUMMY_ACCESS_KEY_ID,
            aws_secret_access_key=DUMMY_SECRET_ACCESS_KEY,
        )

    def create_table(self, table_name: str, region: str = "us-east-1") -> None:
        """Create the session table (key ``session_id``, on-demand, TTL on ``ttl``).

        Idempotent: an existing table is left as it is, apart from enabling TTL if it is off.
        """
        client = self.client(region)
        try:
            # An existing table is fine: creating is idempotent by design.
            with contextlib.suppress(client.exceptions.ResourceInUseException):
                client.create_table(
                    TableName=table_name,
                    AttributeDefinitions=[{"AttributeName": "session_id", "AttributeType": "S"}],
                    KeySchema=[{"AttributeName": "session_id", "KeyType": "HASH"}],
                    BillingMode="PAY_PER_REQUEST",
                )
            client.get_waiter("table_exists").wait(
                TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
            )
            ttl = client.describe_time_to_live(TableName=table_name)["TimeToLiveDescription"]
            # Enabling TTL twice is a ValidationException on real DynamoDB.
            if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
                client.update_time_to_live(
                    TableName=table_name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": _TTL_ATTRIBUTE},
                )
        finally:
            client.close()

    def __enter__(self) -> DynamoDBEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ExternalDynamoDB(DynamoDBEmulator):
    """A DynamoDB that runs elsewhere (DynamoDB Local in docker-compose, say): nothing to
    start or stop; `create_table()` prepares the session table there."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url.rstrip("/")

    def start(self) -> str:
        return self.url

    def stop(self) -> None:
        return None
