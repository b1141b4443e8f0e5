"""Shared code for the *Streaming and Server-Sent Events with FastAPI* course, in six rooms.

- :mod:`course_app.runtime` - what every lesson cell uses: ``serve``, ``pace``, ``inspect_stream``.
- :mod:`course_app.services` - real programs on loopback: redis-server, nginx, uvicorn workers.
- :mod:`course_app.streams` - building blocks the lessons teach, then reuse.
- :mod:`course_app.fake_openai` - the offline OpenAI-compatible server.
- :mod:`course_app.demos` - each lesson's own app or data.
- :mod:`course_app.checking` - the learner's loop behind ``course check``.

Nothing happens at import time, and importing a room imports none of its modules until a
name is used (ARCHITECTURE.md draws the rooms and the directions they may import in).
"""
