"""Stream one short answer through the openai SDK from the fake server, in process.

The warm check worker (course_app/checking/warm_worker.py) calls :func:`warm_up` while it
idles. The SDK builds the pydantic models of a stream's events the first time it meets
them (about 0.7 s of CPU for the Responses API on a small machine), and FastAPI and the
fake server do their own first-request set-up: every `course check` of a lesson that
streams from the fake server paid that again. Done once in the worker, its forked checks
start with it done. httpx's ASGI transport: no socket, no thread, nothing left running.
"""

from __future__ import annotations

import asyncio

import httpx
import openai

from course_app.fake_openai.app import create_app
from course_app.fake_openai.settings import FAKE_MODEL


async def _stream_once() -> None:
    transport = httpx.ASGITransport(app=create_app())
    messages = [{"role": "user", "content": "hi"}]
    async with (
        httpx.AsyncClient(transport=transport) as http,
        openai.AsyncOpenAI(
            api_key="warm-up", base_url="http://fake/v1", http_client=http
        ) as client,
    ):
        responses = await client.responses.create(
            model=FAKE_MODEL, input=messages, stream=True, max_output_tokens=4
        )
        async with responses:
            async for _ in responses:
                pass
        chat = await client.chat.completions.create(
            model=FAKE_MODEL, messages=messages, stream=True, max_tokens=4
        )
        async with chat:
            async for _ in chat:
                pass


def warm_up() -> None:
    """Build the SDK's and the fake server's models by streaming from each API once."""
    asyncio.run(_stream_once())
