"""Lesson 00's demo: a page that shows Server-Sent Events arriving in the browser.

The lesson server serves both the page and the stream, so the browser's ``EventSource``
talks to its own origin: no CORS, and no trusted-notebook JavaScript in JupyterLab.

Try it in lesson 00, or from a terminal (then open http://127.0.0.1:8000/ in a browser):
``python -c "import uvicorn; from course_app.demos.welcome_demo import create_app; uvicorn.run(create_app())"``
"""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from course_app.runtime import html_page, pace


def create_app(interval: float = 0.5) -> FastAPI:
    """``/`` is the page; ``/ticks?count=N`` streams N ``tick`` events, then ``done``."""
    app = FastAPI(title="Lesson 00: welcome demo")

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return html_page("welcome.html")

    @app.get("/ticks", response_class=EventSourceResponse)
    async def ticks(
        count: Annotated[int, Query(ge=1, le=100)] = 5,
    ) -> AsyncIterator[ServerSentEvent]:
        for n in range(1, count + 1):
            yield ServerSentEvent(data={"n": n, "of": count}, event="tick", id=str(n))
            await pace.sleep(interval)
        # Without this the browser would reconnect and start over: a finished stream looks
        # like a dropped connection to EventSource. The page closes it on `done`.
        yield ServerSentEvent(data={"n": count}, event="done")

    return app
