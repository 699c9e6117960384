"""Studio latency: from a slider move to the new magnetogram painted in the browser.

Serves ``helioforge studio`` for a work folder (default ``runs/demo``, the ``cpu`` profile that
``make demo`` makes) on a free local port and drives headless Chromium (Debian's ``chromium``,
through Playwright). Measured in one run, side by side:

* **browser**: the slider is set and its ``input`` event fired in the page; the clock stops when
  the page has drawn the answer and the browser has painted the next frame (two
  ``requestAnimationFrame``) — what a user sees, including HTTP, JSON, PNG decoding and SVG.
  Moves alternate between TUF values so that every move asks for a new image.
* **API**: the same views posted with httpx (no browser): the server's share.
* **figure PNG (yardstick)**: the same views rendered as a matplotlib figure
  (``/api/download/png``), the way ``helioforge generate`` draws its PNG: what the page would
  cost if it redrew a figure per move instead of colouring the N×N array.

Also writes the README's screenshot (``--screenshot``, default ``docs/figures/studio.png``).

Usage: ``python benchmarks/bench_studio.py [-w runs/demo] [--moves 40]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from helioforge.studio.app import BackgroundServer, create_app
from helioforge.studio.browser import chromium

_MOVE_JS = """async ([name, value]) => {
  const s = document.getElementById('slider-' + name);
  const before = Number(document.body.dataset.renders || 0);
  const t0 = performance.now();
  s.value = value;
  s.dispatchEvent(new Event('input', {bubbles: true}));
  await new Promise((resolve) => {
    const check = () => (Number(document.body.dataset.renders || 0) > before ? resolve() : setTimeout(check, 1));
    check();
  });
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  return performance.now() - t0;
}"""


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"n": len(a), "median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "max_ms": float(a.max()), "mean_ms": float(a.mean()), "std_ms": float(a.std(ddof=1)) if len(a) > 1 else 0.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-w", "--workdir", type=Path, default=Path("runs/demo"))
    ap.add_argument("--moves", type=int, default=40)
    ap.add_argument("--screenshot", type=Path, default=Path("docs/figures/studio.png"))
    ap.add_argument("--upload", type=Path, default=None, help="A SHARP Br file to upload before the screenshot.")
    ap.add_argument("--seed", type=int, default=43, help="Seed of the base image (43: an active region of the demo GAN).")
    args = ap.parse_args()

    app = create_app(args.workdir)
    svc = app.state.service
    if not svc.ready:
        print(f"no trained models in {args.workdir}: {svc.problem}; run `make demo` first", file=sys.stderr)
        return 2
    st = svc.status()
    tuf = next(d for d in st["directions"] if d["name"] == "tuf")
    values = [tuf["max"] * (((i % 8) + 1) / 8) * (1 if i % 2 else -1) for i in range(args.moves)]
    srv = BackgroundServer(app)
    out: dict = {"workdir": str(args.workdir), "seed": args.seed, "profile": st["profile"], "image_size": st["image_size"],
                 "corpus_size": st["corpus_size"], "moves": args.moves, "k": 8}
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(srv.url + "/")
            page.wait_for_selector("body[data-renders='1']", timeout=60_000)
            page.fill("#seed", str(args.seed))
            page.dispatch_event("#seed", "change")
            page.wait_for_selector("body[data-renders='2']", timeout=60_000)
            for v in values[:3]:  # warm-up
                page.evaluate(_MOVE_JS, ["tuf", str(v)])
            browser_ms = [page.evaluate(_MOVE_JS, ["tuf", str(v)]) for v in values]
            with httpx.Client(base_url=srv.url, timeout=60) as c:
                api_ms, server_ms, fig_ms = [], [], []
                for v in values:
                    body = {"seed": args.seed, "moves": {"tuf": v}, "k": 8}
                    t = time.perf_counter()
                    r = c.post("/api/render", json=body).json()
                    api_ms.append(1e3 * (time.perf_counter() - t))
                    server_ms.append(r["timing_ms"]["generate"] + r["timing_ms"]["params_and_search"])
                    t = time.perf_counter()
                    c.post("/api/download/png", json=body).raise_for_status()
                    fig_ms.append(1e3 * (time.perf_counter() - t))
            # the screenshot: a moved image with R held, and its matches
            page.check("#hold-r")
            page.evaluate(_MOVE_JS, ["tuf", str(tuf["max"] * 0.75)])
            if args.upload:
                page.set_input_files("#upload", str(args.upload))
                page.wait_for_function("document.querySelector('#matches-note').textContent.includes('upload')")
            args.screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.screenshot), full_page=True)
    finally:
        srv.stop()
    out["browser_slider_to_paint"] = _stats(browser_ms)
    out["api_round_trip"] = _stats(api_ms)
    out["server_compute"] = _stats(server_ms)
    out["figure_png_yardstick"] = _stats(fig_ms)
    out["goal_ms"] = 300
    out["met"] = bool(out["browser_slider_to_paint"]["p90_ms"] <= 300)
    out["figure_over_page_median"] = statistics.median(fig_ms) / statistics.median(browser_ms)
    out["screenshot"] = str(args.screenshot)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
