"""Helpers shared by exercise tests: cancelling a learner's task, naming a server's error."""

from __future__ import annotations

import asyncio
import contextlib
import time

from course_app.runtime import LessonServer


async def cancel_and_wait(task: asyncio.Task) -> bool:
    """Cancel a running task, wait for it, and say whether it really ended cancelled.

    A task that already finished (it failed before the test could cancel it) re-raises its
    own error instead, so the learner sees why.
    """
    if task.done():
        task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return task.cancelled()


def server_said(server: LessonServer, wait: float = 0.5) -> str:
    """The last error the server logged, as " (the server logged: ...)", or "".

    Put it in a failing assertion's message: a learner sees `NotImplementedError: TODO: ...`
    or `ValueError: invalid literal for int()` instead of a bare `500 == 202`. Only called
    on a failure, so it can wait a moment (`wait` seconds) for a log line that lags.
    """

    def errors() -> list[str]:
        return [line.splitlines()[-1].strip() for line in server.logs if line.startswith("ERROR")]

    deadline = time.monotonic() + wait
    while not errors() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not errors():
        return ""
    last = errors()[-1]
    if last.startswith("(") and last.endswith(")"):
        last = last[1:-1]
    return f" (the server logged: {last})"
