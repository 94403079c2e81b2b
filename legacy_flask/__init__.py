"""The legacy chatbot: Flask 3, flask-cors, sync boto3. `gunicorn 'legacy_flask:create_app()'`."""

from __future__ import annotations

from legacy_flask.app import create_app

__all__ = ["create_app"]
