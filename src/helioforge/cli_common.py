"""Pieces shared by the ``helioforge`` command modules: consoles, error exit, trainer options."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console(stderr=True)
out = Console()

ACCEL = typer.Option("auto", "--accelerator", help="Lightning accelerator: auto, cpu, gpu.")
DEVICES = typer.Option("auto", "--devices", help="Number of devices (several GPUs use DDP).")


def _fail(msg: str) -> None:
    """Print ``error: msg`` and exit with status 2."""
    console.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(2)


def _trainer_kw(accelerator: str, devices: str) -> dict:
    """Lightning ``accelerator``/``devices`` from the command-line strings."""
    return {"accelerator": accelerator, "devices": int(devices) if devices.isdigit() else devices}
