"""Pages from templates: autoescaped, strict about undefined names, the tool's templates
found before the shared ones, and a layout that fetches nothing."""

from __future__ import annotations

import re
from importlib import resources

import pytest
from jinja2 import TemplateNotFound, UndefinedError
from markupsafe import Markup

from harness.report.page import build_environment, plural, render


def test_every_value_is_escaped_unless_it_is_markup() -> None:
    template = build_environment().from_string('<p title="{{ x }}">{{ x }}</p>{{ chart }}')
    page = template.render(x='<script>"&', chart=Markup("<svg></svg>"))
    assert page == '<p title="&lt;script&gt;&#34;&amp;">&lt;script&gt;&#34;&amp;</p><svg></svg>'


def test_an_undefined_name_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(UndefinedError):
        build_environment().from_string("{{ missing }}").render()


def test_the_shared_layout_is_self_contained() -> None:
    template = build_environment().from_string(
        '{% extends "base.html.j2" %}{% block title %}T{% endblock %}'
        "{% block body %}<p>body</p>{% endblock %}"
    )
    page = template.render()
    assert page.startswith("<!doctype html>\n")
    assert "<title>T</title>" in page and "<p>body</p>" in page
    assert "<style>" in page and "font:" in page  # the shared CSS, inline
    assert "<script" not in page and "<link" not in page
    assert re.findall(r"(?:src|href)=|https?://|@import", page) == []


def test_a_tool_finds_its_own_templates_and_the_shared_ones() -> None:
    for package, name in (("parity_tests", "report.html.j2"), ("load_test", "index.html.j2")):
        environment = build_environment(package)
        assert environment.get_template(name).filename is not None
        assert environment.get_template("base.html.j2") is not None
    with pytest.raises(TemplateNotFound):
        build_environment().get_template("report.html.j2")  # not shared: the parity suite's
    assert build_environment("load_test") is build_environment("load_test")  # built once


def test_render_gives_the_named_page_of_the_named_tool() -> None:
    assert render("load_test", "base.html.j2", {}).startswith("<!doctype html>\n")
    with pytest.raises(TemplateNotFound):
        render("harness.report", "index.html.j2", {})  # the load test's page, not shared
    with pytest.raises(UndefinedError):
        render("load_test", "index.html.j2", {})  # a page missing its figures is an error


def test_the_templates_are_package_files() -> None:
    for package, name in (
        ("harness.report", "base.html.j2"),
        ("harness.report", "base.css.j2"),
        ("parity_tests", "report.html.j2"),
        ("load_test", "index.html.j2"),
    ):
        assert (resources.files(package) / "templates" / name).is_file()


@pytest.mark.parametrize(
    ("count", "expected"), [(0, "0 cases"), (1, "1 case"), (2, "2 cases"), (140, "140 cases")]
)
def test_plural(count: int, expected: str) -> None:
    assert plural(count, "case") == expected


def test_plural_of_an_irregular_word() -> None:
    assert (plural(1, "box", "boxes"), plural(3, "box", "boxes")) == ("1 box", "3 boxes")
