"""The studio served for real: uvicorn on a free local port, in a thread, on the tiny work folder."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def live_server():
    """:class:`~helioforge.studio.app.BackgroundServer`: ``live_server(app)`` serves an app (``.stop()`` ends it)."""
    from helioforge.studio.app import BackgroundServer

    return BackgroundServer


@pytest.fixture(scope="session")
def studio_service(tiny_interrogator):
    from helioforge.studio.service import StudioService

    work, _, _ = tiny_interrogator
    return StudioService(work)


@pytest.fixture(scope="session")
def live_studio(studio_service, live_server):
    from helioforge.studio.app import create_app

    srv = live_server(create_app(studio_service.workdir, service=studio_service))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def sharp_file(sharp_dir):
    """A real SHARP Br patch of the sample."""
    return sorted(sharp_dir.glob("*.Br.fits"))[0]


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium through Playwright (:func:`helioforge.studio.browser.chromium`). Skips
    (with the reason) when no browser is installed, unless ``HELIOFORGE_REQUIRE_BROWSER=1``,
    where it fails instead."""
    import os

    from helioforge.studio.browser import chromium, chromium_executable

    required = os.environ.get("HELIOFORGE_REQUIRE_BROWSER") == "1"
    problem = None
    if chromium_executable() is None:
        problem = "no Chromium (apt-get install chromium, or set HELIOFORGE_CHROMIUM)"
    else:
        try:
            import playwright  # noqa: F401
        except ImportError as exc:
            problem = f"playwright is not installed ({exc})"
    if problem:
        if required:
            pytest.fail(problem + "; HELIOFORGE_REQUIRE_BROWSER=1 forbids skipping")
        pytest.skip(problem)
    with chromium() as b:
        yield b
