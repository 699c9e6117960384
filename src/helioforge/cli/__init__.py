"""The ``helioforge`` command line, one module per system: :mod:`.interrogate` (paper 000),
:mod:`.diffusion` (paper 002), :mod:`.inversion` (paper 003), :mod:`.data` (the data folder), with
the shared options and error handling in :mod:`.common`. Every command parses its arguments and
calls the Python API; none holds science or bookkeeping of its own.
"""

from __future__ import annotations

from helioforge.cli.app import app
from helioforge.cli import data as _data, diffusion as _diffusion, inversion as _inversion
from helioforge.cli import interrogate as _interrogate  # noqa: F401  (registers its commands on app)
from helioforge.cli import studio as _studio  # noqa: F401  (registers `helioforge studio`)

app.add_typer(_data.data_app, name="data")
app.add_typer(_diffusion.diffusion_app, name="diffusion")
app.add_typer(_inversion.inversion_app, name="inversion")
app.command("invert")(_inversion.invert_command)

__all__ = ["app"]
