"""The fake model: scripted answers, paced token by token, and the counts tests assert on.

The answer depends on the last user message only, so the same prompt always streams the
same tokens: the first after 0.1 s, then one every 0.05 s, scaled by the course pace.

- ``hello`` (or ``hi``, ``hey``): a fixed greeting;
- ``count to N`` (N up to 500): ``1, 2, ..., N.``, one number per token;
- ``count forever``: ``1, 2, 3, ...`` until the client leaves (capped at
  :data:`ENDLESS_TOKENS`), so "the client left before the end" never depends on timing;
- anything else is echoed back.

With ``tools`` in the request, a prompt that names a tool gets tool calls instead
(:mod:`course_app.fake_openai.tools`), streamed in pieces at the same pace.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from course_app.fake_openai.faults import (
    FAULT_AFTER_TOKENS,
    MIDSTREAM_FAULTS,
    STALL_SECONDS,
    Dropped,
    MidstreamFault,
)
from course_app.fake_openai.tools import ToolCall, ToolPiece, ToolRequest, call_pieces, plan_calls
from course_app.runtime import pace

MODELS = ("course-mini",)
CREATED = 1_767_225_600  # a fixed timestamp: identical requests give identical bytes
FIRST_TOKEN_DELAY = 0.1  # seconds, scaled by the pace
SLOW_FIRST_TOKEN_DELAY = 2.0  # the 'latency' fault
TOKEN_INTERVAL = 0.05
ENDLESS_TOKENS = 100_000  # where "count forever" stops: 83 minutes at pace 1

logger = logging.getLogger("lesson.fake_openai")


def tokenize(text: str) -> list[str]:
    """Word-sized tokens that keep their leading space: ``"a b" -> ["a", " b"]``."""
    return re.findall(r"\s*\S+", text)


def text_of(content: str | list[dict[str, Any]] | None) -> str:
    """The text of a message's content: a string, or an array of parts with ``text``."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(str(part.get("text", "")) for part in content)


def is_endless(prompt: str) -> bool:
    return prompt.strip().lower().rstrip("!.?") == "count forever"


def reply_to(prompt: str) -> str:
    """The scripted reply for a prompt (not for ``count forever``, which has no end)."""
    cleaned = prompt.strip()
    lowered = cleaned.lower().rstrip("!.?")
    if lowered in {"hello", "hi", "hey"}:
        return (
            "Hello! I am the course's fake model. I run on your machine, need no API key, "
            "and always give the same answer to the same prompt."
        )
    if match := re.fullmatch(r"count to (\d{1,3})", lowered):
        n = max(1, min(int(match.group(1)), 500))
        return ", ".join(str(i) for i in range(1, n + 1)) + "."
    return (
        f"You said: {cleaned} I am a fake model, so I answer by repeating it, one token at "
        "a time, to show how streaming works."
    )


def _counting(limit: int) -> Iterator[str]:
    """``"1,", " 2,", " 3,"`` ... up to ``limit`` tokens, made as they are needed."""
    return (f"{' ' if n > 1 else ''}{n}," for n in range(1, limit + 1))


@dataclass
class StreamStats:
    """What the fake server has seen, for lessons and tests to assert on."""

    started: int = 0
    finished: int = 0
    failed: int = 0  # an injected fault ended it
    cancelled: int = 0  # the client left before the end

    @property
    def open(self) -> int:
        return self.started - self.finished - self.failed - self.cancelled


@dataclass(frozen=True)
class Plan:
    """One answer, decided before the first byte: what to say, how it ends, which fault."""

    model: str
    fault: str | None
    prompt_tokens: int
    tokens: tuple[str | ToolPiece, ...]  # text, or the pieces of tool calls; empty when endless
    finish_reason: str  # "stop" / "tool_calls", or "length" when a token limit cut the answer
    ident: str
    endless: bool = False
    echo: tuple[tuple[str, Any], ...] = ()  # request fields a Response object repeats
    calls: tuple[ToolCall, ...] = ()  # the tool calls the answer makes instead of text

    @property
    def output_tokens(self) -> int:
        return ENDLESS_TOKENS if self.endless else len(self.tokens)

    def token_source(self) -> Iterable[str | ToolPiece]:
        return _counting(ENDLESS_TOKENS) if self.endless else self.tokens

    @property
    def text(self) -> str:
        """The text of a finished answer (none when it calls tools)."""
        return "".join(token for token in self.tokens if isinstance(token, str))


