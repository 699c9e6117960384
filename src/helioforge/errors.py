"""Errors a user can act on, and the checks that raise them at the API and CLI edges.

Every error here carries one line that names the file or the argument, says what is wrong and,
where there is one, the remedy. The ``helioforge`` command prints that line and exits with
status 2 (``-v`` adds the traceback); the Python API raises them. They subclass the built-in
errors callers already catch (``ValueError``, ``RuntimeError``), so existing handlers keep
working.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable

__all__ = ["HelioforgeError", "ProductError", "InputError", "FolderInUse", "check_output", "check_finite",
           "check_count", "describe_path_problem"]


class HelioforgeError(Exception):
    """Base class: an error whose message is the one line shown to the user."""


class ProductError(HelioforgeError, ValueError):
    """A saved product (weights, index, corpus, state, JSON, shard) is unreadable, unfinished,
    stale or inconsistent.

    Parameters
    ----------
    path : the file or folder.
    problem : what is wrong with it.
    remedy : what rebuilds it (default: rerun the step with ``--force``).
    """

    def __init__(self, path: str | os.PathLike, problem: str, remedy: str | None = None) -> None:
        self.path, self.problem = Path(path), problem
        self.remedy = remedy if remedy is not None else "rerun the step that makes it with --force to rebuild it"
        super().__init__(f"{self.path}: {problem}" + (f"; {self.remedy}" if self.remedy else ""))


class InputError(HelioforgeError, ValueError):
    """Input data or an argument that cannot be right (physically implausible, out of range, an
    output that would overwrite an input)."""


class FolderInUse(HelioforgeError, RuntimeError):
    """Another helioforge process holds the work folder's lock."""


def check_count(name: str, value: int | None, minimum: int = 1, maximum: int | None = None) -> int | None:
    """Check a count argument against its bounds.

    Parameters
    ----------
    name : str
        The argument's name for the message (e.g. ``"--epochs"``).
    value : int or None
        The value given; ``None`` (not given) passes.
    minimum, maximum : int, optional
        Inclusive bounds; ``maximum=None`` means no upper bound.

    Returns
    -------
    int or None
        ``value`` unchanged.

    Raises
    ------
    InputError
        ``value`` lies outside ``[minimum, maximum]`` (a ``ValueError``).
    """
    if value is None:
        return None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise InputError(f"{name} must be {bound}, got {value}")
    return value


def check_finite(name: str, value: float | None, minimum: float | None = None) -> float | None:
    """Check a real-number argument: finite and, optionally, at least ``minimum``.

    Parameters
    ----------
    name : str
        The argument's name for the message.
    value : float or None
        The value given; ``None`` (not given) passes.
    minimum : float, optional
        Inclusive lower bound.

    Returns
    -------
    float or None
        ``value`` unchanged.

    Raises
    ------
    InputError
        ``value`` is NaN or infinite, or below ``minimum`` (a ``ValueError``).
    """
    if value is None:
        return None
    if not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value}")
    if minimum is not None and value < minimum:
        raise InputError(f"{name} must be ≥ {minimum:g}, got {value:g}")
    return value


def describe_path_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as a file, in words.

    Parameters
    ----------
    path : str or os.PathLike
        The file to check.

    Returns
    -------
    str or None
        ``None`` when it is a readable file, else one of: ``"symbolic-link loop"``, ``"dangling
        symbolic link (to ...)"``, ``"is a directory, not a file"``, ``"no such file"``, ``"not
        readable (permissions)"`` or ``"cannot be read (...)"`` (any other ``OSError``). Never
        raises.
    """
    p = Path(path)
    try:
        if p.is_symlink():
            try:
                p.resolve(strict=True)
            except RuntimeError:
                return "symbolic-link loop"
            except (FileNotFoundError, OSError):
                return f"dangling symbolic link (to {os.readlink(p)})"
        if p.is_dir():
            return "is a directory, not a file"
        if not p.exists():
            return "no such file"
        if not os.access(p, os.R_OK):
            return "not readable (permissions)"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None


def _written_by_helioforge(path: Path) -> bool:
    """Whether an existing file was written by helioforge (FITS ``CREATOR`` card; other kinds:
    a JSON sidecar or the file's name say nothing, so only FITS are recognised)."""
    if path.suffix.lower() not in (".fits", ".fit", ".fts"):
        return False
    try:
        from astropy.io import fits

        return str(fits.getheader(path, 0).get("CREATOR", "")).startswith("helioforge")
    except Exception:  # noqa: BLE001 - unreadable: certainly not ours
        return False


def check_output(output: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), *,
                 protect_foreign_fits: bool = False) -> Path:
    """Refuse an output path that would destroy an input.

    Parameters
    ----------
    output : str or os.PathLike
        The output path asked for.
    inputs : iterable of str or os.PathLike
        The command's input files.
    protect_foreign_fits : bool
        Also refuse an existing FITS file (``.fits``, ``.fit``, ``.fts``) that helioforge did not
        write (no ``CREATOR = 'helioforge ...'`` card), e.g. ``generate -o`` pointed at a real
        SHARP file.

    Returns
    -------
    Path
        ``Path(output)``.

    Raises
    ------
    InputError
        ``output`` is (or links to) one of ``inputs``, or, with ``protect_foreign_fits``, is a
        foreign FITS file.
    """
    out = Path(output)
    try:
        out_real = out.resolve()
    except (OSError, RuntimeError):
        out_real = out.absolute()
    for inp in inputs:
        try:
            same = Path(inp).resolve() == out_real or (out.exists() and os.path.samefile(out, inp))
        except (OSError, RuntimeError):
            same = False
        if same:
            raise InputError(f"{out}: the output would overwrite the input {inp}; choose another --output")
    is_fits = out.suffix.lower() in (".fits", ".fit", ".fts")
    if protect_foreign_fits and is_fits and out.is_file() and not _written_by_helioforge(out):
        raise InputError(f"{out}: exists and was not written by helioforge; it is left untouched "
                         "(choose another --output, or remove it first)")
    return out
