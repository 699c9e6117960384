"""The studio in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright's
Python API against the app served by uvicorn on a free local port.

Without a Chromium these tests skip with the reason, except where ``HELIOFORGE_REQUIRE_BROWSER=1``
(``.ci/run`` sets it after installing the browser): there a missing browser fails them, so CI
never skips them silently. ``HELIOFORGE_SCREENSHOT=PATH`` also saves the page's screenshot there.
"""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from helioforge.studio.app import create_app


@pytest.fixture
def page(browser, live_studio):
    ctx = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    pg = ctx.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(live_studio.url + "/")
    pg.wait_for_selector("body[data-renders='1']", timeout=30_000)
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _renders(pg) -> int:
    return int(pg.evaluate("document.body.dataset.renders || '0'"))


def _wait_render(pg, before: int) -> None:
    pg.wait_for_function(f"Number(document.body.dataset.renders || 0) > {before}", timeout=30_000)


def _tuf(pg) -> float:
    return float(pg.get_attribute("#param-TUF", "data-value"))


def test_tuf_slider_up_raises_tuf_and_changes_the_image(page):
    pg = page
    img0, tuf0 = pg.get_attribute("#magnetogram", "href"), _tuf(pg)
    smax = float(pg.get_attribute("#slider-tuf", "max"))
    n = _renders(pg)
    pg.fill("#slider-tuf", str(smax))  # fires `input` as a drag does
    _wait_render(pg, n)
    img1, tuf1 = pg.get_attribute("#magnetogram", "href"), _tuf(pg)
    assert img1 != img0 and tuf1 > tuf0
    assert "Mx" in pg.inner_text("#value-tuf") and "achieved" in pg.inner_text("#moves")
    n = _renders(pg)
    pg.fill("#slider-tuf", str(-smax))
    _wait_render(pg, n)
    assert _tuf(pg) < tuf1  # down from the top: lower TUF (the tiny GAN is not monotonic all the way to -max)
    # hold R: its slider is disabled and reads "held"
    n = _renders(pg)
    pg.check("#hold-r")
    _wait_render(pg, n)
    assert pg.is_disabled("#slider-r") and pg.inner_text("#value-r") == "held"
    # the matches are listed with their metadata, and a click opens the larger view with header keys
    assert pg.locator(".match").count() == 8
    first = pg.locator(".match").first
    assert "cos" in first.inner_text()
    first.click()
    pg.wait_for_selector("#detail:not([hidden])")
    assert "T_REC" in pg.inner_text("#detail-table")
    pg.click("#detail-close")


def test_upload_a_real_sharp_file_lists_its_matches_then_project(page, sharp_file):
    pg = page
    pg.set_input_files("#upload", str(sharp_file))
    pg.wait_for_function("document.querySelector('#matches-note').textContent.includes('upload')", timeout=30_000)
    assert pg.locator(".match").count() == 8
    assert "HARP" in pg.inner_text("#upload-info")
    n = _renders(pg)
    pg.click("#project")
    _wait_render(pg, n)
    assert "projection of" in pg.inner_text("#start-info")
    with pg.expect_download() as dl:
        pg.click("#download-fits")
    path = dl.value.path()
    from astropy.io import fits

    with fits.open(path) as h:
        assert h[0].header["HF PROJECTED_FROM"] == sharp_file.name


def test_screenshot_is_not_blank(page, tmp_path):
    pg = page
    shot = pg.screenshot(full_page=True)
    img = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), dtype=np.float64)
    assert img.shape[0] >= 800 and img.shape[1] >= 1200
    assert img.std() > 20  # not a blank page
    colours = np.unique((img[::4, ::4] // 16).reshape(-1, 3), axis=0)
    assert len(colours) > 50  # the magnetogram, its colour bar and the thumbnails are drawn
    # the magnetogram area holds both colours of the diverging map (red and blue pixels)
    box = pg.locator("#magnetogram").bounding_box()
    crop = img[int(box["y"]):int(box["y"] + box["height"]), int(box["x"]):int(box["x"] + box["width"])]
    assert crop.size and crop.std() > 5
    (tmp_path / "studio.png").write_bytes(shot)
    if os.environ.get("HELIOFORGE_SCREENSHOT"):
        shutil.copy(tmp_path / "studio.png", os.environ["HELIOFORGE_SCREENSHOT"])


def test_page_without_models_shows_the_message_and_command(browser, live_server, tmp_path):
    srv = live_server(create_app(tmp_path / "nothing"))
    try:
        ctx = browser.new_context()
        pg = ctx.new_page()
        pg.goto(srv.url + "/")
        pg.wait_for_selector("body[data-ready='false']", timeout=30_000)
        assert "No trained models" in pg.inner_text("#status-message")
        assert "helioforge interrogate" in pg.inner_text("#status-command")
        assert pg.is_hidden("#studio")
        ctx.close()
    finally:
        srv.stop()


def test_header_text_of_an_upload_is_shown_as_text_not_run(page, tmp_path):
    """Strings from an uploaded file (here T_REC) reach the page escaped (the review's injection)."""
    from astropy.io import fits

    evil = '<img src=x onerror="window.__xss=1">'
    hdr = fits.Header([("T_REC", evil), ("HARPNUM", 1), ("CDELT1", 0.03), ("BUNIT", "Mx/cm^2")])
    y, x = np.mgrid[0:48, 0:48]
    data = 800 * (np.exp(-((x - 30) ** 2 + (y - 24) ** 2) / 20) - np.exp(-((x - 18) ** 2 + (y - 24) ** 2) / 20))
    path = tmp_path / "evil.fits"
    fits.PrimaryHDU(data.astype(np.float32), header=hdr).writeto(path)
    pg = page
    pg.set_input_files("#upload", str(path))
    pg.wait_for_function("document.querySelector('#matches-note').textContent.includes('upload')", timeout=30_000)
    assert evil in pg.inner_text("#upload-info")
    assert pg.evaluate("window.__xss") is None and pg.locator("#upload-info img[src='x']").count() == 0
