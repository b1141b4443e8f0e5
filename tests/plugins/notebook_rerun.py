"""Run All twice in one kernel, with each notebook executed twice, not three times.

nbval's strict run is the first "Run All": every cell in a fresh kernel, every output
compared with the committed one. This plugin adds one item after a notebook's last cell,
``notebooks/NN_slug.ipynb::Run All again``, which runs in nbval's own kernel, still holding
everything the first run started. It runs every cell a second time, then opens each page the
notebook embeds in a real Chromium while that kernel (and so the page's server) still runs,
as a learner who pressed Run All twice would see them. It fails for the bugs a second Run
All shows a learner:

* a cell that raises or writes to stderr the second time (a port still taken, a name a
  clean-up cell deleted, a client closed at the end of the first run);
* lesson servers or child processes that pile up: those alive after the second run must be
  those alive after the first (a server started under a new name, a redis-server, nginx or
  worker process started again without stopping the previous one);
* a dead embedded page: a clean-up cell that stopped the page's server runs, with Run All,
  a second after the frame appears and leaves the learner watching a dead demo.

``pytest tests/test_notebooks_rerun.py -k NN`` does the same on its own (first run without
nbval's comparison); in a session that also runs the notebook under nbval it is deselected,
since this item already covers it. ``--nbval-run-once`` turns the item off (nbval only).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from queue import Empty
from typing import TYPE_CHECKING, Any

import pytest

from tests.unavailable import debian_chromium

if TYPE_CHECKING:  # the root conftest loads this plugin in `course check`'s runs too
    from nbformat import NotebookNode

ITEM_NAME = "Run All again"
FRAME_SRC = re.compile(r'<iframe[^>]*\ssrc="([^"]+)"', re.S)
# How long what the first run left may take to settle to the same state after the second
# (a replaced server's thread ending, a stopped process being reaped): a bound, not a pace.
SETTLE_SECONDS = 20.0
# After a cell's reply, the wait for each of its remaining output messages (nbval waits 5 s).
OUTPUT_TIMEOUT = 30.0

# Runs in the notebook's kernel: what is alive there that a second Run All could pile up.
SNAPSHOT_SOURCE = """\
def __course_rerun_snapshot():
    import json, psutil
    from course_app.runtime import running_servers
    children = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                children.append(child.name())
        except psutil.NoSuchProcess:
            pass
    servers = [server.name for server in running_servers()]
    print(json.dumps({"lesson servers": sorted(servers), "child processes": sorted(children)}))
__course_rerun_snapshot()
del __course_rerun_snapshot
"""


class RerunFailure(Exception):
    """A second Run All went wrong; the message says what and where to look."""


# --- Running cells in a kernel (nbval's RunningKernel) ------------------------------------


def execute(kernel: Any, source: str, timeout: float) -> list[dict[str, Any]]:
    """Run ``source`` in nbval's kernel and return its outputs, as nbformat would store them."""
    msg_id = kernel.execute_cell_input(source, allow_stdin=False)
    try:
        kernel.await_reply(msg_id, timeout=timeout)
    except Empty:
        kernel.interrupt()
        raise RerunFailure(f"a cell did not finish within {timeout:.0f} s:\n{source}") from None
    outputs: list[dict[str, Any]] = []
    while True:
        try:
            msg = kernel.get_message(stream="iopub", timeout=OUTPUT_TIMEOUT)
        except Empty:
            raise RerunFailure(f"a cell's output never ended:\n{source}") from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "status" and content["execution_state"] == "idle":
            return outputs
        if kind == "stream":
            outputs.append({"output_type": kind, "name": content["name"], "text": content["text"]})
        elif kind in ("display_data", "execute_result"):
            outputs.append({"output_type": kind, "data": content["data"]})
        elif kind == "error":
            outputs.append({"output_type": kind, **content})


