"""Running the Vercel AI SDK's own client code (npm ``ai``, in Node) from pytest.

``tests/node/`` pins the ``ai`` package (``package.json`` and its lock file). A test module
gets the node binary, with the pinned packages installed (``npm ci`` the first time), from
:func:`node_binary`, usually through a module-scoped fixture::

    @pytest.fixture(scope="module")
    def node() -> str:
        return node_binary()

and runs one of ``tests/node``'s test files against its servers with :func:`run_node_tests`.
Without Node (or without the npm registry, for the first install) the test is skipped with
the reason on a learner's machine, and fails in CI, where it must run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.unavailable import unavailable

NODE_DIR = Path(__file__).parent / "node"
INSTALL_HINT = (
    "install Node.js 18 or later with npm (Debian/Ubuntu: sudo apt-get install nodejs npm)"
)


def _pinned_ai_version() -> str:
    return json.loads((NODE_DIR / "package.json").read_text())["dependencies"]["ai"]


def _installed_ai_version() -> str | None:
    installed = NODE_DIR / "node_modules" / "ai" / "package.json"
    return json.loads(installed.read_text())["version"] if installed.exists() else None


def node_binary() -> str:
    """The node binary, with the pinned packages installed (``npm ci`` the first time)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable(f"the AI SDK client tests need Node.js and npm: {INSTALL_HINT}")
    assert node is not None and npm is not None
    if _installed_ai_version() != _pinned_ai_version():
        try:
            installed = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=NODE_DIR,
                capture_output=True,
                text=True,
                timeout=300,
            )
        except subprocess.TimeoutExpired:
            unavailable(
                "npm ci in tests/node took more than 5 minutes (is the registry reachable?)"
            )
        if installed.returncode != 0:
            why = (installed.stderr or installed.stdout).strip().splitlines()[-3:]
            unavailable(f"npm ci in tests/node failed (offline?): {' / '.join(why)}")
    return node


def run_node_tests(node: str, test_file: str, env: dict[str, str]) -> None:
    """``node --test tests/node/<test_file>`` with ``env`` added; fails with its report."""
    result = subprocess.run(
        [node, "--test", test_file],
        cwd=NODE_DIR,
        env={**os.environ, **env, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (
        f"node --test {test_file} failed:\n{result.stdout[-4000:]}{result.stderr[-2000:]}"
    )
    assert "# fail 0" in result.stdout, result.stdout[-2000:]
