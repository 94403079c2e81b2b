"""`GET /health`."""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify

from legacy_flask.services import services

bp = Blueprint("health", __name__)


@bp.get("/health")
def health() -> Response:
    return jsonify(status="healthy", timestamp=time.time(), version=services().version)
