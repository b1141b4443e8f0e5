"""Shared helpers for the *Streaming and Server-Sent Events with FastAPI* course.

Nothing happens at import time: every helper is started explicitly, so a notebook can
re-run any cell. The main entry points:

- :func:`course_app.server.serve` - run an ASGI app on a free loopback port in a thread.
- :mod:`course_app.pace` - one knob that scales every demo delay.
- :func:`course_app.inspector.inspect_stream` - the raw bytes of a response, with timings.
- :func:`course_app.checker.check` - check an exercise from a notebook cell.
"""

from course_app.pace import get_pace, set_pace
from course_app.server import LessonServer, LessonServerError, serve

__all__ = ["LessonServer", "LessonServerError", "get_pace", "serve", "set_pace"]
