"""CloudWatch on loopback: moto's CloudWatch backend, speaking the real CloudWatch wire
protocol, for the FastAPI stack's custom metrics (`AWS_ENDPOINT_URL_CLOUDWATCH`).

Served by `WSGIServerThread` (one request at a time, as moto's backends want) from moto's
own dispatcher, on a port of its own: it runs whichever DynamoDB the emulators use. moto
keeps its state in process-global backends, so two emulators in one process share their
metrics (tests use a namespace of their own).
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from harness.local.emulators.dynamodb import DUMMY_ACCESS_KEY_ID, DUMMY_SECRET_ACCESS_KEY
from harness.local.emulators.wsgi_server import WSGIServerThread

__all__ = ["CloudWatchEmulator"]


class CloudWatchEmulator:
    """``start()`` moto's CloudWatch on ``host:port`` (0: a free port) in this process,
    ``client()``, ``stop()``. Usable as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: WSGIServerThread | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` once started."""
        if self._url is None:
            raise RuntimeError("CloudWatch emulator not started")
        return self._url

    def start(self) -> str:
        """Start the server thread; returns the url once it accepts connections."""
        if self._server is not None:
            raise RuntimeError("CloudWatch emulator already started")
        # Imported here: moto pulls in Flask and every moto backend.
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        server = WSGIServerThread(
            DomainDispatcherApplication(create_backend_app), self._host, self._port
        )
        self._url = server.start()
        self._server = server
        return self._url

    def stop(self) -> None:
        """Stop the server and join its thread (safe to call twice)."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def client(self, region: str = "us-east-1") -> Any:
        """A real boto3 CloudWatch client aimed at this emulator (close it when done)."""
        return boto3.client(
            "cloudwatch",
            endpoint_url=self.url,
            region_name=region,
            aws_access_key_id=DUMMY_ACCESS_KEY_ID,
            aws_secret_access_key=DUMMY_SECRET_ACCESS_KEY,
            config=Config(retries={"total_max_attempts": 2, "mode": "standard"}),
        )

    def __enter__(self) -> CloudWatchEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
