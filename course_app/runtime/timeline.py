"""Timeline plots: when each event arrived, one row per stream.

    plot_arrivals({"buffered": buffered.times, "streamed": streamed.times})

Accepts lists of arrival times in seconds, or anything with a ``.times`` list (such as a
:class:`course_app.runtime.inspector.WireCapture`). Returns a :class:`Plot`, which a notebook shows
as a PNG; nbval does not compare images, so plots never make a notebook flaky. The figure
is made without pyplot, so nothing is left in pyplot's global list of open figures.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


class _HasTimes(Protocol):
    times: list[float]


def plot_arrivals(
    streams: Mapping[str, Sequence[float] | _HasTimes],
    *,
    title: str = "When each event arrived",
    unit: str = "ms",
) -> Plot:
    """One row of dots per stream: x is the arrival time, labels are the dict keys."""
    scale = {"ms": 1000.0, "s": 1.0}[unit]
    fig = Figure(figsize=(8, 0.6 + 0.5 * len(streams)), layout="constrained")
    ax = fig.add_subplot()
    for row, stream in enumerate(streams.values()):
        times: Sequence[float] = getattr(stream, "times", stream)  # type: ignore[arg-type]
        xs = [t * scale for t in times]
        ax.plot(xs, [row] * len(xs), "o", markersize=6, alpha=0.8)
        ax.hlines(row, 0, max(xs, default=0), colors="lightgray", zorder=0)
    ax.set_yticks(range(len(streams)), list(streams))
    ax.set_ylim(-0.6, len(streams) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel(f"time since request ({unit})")
    ax.set_xlim(left=0)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return Plot(fig, f"{len(streams)} stream(s)")


class Plot:
    """A matplotlib Figure that displays itself as a PNG in a notebook."""

    def __init__(self, figure: Figure, description: str) -> None:
        self.figure = figure
        self.description = description

    def png(self) -> bytes:
        buffer = io.BytesIO()
        FigureCanvasAgg(self.figure).print_png(buffer)
        return buffer.getvalue()

    def _repr_png_(self) -> bytes:
        return self.png()

    def savefig(self, path: Any, **options: Any) -> None:
        self.figure.savefig(path, **options)

    def __repr__(self) -> str:
        return f"<Plot: {self.title()}, {self.description}>"

    def title(self) -> str:
        return self.figure.axes[0].get_title() if self.figure.axes else ""
