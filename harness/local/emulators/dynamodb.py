"""DynamoDB on loopback: moto's DynamoDB backend, speaking the real DynamoDB wire protocol.

`DynamoDB` is what every local DynamoDB offers the tools (its url, real clients aimed at it,
the session table's creation); `DynamoDBEmulator` is moto's, in this process,
`ExternalDynamoDB` one that runs elsewhere, and `dynalite.DynaliteServer` the second,
independent implementation, in a Node process.

moto's is served by `WSGIServerThread` (persistent connections, one request at a time, no request
log) from the app `moto_dynamodb.build_app()` makes: moto's own handler and backend, minus
the all-services dispatch and with a faster writer of item attributes.

moto keeps its state in process-global backends, so two emulators in one process share
their tables. moto never expires TTL items: readers must ignore expired records themselves.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Self

import aioboto3
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from harness.local.emulators.setup import TableSetup
from harness.local.emulators.wsgi_server import WSGIServerThread

if TYPE_CHECKING:
    from types_boto3_dynamodb.client import DynamoDBClient

__all__ = [
    "DUMMY_ACCESS_KEY_ID",
    "DUMMY_SECRET_ACCESS_KEY",
    "DynamoDB",
    "DynamoDBEmulator",
    "ExternalDynamoDB",
]

# moto accepts any credentials; these are the conventional placeholders.
DUMMY_ACCESS_KEY_ID = "testing"
DUMMY_SECRET_ACCESS_KEY = "testing"  # noqa: S105 - a placeholder, not a secret

# What a store answers to an operation it does not implement (dynalite: UpdateTimeToLive).
_UNKNOWN_OPERATION = "UnknownOperationException"


class DynamoDB:
    """A DynamoDB on loopback or elsewhere: ``start()``, ``create_table()``, ``stop()``, or
    as a context manager. Subclasses say how it starts and stops.

    ``ttl_enabled`` is what the last ``create_table()`` found: True once TTL is on, False
    where the store has no ``UpdateTimeToLive`` (dynalite), None before any table."""

    kind = "dynamodb"
    """A short name for banners and reports: "moto", "dynalite", "external"."""

    def __init__(self) -> None:
        self._url: str | None = None
        self.ttl_enabled: bool | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` once started."""
        if self._url is None:
            raise RuntimeError(f"DynamoDB ({self.kind}) not started")
        return self._url

    def start(self) -> str:
        """Start serving; returns the url once it accepts connections."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop what ``start()`` started (safe to call twice)."""
        raise NotImplementedError

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
        """Create a table as `setup.TableSetup` defines it (key ``session_id``, on-demand,
        TTL on ``ttl``).

        Idempotent: an existing table is left as it is, apart from enabling TTL if it is off.
        A store without ``UpdateTimeToLive`` (dynalite) keeps the table without TTL and
        ``ttl_enabled`` says so: nothing there removes expired records, which the stacks
        ignore anyway (DynamoDB itself deletes them up to days late).
        """
        table = TableSetup(table_name)
        client = self.client(region)
        try:
            # An existing table is fine: creating is idempotent by design.
            with contextlib.suppress(client.exceptions.ResourceInUseException):
                client.create_table(**table.create_request())
            client.get_waiter("table_exists").wait(
                TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
            )
            ttl = client.describe_time_to_live(TableName=table_name)["TimeToLiveDescription"]
            # Enabling TTL twice is a ValidationException on real DynamoDB.
            if ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
                self.ttl_enabled = True
                return
            try:
                client.update_time_to_live(**table.ttl_request())
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != _UNKNOWN_OPERATION:
                    raise
                self.ttl_enabled = False
            else:
                self.ttl_enabled = True
        finally:
            client.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class DynamoDBEmulator(DynamoDB):
    """``start()`` a moto DynamoDB server on ``host:port`` (0: a free port) in this process,
    ``create_table()``, ``stop()``. Usable as a context manager."""

    kind = "moto"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__()
        self._host = host
        self._port = port
        self._server: WSGIServerThread | None = None

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


class ExternalDynamoDB(DynamoDB):
    """A DynamoDB that runs elsewhere (DynamoDB Local in docker-compose, say): nothing to
    start or stop; `create_table()` prepares the session table there."""

    kind = "external"

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url.rstrip("/")

    def start(self) -> str:
        return self.url

    def stop(self) -> None:
        return None
