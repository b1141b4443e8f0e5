"""Imports nobody in the suite uses, not paid for in every pytest process (issue 22).

Loaded early, with ``-p tests.plugins.lean_imports`` on the Makefile's test command (not
in pyproject's addopts: ``python -m pytest`` puts the working directory on ``sys.path``,
``.venv/bin/pytest`` does not, and pytest-xdist's workers get the same ``-p``).

- ``rfc3987_syntax``: nbval imports nbformat, which imports jsonschema, whose format
  module imports ``rfc3987_syntax`` when it is installed, and that builds a Lark grammar at
  import time: 1.5-2 s of CPU in each of the five processes (controller and four workers).
  The grammar only serves jsonschema's ``iri`` formats (Draft 7 and later, and only with a
  FormatChecker); nbformat validates notebooks with a Draft 4 validator and no format
  checker, so it is never used. A ``None`` in ``sys.modules`` makes the import raise
  ImportError, which jsonschema treats as "not installed" (its checkers are optional).
- Hypothesis' pytest plugin imports all of Hypothesis in ``pytest_terminal_summary`` (to
  look for observability files), 1-2.5 s of CPU, even in a process that ran no Hypothesis
  test: the xdist controller, which never collects. It is unregistered before the summary
  when it has nothing to do there: Hypothesis never imported in this process, no report
  carrying its statistics or failing examples (a worker's, under xdist), no
  ``--hypothesis-*`` option. Wherever a test uses Hypothesis, the plugin stays.
"""

from __future__ import annotations

import sys

import pytest

# Only if nothing imported it yet: a process that already has the module keeps it.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

HYPOTHESIS_PLUGIN = "hypothesispytest"
# What the plugin's pytest_terminal_summary looks for on the reports (its STATS_KEY and
# FAILING_EXAMPLES_KEY): a report from an xdist worker that ran a Hypothesis test.
HYPOTHESIS_REPORT_KEYS = ("_hypothesis_stats", "_hypothesis_failing_examples")


def _hypothesis_has_work(config: pytest.Config) -> bool:
    if "hypothesis" in sys.modules:
        return True
    # --hypothesis-profile, -seed, -show-statistics...: from the command line or addopts
    if any(value for name, value in vars(config.option).items() if name.startswith("hypothesis")):
        return True
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    stats = getattr(reporter, "stats", {})
    return any(
        key in report.__dict__
        for reports in stats.values()
        for report in reports
        for key in HYPOTHESIS_REPORT_KEYS
        if hasattr(report, "__dict__")
    )


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    # Runs inside the terminal reporter's sessionfinish wrapper, before the
    # pytest_terminal_summary call that would import Hypothesis.
    manager = session.config.pluginmanager
    if manager.has_plugin(HYPOTHESIS_PLUGIN) and not _hypothesis_has_work(session.config):
        manager.unregister(name=HYPOTHESIS_PLUGIN)
