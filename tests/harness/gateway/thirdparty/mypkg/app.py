"""The new side: a FastAPI app, `mypkg.app:app`."""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


@app.get("/inventory/{item}")
async def inventory(item: str) -> dict[str, object]:
    return {"item": item, "count": 3, "served_by": "new"}


@app.get("/v2/inventory")
async def listing() -> dict[str, object]:
    return {"items": ["bolt", "nut"], "served_by": "new"}
