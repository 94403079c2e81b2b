"""`/docs` (Swagger UI) and `/redoc` (ReDoc) work offline: every asset they load, and every
URL their configuration names, is a path the FastAPI app serves itself."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from fastapi_app import create_app
from shared.settings import Settings

PAGES = {"/docs": "SwaggerUIBundle", "/redoc": "Redoc"}
"""Each page, and the global its script must define."""


class Page(HTMLParser):
    """What a page loads: (kind, URL) for each `src`/`href` (kind: `script`, or the link's
    `rel`), the URLs its configuration names (ReDoc's `spec-url`, quoted paths in inline
    scripts) and its inline scripts and styles."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.loads: list[tuple[str, str]] = []
        self.config_urls: list[str] = []
        self.inline: dict[str, list[str]] = {"script": [], "style": []}
        self._open: str | None = None
        self.feed(html)
        self.close()
        for script in self.inline["script"]:
            self.config_urls += re.findall(r"""['"](/[^'"]*)['"]""", script)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if "src" in found:
            self.loads.append((tag, found["src"]))
        if "href" in found:
            self.loads.append((found.get("rel", tag), found["href"]))
        if "spec-url" in found:
            self.config_urls.append(found["spec-url"])
        self._open = tag if tag in self.inline else None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.inline[self._open].append(data)

    def handle_endtag(self, tag: str) -> None:
        self._open = None


CONFIGURED = {
    "/docs": {"/openapi.json": "application/json", "/docs/oauth2-redirect": "text/html"},
    "/redoc": {"/openapi.json": "application/json"},
}
"""The URLs each page's configuration names, and their media types."""

LOADS = {"/docs": ["stylesheet", "shortcut icon", "script"], "/redoc": ["shortcut icon", "script"]}
"""What each page loads, in order."""

# What an asset of each kind must be: its content types and least size in bytes.
ASSETS: dict[str, tuple[frozenset[str], int]] = {
    "script": (frozenset({"text/javascript", "application/javascript"}), 100_000),
    "stylesheet": (frozenset({"text/css"}), 10_000),
    "shortcut icon": (frozenset({"image/png"}), 1_000),
}


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip()


def _same_origin(url: str) -> bool:
    return url.startswith("/") and not url.startswith("//")


@pytest.fixture(scope="module")
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings())) as client:
        yield client


@pytest.fixture(scope="module", params=list(PAGES))
def page(request: pytest.FixtureRequest, client: TestClient) -> tuple[str, Page]:
    path: str = request.param
    response = client.get(path)
    assert response.status_code == 200
    assert _media_type(response.headers["content-type"]) == "text/html"
    return path, Page(response.text)


def test_pages_name_only_what_the_app_serves(client: TestClient, page: tuple[str, Page]) -> None:
    path, parsed = page
    urls = [url for _, url in parsed.loads] + parsed.config_urls
    urls += re.findall(r"url\(\s*['\"]?([^'\")]*)", "".join(parsed.inline["style"]))
    assert urls
    assert [url for url in urls if not _same_origin(url)] == []
    assert not any("://" in text for texts in parsed.inline.values() for text in texts)
    # The document and, for Swagger UI, the OAuth2 redirect page: at their usual URLs.
    served = {}
    for url in parsed.config_urls:
        response = client.get(url)
        assert response.status_code == 200, url
        served[url] = _media_type(response.headers["content-type"])
    assert served == CONFIGURED[path]


def test_pages_load_their_assets_from_the_app(client: TestClient, page: tuple[str, Page]) -> None:
    path, parsed = page
    assert [kind for kind, _ in parsed.loads] == LOADS[path]
    for kind, url in parsed.loads:
        response = client.get(url)
        types, least = ASSETS[kind]
        assert response.status_code == 200, url
        assert _media_type(response.headers["content-type"]) in types, url
        assert len(response.content) > least, url
        if kind == "script":
            assert PAGES[path].encode() in response.content
        if kind == "stylesheet":
            # The stylesheet's own images are inline (data: URLs): it fetches nothing either.
            assert set(re.findall(rb"url\(\s*['\"]?([a-z]+):", response.content)) == {b"data"}
