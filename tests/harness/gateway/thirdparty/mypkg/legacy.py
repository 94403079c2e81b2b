"""The legacy side: a Flask app factory, `mypkg.legacy:create_app()`."""

from __future__ import annotations

from flask import Flask


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/inventory/<item>")
    def inventory(item: str) -> dict[str, object]:
        return {"item": item, "count": 3, "served_by": "legacy"}

    @app.get("/legacy-only/report")
    def report() -> dict[str, object]:
        return {"report": "old", "served_by": "legacy"}

    return app
