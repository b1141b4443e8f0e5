"""One knob for every demo delay in the course.

Lessons never call ``asyncio.sleep(0.5)`` directly for a demo delay; they call
``await pace.sleep(0.5)``. The pace factor multiplies every such delay:

- ``1.0`` (the default) is human-visible: you can watch events arrive in JupyterLab.
- The test suite and ``course check`` use :data:`TEST_PACE` (0.02), so they run fast.

Printed outputs never include raw timings, so a notebook prints the same text at any pace
from :data:`MIN_PACE` up. Faster than that is refused rather than allowed to change what a
lesson prints: at pace 0 a 2-second ``send_timeout`` becomes 0, which means something else.
"""

import asyncio
import os
import time

ENV_VAR = "COURSE_PACE"
DEFAULT = 1.0
# The pace the test suite, nbval and `course check` run at, and the fastest one allowed:
# every notebook's output and every exercise verdict are proven at this pace.
TEST_PACE = 0.02
MIN_PACE = TEST_PACE

_override: float | None = None


def _validate(value: float) -> float:
    if not value >= MIN_PACE:  # also rejects NaN
        raise ValueError(
            f"pace must be a number >= {MIN_PACE} (the fastest pace the course is tested at),"
            f" got {value!r}"
        )
    return value


def get_pace() -> float:
    """The current pace factor: :func:`set_pace`, else ``$COURSE_PACE``, else 1.0."""
    if _override is not None:
        return _override
    raw = os.environ.get(ENV_VAR)
    if raw is None or raw.strip() == "":
        return DEFAULT
    try:
        return _validate(float(raw))
    except ValueError:
        raise ValueError(
            f"{ENV_VAR} must be a number >= {MIN_PACE} such as 1 or 0.2, got {raw!r}"
        ) from None


def set_pace(value: float | None) -> None:
    """Set the pace for this process; ``None`` goes back to ``$COURSE_PACE``."""
    global _override
    _override = None if value is None else _validate(float(value))


def scaled(seconds: float) -> float:
    """``seconds`` at the current pace."""
    return seconds * get_pace()


async def sleep(seconds: float) -> None:
    """``asyncio.sleep`` for a demo delay, scaled by the pace."""
    await asyncio.sleep(scaled(seconds))


def sleep_sync(seconds: float) -> None:
    """``time.sleep`` for a demo delay, scaled by the pace (only for sync code)."""
    time.sleep(scaled(seconds))
