"""How the fake model calls tools: deterministic, decided by the last message alone.

With ``tools`` in the request (and ``tool_choice`` not ``"none"``), the fake model calls a
tool when the **last message is the user's and names the tool**: each time a tool's name
appears as a word, that is one call, in the order of the prompt, and the ``key=value`` words
after it (up to the next tool name) are its arguments::

    "get_weather city=Paris and get_weather city=Oslo"
    -> two calls: get_weather {"city": "Paris"}, get_weather {"city": "Oslo"}

Values are strings, except integers, ``true``/``false``; quote a value with spaces
(``city="New York"``). ``tool_choice="required"`` calls the first tool (no arguments) when
the prompt names none; ``{"type": "function", ...}`` calls that tool;
``parallel_tool_calls=false`` keeps the first call only.

When the request offers tools and the last message is a tool result (``role: "tool"``, or
a ``function_call_output`` item in the Responses API), the model answers in text, quoting
the results. Without ``tools`` in the request, nothing changes: the last user message is
answered as always.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

_ARGUMENT = re.compile(r'([A-Za-z_][\w-]*)=("[^"]*"|\S+)')
_PIECE = re.compile(r"\w+|[^\w]+")


@dataclass(frozen=True)
class ToolCall:
    """One function call of an answer, decided before the first byte."""

    index: int
    call_id: str  # what the tool result refers to (``tool_call_id`` / ``call_id``)
    item_id: str  # the Responses API's output item id
    name: str
    arguments: str  # JSON, as the API sends it: a string, not an object


@dataclass(frozen=True)
class ToolPiece:
    """One streamed piece of a call: its opening (``opens``: id and name) or arguments."""

    index: int
    arguments: str
    opens: bool = False


def _value(raw: str) -> Any:
    raw = raw.rstrip(",.;!?")
    if len(raw) >= 2 and raw.startswith('"') and raw.endswith('"'):
        return raw[1:-1]
    if re.fullmatch(r"-?\d{1,15}", raw):
        return int(raw)
    return {"true": True, "false": False}.get(raw, raw)


def named_calls(prompt: str, names: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """The calls a prompt asks for: each tool name it says, with the ``key=value`` after it."""
    by_word = {name.lower(): name for name in names}
    calls: list[tuple[str, dict[str, Any]]] = []
    for word in re.finditer(r'(?:[^\s"]|"[^"]*")+', prompt):
        text = word.group()
        name = by_word.get(text.strip(",.;!?:").lower())
        if name is not None:
            calls.append((name, {}))
        elif calls and (pair := _ARGUMENT.fullmatch(text)):
            calls[-1][1][pair.group(1)] = _value(pair.group(2))
    return calls


@dataclass(frozen=True)
class ToolRequest:
    """What a request says about tools: their names, ``tool_choice``, ``parallel_tool_calls``."""

    names: tuple[str, ...]
    choice: str | None  # "auto", "none", "required", a tool's name, or None (auto)
    parallel: bool = True


def plan_calls(ident: str, prompt: str, tools: ToolRequest) -> tuple[ToolCall, ...]:
    """The calls the prompt asks for (see the module's doc); ``ident`` makes their ids."""
    names, choice = list(tools.names), tools.choice
    if not names or choice == "none":
        return ()
    calls = named_calls(prompt, names)
    if choice not in (None, "auto", "required"):  # a named tool is forced
        calls = [call for call in calls if call[0] == choice] or [(choice, {})]
    if not calls and choice == "required":
        calls = [(names[0], {})]
    if not tools.parallel:
        calls = calls[:1]
    made = []
    for index, (name, arguments) in enumerate(calls):
        digest = hashlib.sha256(f"{ident}:{index}".encode()).hexdigest()[:24]
        text = json.dumps(arguments, separators=(",", ":"))
        made.append(ToolCall(index, f"call_{digest}", f"fc_{digest}", name, text))
    return tuple(made)


def call_pieces(calls: tuple[ToolCall, ...]) -> list[ToolPiece]:
    """How the calls stream: each opens (id and name), then its arguments in small pieces."""
    pieces = []
    for call in calls:
        pieces.append(ToolPiece(call.index, "", opens=True))
        pieces += [ToolPiece(call.index, part) for part in _PIECE.findall(call.arguments)]
    return pieces


def arguments_so_far(calls: tuple[ToolCall, ...], pieces: tuple[Any, ...]) -> dict[int, str]:
    """Each call's arguments as far as ``pieces`` got (all of them, unless a limit cut them)."""
    got: dict[int, str] = {}
    for piece in pieces:
        if isinstance(piece, ToolPiece):
            got[piece.index] = got.get(piece.index, "") + piece.arguments
    return {call.index: got[call.index] for call in calls if call.index in got}


def answer_to_results(results: list[str]) -> str:
    """The text answer once tool results are in: it quotes them."""
    return "The tools returned: " + " | ".join(result.strip() for result in results) + "."
