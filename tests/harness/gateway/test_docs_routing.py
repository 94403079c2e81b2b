"""The API's documentation through the gateway: `/docs`, `/redoc` and every asset they load
are FastAPI's alone, so they reach it whatever the percentage or the override header."""

from __future__ import annotations

import re

import pytest

from .conftest import StartGateway

BACKEND = "x-dualstack-backend"


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_and_their_assets_go_to_fastapi(start_gateway: StartGateway, page: str) -> None:
    pinned = {BACKEND: "flask"}  # ownership comes before the override header
    with start_gateway(fastapi_percent=0) as gw, gw.client(headers=pinned) as client:
        response = client.get(page)
        assets = re.findall(r'(?:src|href)="([^"]+)"', response.text)
        served = {url: client.get(url) for url in assets}
    assert (response.status_code, response.headers[BACKEND]) == (200, "fastapi")
    assert len(assets) >= 2
    assert {url: (r.status_code, r.headers[BACKEND]) for url, r in served.items()} == dict.fromkeys(
        assets, (200, "fastapi")
    )
