"""Costliest scopes first, for ``pytest -n 4 --dist loadscope --no-loadscope-reorder``.

pytest-xdist's loadscope hands whole scopes (a module, a class, a notebook) to workers, in
the order it gets them; by default it first sorts them by their number of items, which puts
a 20-cell notebook that takes a minute after a 300-case module that takes ten seconds, and
the one-item scopes last. This orders them by what they cost in a measured run
(``scope_seconds.json``: wall and CPU seconds per scope, written by
``benchmarks/test_suite_time.py --write-scope-seconds``):

- a long scope must start early, or the worker that gets it last finishes late: a scope
  ranks by a third of its wall time at least;
- four workers share two cores, so the first ones to start should keep both cores busy:
  a scope that computes ranks by its CPU seconds. Four notebooks that mostly wait on
  their demos' clocks, started together, left a core idle for half a minute.

A scope the table does not know (a new test module) counts as the table's median. The
order only changes which worker runs what, and when: never what is checked.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import pytest

SCOPE_SECONDS = Path(__file__).with_name("scope_seconds.json")


def scope_of(nodeid: str) -> str:
    """pytest-xdist's loadscope scope: the node id up to its last ``::``."""
    return nodeid.rsplit("::", 1)[0]


def load_seconds(path: Path = SCOPE_SECONDS) -> dict[str, float]:
    """Each scope's rank: the larger of its CPU seconds and a third of its wall seconds."""
    try:
        table = json.loads(path.read_text())
        return {str(k): max(float(v["cpu"]), float(v["wall"]) / 3) for k, v in table.items()}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return {}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Only in pytest-xdist's workers: the controller schedules from their collection order.
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    seconds = load_seconds()
    default = statistics.median(seconds.values()) if seconds else 0.0
    first_seen: dict[str, int] = {}
    for index, item in enumerate(items):
        first_seen.setdefault(scope_of(item.nodeid), index)
    # A stable sort: within a scope (a notebook's cells) the order stays the collection's.
    items.sort(
        key=lambda item: (
            -seconds.get(scope_of(item.nodeid), default),
            first_seen[scope_of(item.nodeid)],
        )
    )
