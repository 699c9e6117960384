"""The root ``helioforge`` command: the group, its global options (``-v``, ``--data``) and logging.

The subcommands live one module per system (:mod:`.interrogate`, :mod:`.diffusion`,
:mod:`.inversion`, :mod:`.data`) and register on :data:`app` when :mod:`helioforge.cli` is imported.
Summary of the commands:

    helioforge params FITS...           physical parameters of SHARP Br patches
    helioforge fetch sharp ...          download SHARP segments from JSOC (drms)
    helioforge train gan | simsiam      train the models of a work folder
    helioforge directions fit           SVM latent directions
    helioforge generate                 magnetograms steered along physical directions
    helioforge index build              embed the real corpus into a FAISS index
    helioforge search                   real matches of a FITS file or a generated image
    helioforge interrogate              the whole pipeline and its report (the main job)
    helioforge directions calibrate     the directions in physical units (Mx, Mm per ε)
    helioforge project FITS...          real magnetograms into the latent space (z to edit)
    helioforge studio                   the browser app: steer, match, upload, project, download
    helioforge diffusion ...            flare-class-conditioned diffusion on AIA (label, train,
                                        sample, evaluate, augment-experiment)
    helioforge inversion ...            Stokes synthesis of SIR models (synth), SICON training
                                        sets (make-trainset), training and validation
    helioforge invert MAP -o F          invert a Hinode SP map with a trained SICON network
    helioforge data path | fetch        the data folder in use; download the full real sample
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.logging import RichHandler

from helioforge.cli.common import DATA, SafeGroup, console, use_data

app = typer.Typer(help="helioforge: physics-aware generative AI for solar observations.", no_args_is_help=True,
                  pretty_exceptions_enable=False, cls=SafeGroup)


class _StderrHandler(logging.StreamHandler):
    """A plain handler writing to whatever ``sys.stderr`` is when a message comes (so a
    redirected or replaced stderr, as in tests, never receives messages after it is closed)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
          data: Optional[Path] = DATA) -> None:
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False)
        fmt = "%(message)s"
    else:  # a log: one plain, unwrapped, time-stamped line per message
        handler = _StderrHandler()
        fmt = "%(asctime)s %(levelname)s %(message)s"
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=fmt, datefmt="%H:%M:%S",
                        handlers=[handler], force=True)
    use_data(data)
    for noisy in ("faiss.loader", "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning")
