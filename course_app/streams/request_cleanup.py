"""Cleanup tied to the request, for FastAPI's native ``fastapi.sse`` routes.

``fastapi.sse`` (FastAPI 0.163.2; the SSE code is the same in 0.165.0) does not iterate a
generator route in the task that sends. A *producer task* pulls each event out of the
generator into a one-item memory stream; a keep-alive task moves it into a second one-item
stream (or sends ``: ping`` after 15 s with nothing); the response reads that one. When the
response ends, FastAPI cancels both tasks. If the producer is then suspended outside the
generator, handing an event over (always the case for a client that stopped reading, often
for a fast generator), nothing closes the generator: it stays paused at its ``yield``, and
its ``finally`` runs only when the cyclic garbage collector finds it, seconds or minutes
later. Lesson 05 shows it; ``benchmarks/sse_disconnect.py --stalled`` counts it.

FastAPI runs the code after a dependency's ``yield`` once the response has ended, however it
ended, shielded from cancellation. Two remedies follow:

* the idiomatic one: a dependency with ``yield`` that owns the resource (acquire, yield,
  release) releases it promptly even while the route's generator is stuck;
* the general one, for what the route opens itself while streaming: :data:`RequestCleanup`,
  a request-scoped :class:`~contextlib.AsyncExitStack`::

    @app.get("/chat", response_class=EventSourceResponse)
    async def chat(cleanup: RequestCleanup) -> AsyncIterator[ServerSentEvent]:
        tokens = relay_tokens(...)
        cleanup.push_async_callback(tokens.aclose)  # runs even if this generator is stuck
        async for token in tokens:
            yield ServerSentEvent(raw_data=token)

Both close what *they* own. The route generator's own ``finally`` still waits for the
garbage collector: put nothing there that must happen promptly.

Keep the stack request-scoped (the default). With
``Depends(request_exit_stack, scope="function")`` FastAPI closes it as soon as the route
function has returned its generator, before the first event, and callbacks pushed from the
generator never run. ``BackgroundTasks`` are no substitute either: they run inside the
response, before FastAPI stops the producer task, so ``aclose()`` there fails with
"RuntimeError: aclose(): asynchronous generator is already running" whenever the producer
is inside the generator.

sse-starlette needs none of this: it iterates your generator in the task that sends, and
closes it itself (a shielded ``aclose()``) when a send fails or is cancelled.
"""

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends


async def request_exit_stack() -> AsyncIterator[contextlib.AsyncExitStack]:
    """A dependency: an exit stack that FastAPI closes once the response has ended.

    Use it with the default (request) scope, as :data:`RequestCleanup` does.
    """
    async with contextlib.AsyncExitStack() as stack:
        yield stack


RequestCleanup = Annotated[contextlib.AsyncExitStack, Depends(request_exit_stack)]
"""Type a route parameter with this to get the request's exit stack."""
