"""Cleanup tied to the request, for FastAPI's native ``fastapi.sse`` routes.

``fastapi.sse`` runs a generator route in a *producer task* that hands each event to the
response through a one-item buffer. When the client leaves while that task waits to hand
an event over (always the case for a client that stopped reading first), the task is
cancelled at the handover, outside the generator: the generator stays paused at its
``yield`` and its ``finally`` runs only when the garbage collector finds it, seconds or
minutes later. Lesson 05 shows it; ``benchmarks/sse_disconnect.py --stalled`` counts it.

FastAPI unwinds a request's dependencies *after* the response has finished, however it
finished. A dependency with ``yield`` that hands out an :class:`~contextlib.AsyncExitStack`
lets a route register what must be closed when the request ends::

    @app.get("/chat", response_class=EventSourceResponse)
    async def chat(cleanup: RequestCleanup) -> AsyncIterator[ServerSentEvent]:
        tokens = relay_tokens(...)
        cleanup.push_async_callback(tokens.aclose)  # runs even if this generator is stuck
        async for token in tokens:
            yield ServerSentEvent(raw_data=token)

sse-starlette needs none of this: it iterates your generator in the task that sends, and
closes the generator itself (``aclose()``) when a send fails or is cancelled.
"""

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends


async def request_exit_stack() -> AsyncIterator[contextlib.AsyncExitStack]:
    """A dependency: an exit stack that FastAPI closes once the response has ended."""
    async with contextlib.AsyncExitStack() as stack:
        yield stack


RequestCleanup = Annotated[contextlib.AsyncExitStack, Depends(request_exit_stack)]
"""Type a route parameter with this to get the request's exit stack."""
