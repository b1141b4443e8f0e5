"""``POST /v1/responses`` in the API's wire format.

Streamed: named events, each with a ``sequence_number`` counting from 0:
``response.created``, ``response.in_progress``, ``response.output_item.added``,
``response.content_part.added``, ``response.output_text.delta`` per token, then
``response.output_text.done``, ``response.content_part.done``, ``response.output_item.done``
and one terminal event: ``response.completed``, or ``response.incomplete`` (status
``incomplete``) when ``max_output_tokens`` cut the answer. There is no ``[DONE]``: the
terminal event is how a client knows the answer is whole. A failure mid-stream is an
``error`` event.

An answer that calls tools has one ``function_call`` output item per call instead of the
message: ``response.output_item.added`` (the item with its ``call_id`` and ``name``,
``arguments: ""``), ``response.function_call_arguments.delta`` per piece of the arguments,
``response.function_call_arguments.done`` (the whole arguments string) and
``response.output_item.done``; the terminal event's ``output`` lists the calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from course_app.fake_openai.faults import MIDSTREAM_MESSAGE, MidstreamFault
from course_app.fake_openai.script import CREATED, Plan, StreamStats, paced_tokens, sse_frame
from course_app.fake_openai.tools import ToolCall, ToolPiece, arguments_so_far


def final_status(plan: Plan) -> str:
    """``incomplete`` when ``max_output_tokens`` cut the answer, else ``completed``."""
    return "incomplete" if plan.finish_reason == "length" else "completed"


def _message_item(plan: Plan, status: str, text: str | None) -> dict[str, Any]:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": []}]
    return {
        "id": f"msg_{plan.ident}",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _call_item(call: ToolCall, status: str, arguments: str) -> dict[str, Any]:
    return {
        "id": call.item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call.call_id,
        "name": call.name,
    }


def _output(plan: Plan, status: str, text: str) -> list[dict[str, Any]]:
    if not plan.calls:
        return [_message_item(plan, status, text)]
    arguments = arguments_so_far(plan.calls, plan.tokens)
    return [
        _call_item(call, status, arguments[call.index])
        for call in plan.calls
        if call.index in arguments
    ]


def response_object(plan: Plan, status: str, text: str | None) -> dict[str, Any]:
    """A Response: in progress (no text yet), or finished with its text and usage."""
    output = [] if text is None else _output(plan, status, text)
    finished = status in {"completed", "incomplete"}
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    echo = dict(plan.echo)
    usage = {
        "input_tokens": plan.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": plan.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": plan.prompt_tokens + plan.output_tokens,
    }
    return {
        "id": f"resp_{plan.ident}",
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": echo.get("instructions"),
        "max_output_tokens": echo.get("max_output_tokens"),
        "model": plan.model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": echo.get("tool_choice") or "auto",
        "tools": echo.get("tools") or [],
        "top_p": 1.0,
        "truncation": "disabled",
        "metadata": {},
        "usage": usage if finished else None,
    }


async def response_events(plan: Plan, stats: StreamStats) -> AsyncIterator[bytes]:
    """The streamed Response, event by event."""
    sequence = 0

    def event(kind: str, *, cut: bool = False, **fields: Any) -> bytes:
        nonlocal sequence
        data = {"type": kind, "sequence_number": sequence, **fields}
        sequence += 1
        return sse_frame(data, event=kind, cut=cut)

    where = {"item_id": f"msg_{plan.ident}", "output_index": 0, "content_index": 0}
    part: dict[str, Any] = {"type": "output_text", "text": "", "annotations": []}
    yield event("response.created", response=response_object(plan, "in_progress", None))
    yield event("response.in_progress", response=response_object(plan, "in_progress", None))
    if not plan.calls:
        item = _message_item(plan, "in_progress", None)
        yield event("response.output_item.added", output_index=0, item=item)
        yield event("response.content_part.added", **where, part=part)
    text = ""
    call: ToolCall | None = None  # the call whose arguments are streaming
    arguments = ""

    def call_done(status: str) -> Iterator[bytes]:
        assert call is not None
        at = {"item_id": call.item_id, "output_index": call.index}
        yield event("response.function_call_arguments.done", **at, arguments=arguments)
        item = _call_item(call, status, arguments)
        yield event("response.output_item.done", output_index=call.index, item=item)

    try:
        async for token in paced_tokens(plan, stats):
            if isinstance(token, ToolPiece) and token.opens:
                if call is not None:
                    for frame in call_done("completed"):
                        yield frame
                call, arguments = plan.calls[token.index], ""
                item = _call_item(call, "in_progress", "")
                yield event("response.output_item.added", output_index=call.index, item=item)
            elif isinstance(token, ToolPiece):
                assert call is not None
                arguments += token.arguments
                at = {"item_id": call.item_id, "output_index": call.index}
                yield event("response.function_call_arguments.delta", **at, delta=token.arguments)
            else:
                text += token
                yield event("response.output_text.delta", **where, delta=token, logprobs=[])
    except MidstreamFault as fault:
        if fault.fault == "error-midstream":
            yield event("error", code="server_error", message=MIDSTREAM_MESSAGE, param=None)
        elif fault.fault == "bad-json":
            yield event("response.output_text.delta", **where, delta=" and", logprobs=[], cut=True)
        return  # 'truncate': the body just ends, without a terminal event
    status = final_status(plan)  # the item and the response end the same way
    if plan.calls:
        if call is not None:
            for frame in call_done(status):
                yield frame
        yield event(f"response.{status}", response=response_object(plan, status, text))
        return
    yield event("response.output_text.done", **where, text=text, logprobs=[])
    yield event("response.content_part.done", **where, part={**part, "text": text})
    yield event("response.output_item.done", output_index=0, item=_message_item(plan, status, text))
    yield event(f"response.{status}", response=response_object(plan, status, text))
