"""Jinja2 templates: firmware sources (firmware/templates) and the report (tinyrobust/report)."""

from __future__ import annotations

from pathlib import Path

import jinja2

from tinyrobust.assets import FIRMWARE

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader([FIRMWARE / "templates", Path(__file__).parent / "report"]),
    undefined=jinja2.StrictUndefined,
    autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_template(name: str, **context) -> str:
    return _ENV.get_template(name).render(**context)