def run_all(kernel: Any, cells: Sequence[NotebookNode], timeout: float) -> list[str]:
    """Run every code cell once, in order (Jupyter's Run All); return the problems seen.

    Also fills each cell's ``outputs`` with this run's, so the frames are this run's.
    """
    problems = []
    for number, cell in enumerate(c for c in cells if c.cell_type == "code"):
        cell.outputs = execute(kernel, cell.source, timeout)
        expected_error = "raises-exception" in cell.metadata.get("tags", [])
        for output in cell.outputs:
            if output["output_type"] == "error" and not expected_error:
                problems.append(f"Cell {number}: {output['ename']}: {output['evalue']}")
            if output["output_type"] == "stream" and output["name"] == "stderr":
                problems.append(f"Cell {number} wrote to stderr: {output['text'][:300]}")
    return problems


def snapshot(kernel: Any, timeout: float) -> dict[str, list[str]]:
    outputs = execute(kernel, SNAPSHOT_SOURCE, timeout)
    text = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    errors = [f"{o['ename']}: {o['evalue']}" for o in outputs if o["output_type"] == "error"]
    if errors or not text.strip():
        raise RerunFailure(f"could not list the kernel's servers and processes: {errors or text}")
    return json.loads(text.strip().splitlines()[-1])


def frames(cells: Sequence[NotebookNode]) -> list[str]:
    """The URLs of the frames (IPython's IFrame) the cells' outputs embed."""
    return [
        match
        for cell in cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        for match in FRAME_SRC.findall(str(output.get("data", {}).get("text/html", "")))
    ]


# --- What "the page works" means for each notebook that embeds one -------------------------


