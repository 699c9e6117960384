"""The studio's web application: FastAPI routes over :class:`~helioforge.studio.service.StudioService`.

Routes (JSON unless said otherwise):

* ``GET /`` — the page; ``GET /static/…`` — its script and style (served by the app: no CDN).
* ``GET /api/status`` — readiness (or the message and the command that makes the models),
  directions, units, slider ranges.
* ``POST /api/render`` — a :class:`View` → image, parameters, moves, matches.
* ``POST /api/download/fits``, ``POST /api/download/png`` — the view as a file.
* ``GET /api/corpus/{row}`` — a corpus patch's table row and header keys;
  ``GET /api/corpus/{row}/image.png`` — its image. Rows are the index's; no route takes a path.
* ``POST /api/upload`` — the raw bytes of a SHARP Br FITS file (at most ``max_upload_bytes``;
  the name, optional, in the ``X-Filename`` header) → token, parameters, matches.
* ``POST /api/project/{token}`` — project the upload into the latent space.

Errors are JSON ``{"detail": message}`` with 400 (bad values), 404 (unknown token or row),
413 (upload too large), 422 (malformed request), 429 (a projection is already running),
503 (no trained models).
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Literal, Optional

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from helioforge.studio.service import Busy, NotFound, StudioError, StudioService, View

__all__ = ["create_app", "ViewRequest", "MAX_UPLOAD_BYTES", "BackgroundServer"]

log = logging.getLogger(__name__)

#: Default upload limit: 20 MB (10⁶ bytes each; a full-size SHARP Br patch is a few MB).
MAX_UPLOAD_BYTES = 20_000_000


class ViewRequest(BaseModel):
    """A view as the page sends it (:class:`~helioforge.studio.service.View`)."""

    seed: int = Field(0, ge=0, lt=2**32)
    start: Optional[str] = Field(None, max_length=32)
    moves: dict[str, float] = Field(default_factory=dict)
    hold: list[Literal["tuf", "psep", "r", "polarity"]] = Field(default_factory=list, max_length=4)
    k: int = Field(5, ge=0, le=50)
    refine: int = Field(3, ge=0, le=5)

    def view(self) -> View:
        """The :class:`~helioforge.studio.service.View` this request describes (holds deduplicated)."""
        return View(seed=self.seed, start=self.start, moves=dict(self.moves), hold=list(dict.fromkeys(self.hold)), k=self.k,
                    refine=self.refine)


def _static_dir() -> Path:
    return Path(str(resources.files("helioforge.studio") / "static"))


def create_app(workdir: str | Path, max_upload_bytes: int = MAX_UPLOAD_BYTES,
               service: StudioService | None = None) -> FastAPI:
    """The studio application for one interrogator work folder.

    Parameters
    ----------
    workdir : the work folder (its models are loaded once, here).
    max_upload_bytes : largest accepted upload; larger ones get HTTP 413.
    service : an already loaded service (tests share one between apps).

    Returns
    -------
    fastapi.FastAPI
    """
    svc = service or StudioService(workdir)
    app = FastAPI(title="helioforge studio", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.service = svc
    app.mount("/static", StaticFiles(directory=_static_dir()), name="static")

    def call(fn, *args):
        try:
            return fn(*args)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except Busy as exc:
            raise HTTPException(429, str(exc), headers={"Retry-After": "15"}) from None
        except StudioError as exc:
            raise HTTPException(503 if not svc.ready else 400, str(exc)) from None

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(_static_dir() / "index.html", media_type="text/html")

    @app.get("/api/status")
    async def status() -> dict:  # no model call: answered on the event loop, never queued behind one
        return svc.status()

    @app.post("/api/render")
    def render(req: ViewRequest) -> dict:
        return call(svc.render, req.view())

    @app.post("/api/download/fits")
    def download_fits(req: ViewRequest) -> Response:
        data = call(svc.fits_bytes, req.view())
        return Response(data, media_type="application/fits",
                        headers={"Content-Disposition": 'attachment; filename="helioforge_studio.fits"'})

    @app.post("/api/download/png")
    def download_png(req: ViewRequest) -> Response:
        data = call(svc.png_bytes, req.view())
        return Response(data, media_type="image/png",
                        headers={"Content-Disposition": 'attachment; filename="helioforge_studio.png"'})

    @app.get("/api/corpus/{row}")
    def corpus_detail(row: int) -> dict:
        return call(svc.corpus_detail, row)

    @app.get("/api/corpus/{row}/image.png")
    def corpus_image(row: int, size: str = "thumb") -> Response:
        return Response(call(svc.corpus_png, row, 4 if size == "large" else 1), media_type="image/png",
                        headers={"Cache-Control": "max-age=3600"})

    @app.post("/api/upload")
    async def upload(request: Request, k: int = 5) -> JSONResponse:
        if not 0 <= k <= 50:
            raise HTTPException(422, "k must be between 0 and 50")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_upload_bytes:
            raise HTTPException(413, f"upload of {int(declared) / 1e6:.1f} MB is larger than the "
                                     f"{max_upload_bytes / 1e6:.0f} MB limit")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_upload_bytes:
                raise HTTPException(413, f"upload larger than the {max_upload_bytes / 1e6:.0f} MB limit")
            chunks.append(chunk)
        if size == 0:
            raise HTTPException(400, "empty upload: send the bytes of a SHARP Br FITS file")
        name = request.headers.get("x-filename", "upload.fits")
        # parsing and the search run in the thread pool, not on the event loop
        return JSONResponse(await run_in_threadpool(call, svc.upload, b"".join(chunks), name, k))

    @app.post("/api/project/{token}")
    def project(token: str) -> dict:
        return call(svc.project, token)

    return app


class BackgroundServer:
    """uvicorn serving an app on a free local port in a daemon thread (tests, benchmarks).

    Parameters
    ----------
    app : the ASGI application (:func:`create_app`).
    host : address to listen on (default this machine only).
    timeout_s : how long to wait for the server to start.

    Attributes
    ----------
    url : ``http://host:port``.

    Raises
    ------
    RuntimeError : the server did not start within ``timeout_s``.
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", timeout_s: float = 30.0):
        import socket
        import threading
        import time

        import uvicorn

        with socket.socket() as sock:
            sock.bind((host, 0))
            self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + timeout_s
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the studio server did not start on {host}:{self.port}")
            time.sleep(0.05)
        self.url = f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Ask the server to finish and wait for its thread."""
        self.server.should_exit = True
        self.thread.join(10)
