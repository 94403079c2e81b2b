"""Pages from templates: one Jinja2 environment per tool, autoescaping every value.

A tool keeps its page templates in its own package (`<package>/templates/*.j2`) and
extends the shared layout here (`base.html.j2`: the head, the shared CSS, no external asset),
so every report is one self-contained file that opens from disk.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from jinja2 import ChoiceLoader, Environment, PackageLoader, StrictUndefined

TEMPLATES = "templates"
"""The folder of templates inside each package."""


def plural(count: int, word: str, many: str | None = None) -> str:
    """`count` and `word`, in the plural unless `count` is 1: "1 case", "3 cases"."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


@functools.cache
def build_environment(*packages: str) -> Environment:
    """The environment for `packages`' templates, searched in order, then the shared ones
    (`harness.report`'s). Autoescaping is on for every template: a value is HTML-escaped
    unless it is `markupsafe.Markup` (as the charts are). An undefined name is an error,
    not an empty string. Built once per process for each list of packages."""
    loaders = [PackageLoader(package, TEMPLATES) for package in (*packages, "harness.report")]
    environment = Environment(
        loader=ChoiceLoader(loaders),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.globals["plural"] = plural
    return environment


def render(package: str, name: str, context: Mapping[str, Any]) -> str:
    """The page `name` of `package`'s templates, rendered with `context`."""
    return build_environment(package).get_template(name).render(context)
