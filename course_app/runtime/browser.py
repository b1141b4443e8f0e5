"""The system's Chromium (or Chrome), driven by Playwright, for lesson cells (never a
downloaded browser): Debian's package, or on macOS the usual app locations.

    browser = await open_chromium()     # None when Chromium is not installed
    page = await browser.new_page()
    ...
    await close_chromium()              # also closes the one a previous run opened

A notebook cell can ``await`` these: Playwright's async API runs on the kernel's own loop.
Re-running the cell closes the browser the previous run opened, so none piles up.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

# Where each system's package puts the browser; then these names on the PATH. Debian's
# headless shell first: it is what Playwright itself runs for headless pages, the same engine
# without the browser's UI, and a page costs it about half the CPU of the full browser.
LINUX_CANDIDATES = (
    "/usr/bin/chromium-headless-shell",
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
)
MACOS_CANDIDATES = (
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",  # brew install --cask google-chrome
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
    str(Path.home() / "Applications/Chromium.app/Contents/MacOS/Chromium"),
    str(Path.home() / "Applications/Google Chrome.app/Contents/MacOS/Google Chrome"),
)
PATH_NAMES = (
    "chromium-headless-shell",
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
)
LINUX_HINT = (
    "install it: sudo apt-get install chromium-headless-shell (Debian; or chromium),"
    " or set COURSE_CHROMIUM to its path"
)
MACOS_HINT = (
    "install Google Chrome: brew install --cask google-chrome "
    "(or set COURSE_CHROMIUM to a Chromium-based browser's executable)"
)
CHROMIUM_HINT = MACOS_HINT if sys.platform == "darwin" else LINUX_HINT
# Without these, Chromium reaches for Google's services, which an offline machine refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

_open: list[Any] = []  # [playwright, browser] of the browser this process opened last


def chromium_path(platform: str = sys.platform) -> str | None:
    """``$COURSE_CHROMIUM``, the system's Chromium or Chrome, or one on the PATH; else None."""
    configured = os.environ.get("COURSE_CHROMIUM")
    if configured:
        return configured if Path(configured).exists() else None
    candidates = MACOS_CANDIDATES if platform == "darwin" else LINUX_CANDIDATES
    found = next((c for c in candidates if Path(c).exists()), None)
    return found or next((p for name in PATH_NAMES if (p := shutil.which(name))), None)


async def open_chromium() -> Any | None:
    """A headless Chromium (Playwright's async ``Browser``), or None without Chromium."""
    await close_chromium()
    path = chromium_path()
    if path is None:
        return None
    from playwright.async_api import async_playwright

    playwright = await async_playwright().start()
    try:
        browser = await playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
    except BaseException:
        await playwright.stop()
        raise
    _open[:] = [playwright, browser]
    return browser


async def close_chromium() -> None:
    """Close the browser :func:`open_chromium` opened last, if any."""
    if not _open:
        return
    playwright, browser = _open
    _open.clear()
    try:
        await browser.close()
    finally:
        await playwright.stop()
