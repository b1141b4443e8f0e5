"""Which OpenAI-compatible API the LLM lessons talk to.

By default: the course's offline fake server (:mod:`course_app.fake_openai.app`). Set
``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` (and optionally ``OPENAI_MODEL``) to use a real
provider instead; nothing else in a lesson changes.

An app gets both in one line of its lifespan: ``async with open_llm(settings) as llm:``
(:func:`open_llm`) yields the settings and one ``AsyncOpenAI`` client, starting the fake
server when no provider is configured and stopping it at exit.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import NamedTuple

import openai

from course_app.runtime import LessonServer

FAKE_API_KEY = "course"
FAKE_MODEL = "course-mini"
DEFAULT_REAL_MODEL = "gpt-4o-mini"


@dataclass(frozen=True)
class LLMSettings:
    base_url: str
    api_key: str
    model: str
    is_fake: bool

    def __repr__(self) -> str:  # never print a real key in a notebook
        key = self.api_key if self.is_fake else "***"
        return f"LLMSettings(base_url={self.base_url!r}, api_key={key!r}, model={self.model!r})"


def llm_settings(fake_server_url: str | None = None) -> LLMSettings:
    """``OPENAI_BASE_URL``/``OPENAI_API_KEY``/``OPENAI_MODEL`` if set, else the fake server."""
    base_url = os.environ.get("OPENAI_BASE_URL", "").strip()
    if base_url:
        api_key = os.environ.get("OPENAI_API_KEY", "").strip()
        if not api_key:
            raise ValueError("OPENAI_BASE_URL is set but OPENAI_API_KEY is not: set both")
        model = os.environ.get("OPENAI_MODEL", "").strip() or DEFAULT_REAL_MODEL
        return LLMSettings(base_url, api_key, model, is_fake=False)
    if fake_server_url is None:
        raise LookupError(
            "no LLM configured: start the fake server (course_app.fake_openai.app) "
            "or set OPENAI_BASE_URL and OPENAI_API_KEY"
        )
    return LLMSettings(fake_server_url.rstrip("/") + "/v1", FAKE_API_KEY, FAKE_MODEL, is_fake=True)


def async_client(
    settings: LLMSettings, *, max_retries: int = 0, timeout: float = 60.0
) -> openai.AsyncOpenAI:
    """An ``AsyncOpenAI`` for these settings. Retries default to 0: a relay reports errors
    to its client at once instead of silently retrying a 429."""
    return openai.AsyncOpenAI(
        base_url=settings.base_url,
        api_key=settings.api_key,
        max_retries=max_retries,
        timeout=timeout,
    )


class AppLLM(NamedTuple):
    """What an app needs to talk to its model: the settings (model, fake or not), a client."""

    settings: LLMSettings
    client: openai.AsyncOpenAI


@asynccontextmanager
async def open_llm(
    settings: LLMSettings | None = None, *, name: str = "llm", **client_options: object
) -> AsyncIterator[AppLLM]:
    """The LLM client for an app's lifespan: one ``AsyncOpenAI`` for the app's whole life.

    ``settings`` wins; else the environment (:func:`llm_settings`); else the course's fake
    server, started here on a free port as the lesson server ``name`` and stopped at exit.
    ``client_options`` go to :func:`async_client` (``timeout``, ``max_retries``). The client
    is closed at exit, before the fake server it may talk to stops.
    """
    fake: LessonServer | None = None
    if settings is None:
        try:
            settings = llm_settings()  # OPENAI_BASE_URL and friends, if set
        except LookupError:
            from course_app.fake_openai.app import create_app  # the server, only when needed

            fake = LessonServer(create_app(), name=name).start()
            settings = llm_settings(fake.url)
    try:
        async with async_client(settings, **client_options) as client:  # type: ignore[arg-type]
            yield AppLLM(settings, client)
    finally:
        if fake is not None:
            fake.stop()
