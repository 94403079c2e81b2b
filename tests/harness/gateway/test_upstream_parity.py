"""The parity suite through a gateway in upstream mode, as a team deploys it: Flask on
gunicorn with 2 workers, FastAPI on uvicorn, the gateway in front at 50 %. Every case of the
corpus passes: API clients cannot tell which stack served them, nor that the gateway reached
it over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from parity_tests.cli import main

from .conftest import StartGateway, UpstreamStacks

TOKEN = "upstream-parity-token"


def test_the_corpus_passes_through_a_gateway_in_upstream_mode(
    upstream_stacks: UpstreamStacks,
    start_gateway: StartGateway,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    options = {"override_header": "token", "override_token": TOKEN}
    with start_gateway(fastapi_percent=50, **upstream_stacks.settings(), **options) as gateway:
        code = main(
            ["--gateway-url", gateway.url, "--override-token", TOKEN, "--report", str(tmp_path)]
        )
    out = capsys.readouterr().out
    assert code == 0, out
    assert (tmp_path / "junit.xml").is_file()
