"""The dashboard's page and its files (``zmqapp/static/``), as the HTTP servers serve them.

One page serves both dashboards: an app's own ``GET /`` (:mod:`zmqapp.web`), which polls that
app's ``/status``, and ``zmqapp dashboard`` (:mod:`zmqapp.dashboard`), which polls
``api/system``, its view of several apps. The page learns which from a ``<meta>`` tag. No
build step and nothing from the network: plain JavaScript drawing SVG, shipped in the package.
"""

from __future__ import annotations

import functools
import html
import importlib.resources

#: The files the page loads, and their content types.
ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
#: What replaces the page's placeholders.
SOURCE_MARK = "{{source}}"
TITLE_MARK = "{{title}}"


@functools.cache
def _read(name: str) -> bytes:
    return importlib.resources.files("zmqapp").joinpath("static", name).read_bytes()


def page(source: str, title: str) -> bytes:
    """The dashboard page, polling ``source`` (a URL relative to the page)."""
    text = _read("dashboard.html").decode("utf-8")
    text = text.replace(SOURCE_MARK, html.escape(source, quote=True))
    return text.replace(TITLE_MARK, html.escape(title)).encode("utf-8")


def asset(name: str) -> tuple[bytes, str] | None:
    """A file the page loads, with its content type; None if there is no such file."""
    content_type = ASSETS.get(name)
    if content_type is None:
        return None
    return _read(name), content_type
