"""Every notebook survives "Run All" twice in one kernel, and the pages it embeds still work
afterwards, in a real Chromium, as a learner would see them.

In the full suite this is ``notebooks/NN_slug.ipynb::Run All again`` (tests/plugins/
notebook_rerun.py): the second run happens in nbval's kernel right after nbval's strict
first run, so each notebook is executed twice, not three times, and the tests below are
deselected. They are the same check on its own, for ``pytest tests/test_notebooks_rerun.py
-k NN``: a first Run All in a fresh kernel (no output comparison, but no errors and no
stderr), then the plugin's second run, server and process count, and page checks.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbval.kernel import CURRENT_ENV_KERNEL_NAME, RunningKernel

from tests.plugins.notebook_rerun import RerunFailure, run_again_and_check, run_all

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT = 120.0  # nbval's --nbval-cell-timeout in pyproject.toml


def run_all_twice_then_check_pages(path: Path) -> None:
    cells = nbformat.read(path, as_version=4).cells
    kernel = RunningKernel(CURRENT_ENV_KERNEL_NAME, cwd=str(path.parent))
    try:
        if problems := run_all(kernel, cells, CELL_TIMEOUT):
            raise RerunFailure(
                f"the first Run All of {path.name} failed:\n  " + "\n  ".join(problems)
            )
        run_again_and_check(kernel, path, cells, CELL_TIMEOUT)
    finally:
        kernel.stop()


class _RunAllTwice:
    """One class per notebook, so that pytest-xdist's `--dist loadscope` spreads them."""

    run_all_twice_of: Path

    def test_run_all_twice_in_one_kernel(self) -> None:
        try:
            run_all_twice_then_check_pages(self.run_all_twice_of)
        except RerunFailure as failure:
            pytest.fail(str(failure), pytrace=False)


for _path in NOTEBOOKS:
    _name = f"Test_{_path.stem}"
    globals()[_name] = type(_name, (_RunAllTwice,), {"run_all_twice_of": _path})
