"""Helpers shared by exercise tests that cancel a learner's task."""

from __future__ import annotations

import asyncio
import contextlib


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
