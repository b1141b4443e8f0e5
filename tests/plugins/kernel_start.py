"""A notebook kernel that dies before its first reply is started once more, and says why.

nbval starts each notebook's kernel with its stderr sent to /dev/null, so a kernel that
dies while starting leaves only "Kernel died before replying to kernel_info", and every
cell of the notebook errors. It happened once in about ten full runs, at the start of a
session, when four workers start kernels and servers at once. jupyter_client picks a
kernel's five TCP ports by binding port 0 and letting go, and the kernel binds them a
moment later: another process can take one in between. No cell has run yet, so nothing
a notebook does can cause it: a second start, on fresh ports, is a fair retry. A kernel
that dies twice fails with the last lines it wrote to stderr.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from typing import Any

import pytest

_start_new_kernel: Callable[..., Any] | None = None  # nbval's own, once patched


def start_new_kernel(*args: Any, **kwargs: Any) -> Any:
    kwargs.pop("stderr", None)  # nbval's /dev/null: keep what the kernel says instead
    assert _start_new_kernel is not None, "pytest_configure patches nbval first"
    for attempt in (1, 2):
        with tempfile.TemporaryFile("w+") as stderr:
            try:
                return _start_new_kernel(*args, stderr=stderr, **kwargs)
            except RuntimeError as error:
                stderr.seek(0)
                said = stderr.read()[-2000:].strip() or "(nothing on stderr)"
                if attempt == 2:
                    raise RuntimeError(f"{error}; twice. The kernel's stderr:\n{said}") from error
                print(
                    f"a kernel died while starting; starting it again. It said:\n{said}",
                    file=sys.stderr,
                )
    raise AssertionError("unreachable")


def pytest_configure(config: pytest.Config) -> None:
    global _start_new_kernel
    if not config.pluginmanager.hasplugin("nbval") or _start_new_kernel is not None:
        return  # e.g. `course check`'s runs, which load the root conftest too
    import nbval.kernel

    _start_new_kernel = nbval.kernel.start_new_kernel
    nbval.kernel.start_new_kernel = start_new_kernel  # RunningKernel looks it up at each start
