"""Jinja2 templates: firmware sources (firmware/templates) and the report (package templates)."""

from __future__ import annotations

from pathlib import Path

import jinja2

from . import ROOT

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader([ROOT / "firmware" / "templates", Path(__file__).parent / "templates"]),
    undefined=jinja2.StrictUndefined,
    autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_template(name: str, **context) -> str:
    return _ENV.get_template(name).render(**context)
