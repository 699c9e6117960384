"""Headless Chromium for the studio's browser tests, benchmark and README screenshot.

Drives Debian's ``chromium`` (or ``$HELIOFORGE_CHROMIUM``) with Playwright's Python API; no
browser is downloaded. The flags suit a machine with a closed network, running as root.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from typing import Iterator

__all__ = ["CHROMIUM_ARGS", "chromium_executable", "chromium"]

#: Chromium flags: headless, no sandbox (root), no GPU, and no background connections (refused
#: on a closed network, and slow to fail).
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def chromium_executable() -> str | None:
    """``$HELIOFORGE_CHROMIUM``, else ``chromium`` (or ``chromium-browser``) on PATH, else ``None``."""
    return os.environ.get("HELIOFORGE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def chromium(executable: str | None = None) -> Iterator["object"]:
    """A headless Chromium ``playwright.sync_api.Browser``, closed on exit.

    Raises
    ------
    FileNotFoundError : no Chromium (install Debian's ``chromium`` or set ``HELIOFORGE_CHROMIUM``).
    ImportError : Playwright is not installed.
    """
    exe = executable or chromium_executable()
    if exe is None:
        raise FileNotFoundError("no Chromium: apt-get install chromium, or set HELIOFORGE_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()
