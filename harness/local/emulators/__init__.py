"""Local stand-ins for the AWS services the stacks use: DynamoDB (moto, or dynalite on Node),
Bedrock Agents, and CloudWatch (moto) for the FastAPI stack's custom metrics.

The stacks reach them only through boto3's standard ``AWS_ENDPOINT_URL_*`` variables, so the
code under test is the code that would run against AWS. ``LocalEmulators`` starts them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from harness.local.emulators.bedrock import BedrockAgentEmulator, BedrockEmulatorThread
from harness.local.emulators.cloudwatch import CloudWatchEmulator
from harness.local.emulators.config import EmulatorConfig
from harness.local.emulators.dynamodb import (
    DUMMY_ACCESS_KEY_ID,
    DUMMY_SECRET_ACCESS_KEY,
    DynamoDB,
    DynamoDBEmulator,
    ExternalDynamoDB,
)
from harness.local.emulators.setup import TableSetup, harness_tables
from shared.settings import default_shadow_table

__all__ = [
    "DEFAULT_TABLE",
    "STORES",
    "BedrockAgentEmulator",
    "BedrockEmulatorThread",
    "CloudWatchEmulator",
    "DynamoDBEmulator",
    "EmulatorConfig",
    "LocalEmulators",
]

DEFAULT_TABLE = "chat_sessions"
GATEWAY_TABLE = "dualstack_gateway"
"""The gateway's rollout state (same key schema as the session table)."""
STORES = ("moto", "dynalite")
"""The local DynamoDB implementations `LocalEmulators` can start."""


class LocalEmulators:
    """Both emulators on loopback, the session table created: ``start()``/``stop()`` or
    ``with LocalEmulators() as emulators: os.environ.update(emulators.env())``.

    ``bedrock`` is the live ``BedrockAgentEmulator``: ``emulators.bedrock.configure(...)``
    changes latency, chunking or faults while it runs. ``bedrock_options`` are the initial
    options (``EmulatorConfig`` field names). ``dynamodb`` picks the local DynamoDB:
    ``"moto"`` (in this process) or ``"dynalite"`` (a Node process, installed beforehand by
    ``dynalite.install()``). With ``external_dynamodb_url`` none starts: the tables are
    created in that DynamoDB (DynamoDB Local, for instance). ``shadow_table`` defaults to
    the one beside ``table`` (``DYNAMODB_SHADOW_TABLE``'s default).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        dynamodb_port: int = 0,
        bedrock_port: int = 0,
        cloudwatch_port: int = 0,
        table: str = DEFAULT_TABLE,
        region: str = "us-east-1",
        bedrock_options: Mapping[str, object] | None = None,
        external_dynamodb_url: str | None = None,
        extra_tables: Sequence[str] = (GATEWAY_TABLE,),
        dynamodb: str = "moto",
        shadow_table: str | None = None,
    ) -> None:
        if dynamodb not in STORES:
            raise ValueError(f"unknown DynamoDB {dynamodb!r}: expected one of {', '.join(STORES)}")
        self.table = table
        self.shadow_table = shadow_table or default_shadow_table(table)
        self.extra_tables = tuple(extra_tables)
        self.region = region
        self.bedrock = BedrockAgentEmulator(host, bedrock_port)
        self.bedrock.configure(**dict(bedrock_options or {}))
        self.dynamodb: DynamoDB
        if external_dynamodb_url:
            self.dynamodb = ExternalDynamoDB(external_dynamodb_url)
        elif dynamodb == "dynalite":
            # Imported here: it starts Node through the process runner, which moto users skip.
            from harness.local.emulators.dynalite import DynaliteServer

            self.dynamodb = DynaliteServer(host, dynamodb_port)
        else:
            self.dynamodb = DynamoDBEmulator(host, dynamodb_port)
        self._bedrock_thread = BedrockEmulatorThread(self.bedrock)
        self.cloudwatch = CloudWatchEmulator(host, cloudwatch_port)

    @property
    def dynamodb_url(self) -> str:
        """The DynamoDB endpoint url."""
        return self.dynamodb.url

    @property
    def bedrock_url(self) -> str:
        """The Bedrock Agent Runtime endpoint url."""
        return self.bedrock.url

    @property
    def cloudwatch_url(self) -> str:
        """The CloudWatch endpoint url."""
        return self.cloudwatch.url

    @property
    def ttl_note(self) -> str | None:
        """A line to print when the store could not enable TTL on the tables, else None."""
        if self.dynamodb.ttl_enabled is False:
            return (
                f"TTL is off: {self.dynamodb.kind} has no UpdateTimeToLive, so expired "
                "sessions stay stored (the stacks treat them as absent)"
            )
        return None

    @property
    def tables(self) -> tuple[TableSetup, ...]:
        """The tables `start()` creates (`python -m harness.emulators --print-setup` prints
        these definitions)."""
        return harness_tables(self.table, shadow=self.shadow_table, gateway=self.extra_tables)

    def start(self) -> LocalEmulators:
        """Start DynamoDB, create the tables (the sessions', their shadow copy's, the
        extra ones), start Bedrock; on failure stop what started."""
        try:
            self.dynamodb.start()
            for table in self.tables:
                self.dynamodb.create_table(table.name, self.region)
            self._bedrock_thread.start()
            self.cloudwatch.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both (safe to call twice, or after a failed start)."""
        try:
            self._bedrock_thread.stop()
        finally:
            try:
                self.cloudwatch.stop()
            finally:
                self.dynamodb.stop()

    def env(self) -> dict[str, str]:
        """The environment that points boto3 (and so both stacks) at the emulators."""
        return {
            "AWS_ENDPOINT_URL_DYNAMODB": self.dynamodb_url,
            "AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME": self.bedrock_url,
            "AWS_ENDPOINT_URL_CLOUDWATCH": self.cloudwatch_url,
            "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_ACCESS_KEY,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }

    def __enter__(self) -> LocalEmulators:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
