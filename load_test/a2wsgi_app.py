"""A WSGI app alone behind a2wsgi, as the gateway mounts it but without the gateway:
`uvicorn --factory load_test.a2wsgi_app:create_app`.

Which app is an import string in `LOAD_TEST_WSGI_APP` (gunicorn's form, `module:name` or
`module:factory()`, loaded by `harness.gateway.apps.load_app` as the gateway loads its
stacks; default the legacy chatbot), so the load test names the stack without importing
it. `LOAD_TEST_WSGI_THREADS` sizes a2wsgi's thread pool (by default as the gateway's).
"""

from __future__ import annotations

import os
from typing import Any

from a2wsgi import WSGIMiddleware

from harness.gateway.apps import load_app
from harness.gateway.settings import GatewaySettings

DEFAULT_APP = "legacy_flask:create_app()"
DEFAULT_THREADS: int = GatewaySettings.model_fields["wsgi_threads"].default


def create_app() -> Any:
    """The ASGI app: the configured WSGI app inside `a2wsgi.WSGIMiddleware`."""
    app = load_app(os.environ.get("LOAD_TEST_WSGI_APP", DEFAULT_APP))
    threads = int(os.environ.get("LOAD_TEST_WSGI_THREADS", DEFAULT_THREADS))
    return WSGIMiddleware(app, workers=threads)
