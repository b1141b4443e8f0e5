"""``POST /v1/chat/completions`` in the API's wire format.

Streamed (``stream: true``): ``data: {chat.completion.chunk}`` frames without event names:
the role first, then content deltas, a chunk with ``finish_reason``, a usage chunk with
``choices: []`` when ``stream_options.include_usage`` is set, and ``data: [DONE]``.

An answer that calls tools streams ``tool_calls`` deltas instead of content, keyed by
``index``: a call's first delta carries its ``id``, ``type`` and function ``name`` (with
``arguments: ""``), the next ones only pieces of ``arguments``; ``finish_reason`` is
``"tool_calls"``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from course_app.fake_openai.faults import MIDSTREAM_MESSAGE, MidstreamFault
from course_app.fake_openai.script import CREATED, Plan, StreamStats, paced_tokens, sse_frame
from course_app.fake_openai.tools import ToolPiece, arguments_so_far


def _usage(plan: Plan) -> dict[str, int]:
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.output_tokens,
        "total_tokens": plan.prompt_tokens + plan.output_tokens,
    }


def _tool_delta(plan: Plan, piece: ToolPiece) -> dict[str, Any]:
    if not piece.opens:
        return {"index": piece.index, "function": {"arguments": piece.arguments}}
    call = plan.calls[piece.index]
    function = {"name": call.name, "arguments": ""}
    return {"index": piece.index, "id": call.call_id, "type": "function", "function": function}


def chat_completion(plan: Plan, text: str) -> dict[str, Any]:
    """The ``chat.completion`` object of a request without streaming."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if plan.calls else text,
        "refusal": None,
        "annotations": [],
    }
    if plan.calls:
        arguments = arguments_so_far(plan.calls, plan.tokens)
        message["tool_calls"] = [
            {
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": arguments[call.index]},
            }
            for call in plan.calls
            if call.index in arguments
        ]
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": plan.finish_reason}
    return {
        "id": f"chatcmpl-{plan.ident}",
        "object": "chat.completion",
        "created": CREATED,
        "model": plan.model,
        "system_fingerprint": "fp_course",
        "choices": [choice],
        "usage": _usage(plan),
    }


async def chat_chunks(plan: Plan, include_usage: bool, stats: StreamStats) -> AsyncIterator[bytes]:
    """The streamed answer, frame by frame."""
    base = {
        "id": f"chatcmpl-{plan.ident}",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": plan.model,
        "system_fingerprint": "fp_course",
    }
    extra = {"usage": None} if include_usage else {}

    def chunk(
        delta: dict[str, Any], finish_reason: str | None = None, *, cut: bool = False
    ) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return sse_frame({**base, "choices": [choice], **extra}, cut=cut)

    yield chunk({"role": "assistant", "content": None if plan.calls else "", "refusal": None})
    try:
        async for token in paced_tokens(plan, stats):
            if isinstance(token, ToolPiece):
                yield chunk({"tool_calls": [_tool_delta(plan, token)]})
            else:
                yield chunk({"content": token})
    except MidstreamFault as fault:
        if fault.fault == "error-midstream":
            error = {
                "message": MIDSTREAM_MESSAGE,
                "type": "server_error",
                "param": None,
                "code": "fake_fault",
            }
            yield sse_frame({"error": error})
        elif fault.fault == "bad-json":
            yield chunk({"content": " and"}, cut=True)
        return  # 'truncate': the body just ends
    yield chunk({}, plan.finish_reason)
    if include_usage:
        yield sse_frame({**base, "choices": [], "usage": _usage(plan)})
    yield sse_frame("[DONE]")