def make_plan(
    request: BaseModel,
    model: str,
    fault: str | None,
    prompt: str,
    context: str,
    limit: int | None,
    echo: dict[str, Any] | None = None,
    *,
    tools: ToolRequest | None = None,
    reply: str | None = None,
) -> Plan:
    """The answer to ``prompt``, cut to ``limit`` tokens; ``context`` is what counts as input.

    With ``tools``, a prompt that names a tool gets tool calls instead of text; ``reply``
    replaces the scripted reply (the answer to tool results).
    """
    payload = request.model_dump_json()
    if offered := getattr(request, "tools", None):  # not in the dump: see requests._TOOL_FIELD
        extra = [tool.model_dump() for tool in offered], request.tool_choice  # type: ignore[attr-defined]
        payload += json.dumps(extra, sort_keys=True)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:24]
    common = {"model": model, "fault": fault, "prompt_tokens": len(tokenize(context))}
    common |= {"ident": digest, "echo": tuple((echo or {}).items())}
    calls = plan_calls(digest, prompt, tools) if tools is not None else ()
    if calls:
        pieces = call_pieces(calls)
        if limit is not None and len(pieces) > limit:
            return Plan(tokens=tuple(pieces[:limit]), finish_reason="length", calls=calls, **common)
        return Plan(tokens=tuple(pieces), finish_reason="tool_calls", calls=calls, **common)
    if reply is not None:
        prompt = ""
    if is_endless(prompt):
        if limit is None:
            return Plan(tokens=(), finish_reason="length", endless=True, **common)
        return Plan(
            tokens=tuple(_counting(min(limit, ENDLESS_TOKENS))), finish_reason="length", **common
        )
    tokens = tokenize(reply if reply is not None else reply_to(prompt))
    if limit is not None and len(tokens) > limit:
        return Plan(tokens=tuple(tokens[:limit]), finish_reason="length", **common)
    return Plan(tokens=tuple(tokens), finish_reason="stop", **common)


async def paced_tokens(plan: Plan, stats: StreamStats) -> AsyncIterator[str | ToolPiece]:
    """The plan's tokens at the model's pace; raises at a mid-stream fault; counts the outcome."""
    stats.started += 1
    outcome = "cancelled"
    try:
        await pace.sleep(SLOW_FIRST_TOKEN_DELAY if plan.fault == "latency" else FIRST_TOKEN_DELAY)
        for index, token in enumerate(plan.token_source()):
            if index == FAULT_AFTER_TOKENS and plan.fault in MIDSTREAM_FAULTS:
                outcome = "failed"
                if plan.fault == "drop":
                    logger.info(
                        "stream %s: fault 'drop' cuts the connection after %d tokens",
                        plan.ident,
                        index,
                    )
                    raise Dropped(plan.ident)
                raise MidstreamFault(plan.fault)
            if index == FAULT_AFTER_TOKENS and plan.fault == "stall":
                # Real seconds, not paced: a stall outlasts any client timeout at any pace.
                await asyncio.sleep(STALL_SECONDS)
            yield token
            await pace.sleep(TOKEN_INTERVAL)
        outcome = "finished"
    finally:
        if outcome == "cancelled":  # log first: a reader that sees the count sees the line
            logger.info("stream %s cancelled: the client left after the stream started", plan.ident)
        setattr(stats, outcome, getattr(stats, outcome) + 1)


async def collect(plan: Plan, stats: StreamStats) -> str | None:
    """The whole answer at the same pace (not streamed); None when a fault cuts it short."""
    try:
        tokens = [token async for token in paced_tokens(plan, stats)]
    except MidstreamFault:
        return None
    return "".join(token for token in tokens if isinstance(token, str))


def sse_frame(data: dict[str, Any] | str, event: str | None = None, *, cut: bool = False) -> bytes:
    """One SSE frame of compact JSON; ``cut`` sends the first half of the JSON only."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    if cut:
        payload = payload[: len(payload) // 2]
    return (f"event: {event}\n" if event else "").encode() + f"data: {payload}\n\n".encode()


def event_stream(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream; charset=utf-8",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )
