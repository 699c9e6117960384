"""The studio served for real: uvicorn on a free local port, in a thread, on the tiny work folder."""

from __future__ import annotations

import socket
import threading
import time

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 in a daemon thread; ``url`` is its address."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the studio server did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="session")
def live_server():
    """The :class:`LiveServer` class: ``live_server(app)`` serves an app (call ``.stop()``)."""
    return LiveServer


@pytest.fixture(scope="session")
def studio_service(tiny_interrogator):
    from helioforge.studio.service import StudioService

    work, _, _ = tiny_interrogator
    return StudioService(work)


@pytest.fixture(scope="session")
def live_studio(studio_service):
    from helioforge.studio.app import create_app

    srv = LiveServer(create_app(studio_service.workdir, service=studio_service))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def sharp_file(sharp_dir):
    """A real SHARP Br patch of the sample."""
    return sorted(sharp_dir.glob("*.Br.fits"))[0]


#: Chromium flags for a closed network, as root, headless (the machine notes' probe).
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def chromium_executable() -> str | None:
    """``$HELIOFORGE_CHROMIUM``, else Debian's ``chromium`` on PATH."""
    import os
    import shutil

    return os.environ.get("HELIOFORGE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium through Playwright. Skips (with the reason) when no browser is
    installed, unless ``HELIOFORGE_REQUIRE_BROWSER=1``, where it fails instead."""
    import os

    exe = chromium_executable()
    required = os.environ.get("HELIOFORGE_REQUIRE_BROWSER") == "1"
    if exe is None:
        msg = "no Chromium (apt-get install chromium, or set HELIOFORGE_CHROMIUM)"
        if required:
            pytest.fail(msg + "; HELIOFORGE_REQUIRE_BROWSER=1 forbids skipping")
        pytest.skip(msg)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        if required:
            pytest.fail(f"playwright is not installed ({exc})")
        pytest.skip(f"playwright is not installed ({exc})")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()
