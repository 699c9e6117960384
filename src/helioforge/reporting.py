"""The report toolkit of the three systems: one way to save a figure, HTML templates as files
rendered by one Jinja environment.

Importing this module selects matplotlib's non-interactive ``Agg`` backend (reports are written
on machines without a display); no other module selects a backend.

* :func:`save_figure` — write a figure atomically (temporary name, then rename) and close it.
* :func:`render` / :func:`write_html` — render ``helioforge/templates/<name>`` (templates extend
  ``base.html.j2``, which holds the page skeleton and the style sheet) and write it atomically.

Examples
--------
>>> import tempfile, pathlib
>>> from matplotlib.figure import Figure
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> fig = Figure(figsize=(2, 2)); _ = fig.subplots().plot([0, 1], [0, 1])
>>> save_figure(fig, folder / "line.png").stat().st_size > 0
True
>>> "<title>helioforge report</title>" in render("base.html.j2")
True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape  # noqa: E402

from helioforge.io import atomic_path, write_text  # noqa: E402

__all__ = ["save_figure", "render", "write_html", "TEMPLATES"]

#: The Jinja environment of the report templates (``helioforge/templates``); a variable missing
#: from the context is an error, not an empty string.
TEMPLATES = Environment(loader=PackageLoader("helioforge", "templates"), autoescape=select_autoescape(["html"]),
                        undefined=StrictUndefined, trim_blocks=False, lstrip_blocks=False)


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write ``fig`` (a pyplot or bare :class:`matplotlib.figure.Figure`) to ``path`` atomically
    (the format follows the suffix) and close it.

    Parameters
    ----------
    fig : the figure. path : destination (``.png`` for reports). dpi : resolution, dots per inch.

    Returns
    -------
    Path : ``path``.

    Raises
    ------
    OSError : the folder cannot be written (nothing is left half-written at ``path``).
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path


def render(template: str, **context: Any) -> str:
    """Render the report template ``template`` (a file name in ``helioforge/templates``).

    Raises
    ------
    jinja2.TemplateNotFound : no such template. jinja2.UndefinedError : the template uses a
        variable the context lacks.
    """
    return TEMPLATES.get_template(template).render(**context)


def write_html(path: str | os.PathLike, template: str, **context: Any) -> Path:
    """Render ``template`` with ``context`` and write it to ``path`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.html`` file.
    template : str
        File name in ``helioforge/templates`` (e.g. ``"metrics_table.html.j2"``).
    **context
        The template's variables.

    Returns
    -------
    Path
        ``Path(path)``.

    Raises
    ------
    jinja2.TemplateNotFound
        No such template.
    jinja2.UndefinedError
        The template uses a variable the context lacks.
    OSError
        The file cannot be written (nothing is left half-written at ``path``).
    """
    return write_text(path, render(template, **context))
