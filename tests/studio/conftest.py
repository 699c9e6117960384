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