def _ticks_all_arrive(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_function("document.querySelector('#status').textContent === 'done'")
    assert page.locator("#ticks li").count() == 5


def _reconnecting_feed_completes(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_function(
        "document.getElementById('status').textContent === 'done'", timeout=60_000
    )


def _chat_answers(page: Any, url: str) -> None:
    page.goto(url)
    page.fill("#prompt", "count to 3")
    page.click("#send")
    page.wait_for_function("document.getElementById('status').textContent === 'done'")
    assert page.locator(".assistant").last.text_content() == "1, 2, 3."


def _progress_job_runs_to_done(page: Any, url: str) -> None:
    page.goto(url)
    page.fill("#photos", "5")
    page.click("#start")
    page.wait_for_function("document.getElementById('status').textContent === 'done'")
    assert page.eval_on_selector("#bar", "bar => bar.value") == 100


def _typed_events_arrive(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_function("document.getElementById('status').textContent === 'connected'")
    page.click("#send-notification")
    page.wait_for_function("document.querySelectorAll('#notifications li').length === 1")


def _chat_answer_survives_a_reload(page: Any, url: str) -> None:
    page.goto(url)
    page.fill("#prompt", "count to 3")
    page.click("#send")
    page.wait_for_function("document.getElementById('status').textContent === 'done'")
    page.reload()
    assert page.locator("#log .assistant").last.text_content() == "1, 2, 3."


PAGE_CHECKS: dict[str, Callable[[Any, str], None]] = {
    "00_welcome": _ticks_all_arrive,
    "04_consuming_streams": _reconnecting_feed_completes,
    "07_progress_reporting": _progress_job_runs_to_done,
    "09_broadcast_and_event_types": _typed_events_arrive,
    "10_llm_streaming": _chat_answers,
    "13_capstone": _chat_answer_survives_a_reload,
}


def check_pages(stem: str, urls: Sequence[str]) -> None:
    """Open each embedded page in Debian's Chromium and check it works.

    Playwright is opened here and closed before the kernel is stopped: its sync API holds
    an event loop on this thread while open, and the kernel's blocking calls need none.
    """
    if not urls:
        return
    if stem not in PAGE_CHECKS:
        raise RerunFailure(
            f"{stem}.ipynb embeds a page ({urls[0]}): say how to check it in PAGE_CHECKS"
            f" ({__name__})"
        )
    with debian_chromium(f"checking the pages {stem} embeds") as browser:
        for url in urls:
            context = browser.new_context()
            try:
                try:
                    PAGE_CHECKS[stem](context.new_page(), url)
                except Exception as exc:
                    raise RerunFailure(
                        f"the page {stem} embeds ({url}) no longer works after Run All"
                        f" twice: {type(exc).__name__}: {str(exc)[:500]}\nDoes a later cell"
                        " stop its server? Stop servers at the end of the notebook except"
                        " one whose page a cell embeds (CONTRIBUTING.md)."
                    ) from exc
            finally:
                context.close()


def run_again_and_check(
    kernel: Any, path: Path, cells: Sequence[NotebookNode], timeout: float
) -> None:
    """The second Run All in a kernel the first one ran in, then the embedded pages."""
    before = snapshot(kernel, timeout)
    problems = run_all(kernel, cells, timeout)
    if problems:
        raise RerunFailure(
            f"the second Run All of {path.name} in the same kernel failed:\n  "
            + "\n  ".join(problems)
            + "\nRe-run the notebook top to bottom twice in Jupyter to see it; serve(app,"
            ' name="NN") replaces the previous run\'s server, other resources need the same care.'
        )
    deadline = time.monotonic() + SETTLE_SECONDS
    after = snapshot(kernel, timeout)
    while after != before and time.monotonic() < deadline:
        time.sleep(0.2)
        after = snapshot(kernel, timeout)
    if after != before:
        raise RerunFailure(
            f"Run All twice in one kernel does not end where one Run All ends ({path.name}):\n"
            f"  after the first run:  {before}\n  after the second run: {after}\n"
            "More after the second: a cell starts a server or process without replacing or"
            ' stopping the previous run\'s (serve(app, name="NN") replaces it). Fewer: the'
            " second run stopped something the first left running."
        )
    check_pages(path.stem, frames(cells))


# --- The pytest side ------------------------------------------------------------------------


class RunAllAgain(pytest.Item):
    """The second Run All, in the kernel of nbval's first (the item's parent holds it)."""

    def runtest(self) -> None:
        kernel = self.parent.kernel
        if kernel is None or not kernel.is_alive():
            raise RerunFailure("nbval's kernel is gone: see the first failing cell above")
        timeout = self.config.option.nbval_cell_timeout
        run_again_and_check(kernel, self.path, self.parent.nb.cells, timeout)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, RerunFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int, str]:
        # A line number, as nbval's cells give: a skip reported at the item needs one.
        return self.path, 0, f"{self.path.name}::{ITEM_NAME}"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--nbval-run-once",
        action="store_true",
        help="run each notebook once (strict nbval) without the second Run All and its pages",
    )


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected what they do
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    if not config.getoption("nbval", default=False) or config.getoption("--nbval-run-once"):
        return
    from nbval.plugin import IPyNbCell

    result: list[pytest.Item] = []
    notebooks: set[Path] = set()
    for index, item in enumerate(items):
        result.append(item)
        if not isinstance(item, IPyNbCell):
            continue
        following = items[index + 1] if index + 1 < len(items) else None
        if isinstance(following, IPyNbCell) and following.parent is item.parent:
            continue
        # The notebook's last selected cell: a second Run All only after a whole first one.
        selected = sum(isinstance(i, IPyNbCell) and i.parent is item.parent for i in items)
        if selected == sum(cell.cell_type == "code" for cell in item.parent.nb.cells):
            result.append(RunAllAgain.from_parent(item.parent, name=ITEM_NAME))
            notebooks.add(item.path)
    # tests/test_notebooks_rerun.py runs a notebook three times in all (its own two runs):
    # not needed for a notebook this session already runs twice.
    redundant = [
        i for i in result if getattr(getattr(i, "cls", None), "run_all_twice_of", None) in notebooks
    ]
    if redundant:
        config.hook.pytest_deselected(items=redundant)
        result = [i for i in result if i not in redundant]
    items[:] = result
