"""Every notebook survives "Run All" twice in one kernel (nbval checks a single run), and
the pages it embeds still work afterwards, in a real Chromium, as a learner would see them.

With "Run All" the last cells run a second or two after a frame appears: a clean-up cell
that stopped the page's server would leave the learner watching a dead demo.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
FRAME_SRC = re.compile(r'<iframe[^>]*\ssrc="([^"]+)"', re.S)


def _errors(nb: nbformat.NotebookNode) -> list[str]:
    found = []
    for cell in nb.cells:
        if cell.cell_type != "code" or "raises-exception" in cell.metadata.get("tags", []):
            continue
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                found.append(f"{output.ename}: {output.evalue}")
            if output.output_type == "stream" and output.name == "stderr":
                found.append(f"stderr: {output.text[:200]}")
    return found


def _frames(nb: nbformat.NotebookNode) -> list[str]:
    """The URLs of the frames (IPython's IFrame) the notebook's outputs embed."""
    return [
        match
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        for match in FRAME_SRC.findall(str(output.get("data", {}).get("text/html", "")))
    ]


class RunAllTwice:
    """Run every cell twice in one kernel, on a thread of its own, and keep the kernel
    (and so its lesson servers) alive until the test is done with the pages.

    A thread, because Playwright's sync API holds an event loop on the main thread, where
    nbclient's own blocking calls would then refuse to run.
    """

    def __init__(self, path: Path) -> None:
        self.nb = nbformat.read(path, as_version=4)
        self.path = path
        self.failures: list[str] = []
        self.error: BaseException | None = None
        self._ran = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"run-all-{path.stem}")

    def _run(self) -> None:
        client = NotebookClient(
            self.nb,
            timeout=300,
            kernel_name="python3",
            allow_errors=True,
            resources={"metadata": {"path": str(self.path.parent)}},
        )
        try:
            with client.setup_kernel(env={**os.environ}):
                for run in (1, 2):
                    for index, cell in enumerate(self.nb.cells):
                        client.execute_cell(cell, index)
                    if errors := _errors(self.nb):
                        self.failures.append(f"run {run} of {self.path.name}: {errors}")
                self._ran.set()
                self._release.wait(300)
        except BaseException as exc:
            self.error = exc
        finally:
            self._ran.set()

    def __enter__(self) -> RunAllTwice:
        self._thread.start()
        self._ran.wait(900)
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._release.set()
        self._thread.join(60)


def _ticks_all_arrive(page: object, url: str) -> None:
    page.goto(url)  # type: ignore[attr-defined]
    page.wait_for_function("document.querySelector('#status').textContent === 'done'")  # type: ignore[attr-defined]
    assert page.locator("#ticks li").count() == 5  # type: ignore[attr-defined]


def _reconnecting_feed_completes(page: object, url: str) -> None:
    page.goto(url)  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        "document.getElementById('status').textContent === 'done'", timeout=60_000
    )


def _chat_answers(page: object, url: str) -> None:
    page.goto(url)  # type: ignore[attr-defined]
    page.fill("#prompt", "count to 3")  # type: ignore[attr-defined]
    page.click("#send")  # type: ignore[attr-defined]
    page.wait_for_function("document.getElementById('status').textContent === 'done'")  # type: ignore[attr-defined]
    assert page.locator(".assistant").last.text_content() == "1, 2, 3."  # type: ignore[attr-defined]


def _progress_job_runs_to_done(page: object, url: str) -> None:
    page.goto(url)  # type: ignore[attr-defined]
    page.fill("#photos", "5")  # type: ignore[attr-defined]
    page.click("#start")  # type: ignore[attr-defined]
    page.wait_for_function("document.getElementById('status').textContent === 'done'")  # type: ignore[attr-defined]
    assert page.eval_on_selector("#bar", "bar => bar.value") == 100  # type: ignore[attr-defined]


def _typed_events_arrive(page: object, url: str) -> None:
    page.goto(url)  # type: ignore[attr-defined]
    page.wait_for_function("document.getElementById('status').textContent === 'connected'")  # type: ignore[attr-defined]
    page.click("#send-notification")  # type: ignore[attr-defined]
    page.wait_for_function("document.querySelectorAll('#notifications li').length === 1")  # type: ignore[attr-defined]


def _chat_answer_survives_a_reload(page: object, url: str) -> None:
    page.goto(url)  # type: ignore[attr-defined]
    page.fill("#prompt", "count to 3")  # type: ignore[attr-defined]
    page.click("#send")  # type: ignore[attr-defined]
    page.wait_for_function("document.getElementById('status').textContent === 'done'")  # type: ignore[attr-defined]
    page.reload()  # type: ignore[attr-defined]
    assert page.locator("#log .assistant").last.text_content() == "1, 2, 3."  # type: ignore[attr-defined]


# What "the page works" means for each notebook that embeds one.
PAGE_CHECKS: dict[str, Callable[[object, str], None]] = {
    "00_welcome": _ticks_all_arrive,
    "04_consuming_streams": _reconnecting_feed_completes,
    "07_progress_reporting": _progress_job_runs_to_done,
    "09_broadcast_and_event_types": _typed_events_arrive,
    "10_llm_streaming": _chat_answers,
    "13_capstone": _chat_answer_survives_a_reload,
}


def run_all_twice_then_check_pages(path: Path, request: pytest.FixtureRequest) -> None:
    with RunAllTwice(path) as run:
        assert run.failures == []
        frames = _frames(run.nb)
        if not frames:
            return
        assert path.stem in PAGE_CHECKS, f"{path.name} embeds a page: say how to check it"
        page = request.getfixturevalue("page")  # skips without Chromium, except in CI
        for url in frames:
            PAGE_CHECKS[path.stem](page, url)


class _RunAllTwice:
    """One class per notebook, so that pytest-xdist's `--dist loadscope` spreads them."""

    path: Path

    def test_run_all_twice_in_one_kernel(self, request: pytest.FixtureRequest) -> None:
        run_all_twice_then_check_pages(self.path, request)


for _path in NOTEBOOKS:
    _name = f"Test_{_path.stem}"
    globals()[_name] = type(_name, (_RunAllTwice,), {"path": _path})
