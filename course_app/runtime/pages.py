"""HTML pages that lesson apps serve from ``course_app/runtime/static/``.

Serving a page from the lesson server itself keeps its ``EventSource`` / ``fetch()`` on the
same origin (no CORS) and needs no trusted-notebook JavaScript in JupyterLab.
"""

from importlib.resources import files

from fastapi.responses import HTMLResponse


def read_page(name: str) -> str:
    """The text of ``course_app/runtime/static/<name>``."""
    return files("course_app.runtime.static").joinpath(name).read_text(encoding="utf-8")


def html_page(name: str) -> HTMLResponse:
    """``course_app/runtime/static/<name>`` as a response; ``no-store`` so edits show on reload."""
    return HTMLResponse(read_page(name), headers={"cache-control": "no-store"})
