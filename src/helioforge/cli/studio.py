"""``helioforge studio``: serve the studio page for an interrogator work folder (FastAPI + uvicorn)."""

from __future__ import annotations

from pathlib import Path

import typer

from helioforge.cli.app import app
from helioforge.cli.common import console, fail
from helioforge.cli.interrogate import WORKDIR


@app.command()
def studio(
    workdir: Path = WORKDIR,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (default: this machine only)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0: any free port)."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", min=0.01, max=1024, help="Largest upload accepted, MB (10⁶ bytes)."),
) -> None:
    """Steer the generator in a browser: physics sliders, hold toggles, real matches, upload, project, download."""
    import uvicorn

    from helioforge.studio.app import create_app

    app_ = create_app(workdir, max_upload_bytes=int(max_upload_mb * 1e6))
    svc = app_.state.service
    if not svc.ready:
        console.print(f"[yellow]no trained models in {workdir}[/yellow]: the page will say so. Make them with: {svc.command}")
    else:
        svc.warm_up()
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]listening on {host}[/yellow]: other machines can reach the studio (it has no login)")
    console.print(f"helioforge studio: http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/  (Ctrl-C stops it)")
    try:
        uvicorn.run(app_, host=host, port=port, log_level="info")
    except OSError as e:  # port in use ...
        fail(f"cannot listen on {host}:{port}: {e}")
