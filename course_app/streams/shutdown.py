"""Act when the server *begins* to shut down, not when its lifespan ends.

At SIGTERM or Ctrl+C, uvicorn (``uvicorn/server.py``, ``Server.shutdown``) stops accepting
connections, waits for the open ones to finish their responses (forever without
``--timeout-graceful-shutdown``), cancels what is still running once that timeout is over,
and only *then* runs the lifespan's shutdown. Code after a lifespan's ``yield`` therefore
runs after every stream has already ended or been cut off. Streams that should end
cleanly at shutdown (a last event, then the end) need to hear about it first::

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with close_at_shutdown(registry.aclose):  # at the signal, or at the latest here
            yield

How the signal is seen: uvicorn sets ``Server.should_exit`` in its signal handler, and
nothing tells the app. This module looks where sse-starlette's own shutdown watcher looks
(``sse_starlette.sse._shutdown_watcher``): its process-wide ``AppStatus.should_exit`` (set by
its patch of uvicorn's signal handler, and by :meth:`course_app.runtime.server.LessonServer.stop`)
and the uvicorn server whose ``handle_exit`` is the process's SIGTERM handler (uvicorn's
command line installs it before it imports the app, so the patch misses that case).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from sse_starlette.sse import AppStatus

POLL_SECONDS = 0.1  # uvicorn's own main loop checks its flag as often


def shutdown_requested() -> bool:
    """True once the server running this process has been told to shut down."""
    if AppStatus.should_exit:
        return True
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return bool(getattr(server, "should_exit", False))


async def wait_for_shutdown(poll: float = POLL_SECONDS) -> None:
    """Return once :func:`shutdown_requested` is True (checked every ``poll`` seconds)."""
    # Polled, not awaited: the flags are plain attributes set in a signal handler (or by a
    # thread), and nothing wakes an event loop when they change.
    while not shutdown_requested():  # noqa: ASYNC110
        await asyncio.sleep(poll)


@asynccontextmanager
async def close_at_shutdown(close: Callable[[], Awaitable[object]]) -> AsyncIterator[None]:
    """Run ``await close()`` once: when the server begins to shut down, or at the block's end.

    Use it around a lifespan's ``yield``. Without a signal (a ``TestClient``, a server
    stopped from inside the process while others run) ``close()`` runs at the lifespan's
    end, as it would without this helper.
    """
    closing = asyncio.Event()

    async def close_on_signal() -> None:
        await wait_for_shutdown()
        closing.set()
        await close()

    watcher = asyncio.create_task(close_on_signal(), name="close-at-shutdown")
    try:
        yield
    finally:
        if closing.is_set():
            await watcher  # close() has started: let it finish
        else:
            watcher.cancel()
            await asyncio.wait([watcher])
            await close()
