"""Safe file output shared by every subpackage: atomic writes and FITS provenance.

Every file helioforge writes goes to a temporary name in the destination folder and is
renamed into place only when complete, so an interrupted run never leaves a half-written
product behind.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from astropy.io import fits

from helioforge import __version__

__all__ = ["atomic_path", "write_json", "write_text", "fits_ascii", "provenance_cards", "fits_hdul", "write_fits"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    The temporary file keeps the destination's suffix (libraries such as faiss, matplotlib or
    astropy pick the format from it). On error the temporary file is removed and ``path`` is
    left untouched.

    Parameters
    ----------
    path : str or os.PathLike
        The destination; its parent folders are created.
    suffix : str, optional
        Suffix of the temporary file (default: that of ``path``).

    Yields
    ------
    Path
        A temporary file (created empty, mode 0600) in ``path``'s folder, named
        ``.<stem>.<random><suffix>``; it gets the usual umask permissions before the rename.

    Raises
    ------
    OSError
        The folder cannot be created or written, or the rename fails; any error raised inside
        the block propagates after the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files; give the product the usual umask permissions
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(tmp_path, 0o666 & ~mask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically (:func:`atomic_path`).

    Non-finite Python and NumPy scalar floats (NaN, ±inf), also inside dicts, lists and tuples,
    are written as ``null``; dict keys become strings. NumPy scalars, arrays (as lists) and
    ``Path`` objects are converted; non-finite values *inside a NumPy array* are written as
    ``NaN``/``Infinity`` (not standard JSON).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    obj : any
        JSON-able data.

    Returns
    -------
    Path
        ``Path(path)``.

    Raises
    ------
    TypeError
        An object that is not JSON-serialisable.
    OSError
        The file cannot be written.
    """

    def clean(o: Any) -> Any:
        if isinstance(o, float) and not np.isfinite(o):
            return None
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, (np.floating,)):
            return clean(float(o))
        return o

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(clean(obj), indent=2, default=_jsonable) + "\n")
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically (:func:`atomic_path`).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    text : str
        The content (encoded with the locale's default encoding).

    Returns
    -------
    Path
        ``Path(path)``.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def fits_ascii(text: str) -> str:
    """``text`` as printable ASCII for a FITS header value (FITS allows nothing else).

    Parameters
    ----------
    text : str
        Any text.

    Returns
    -------
    str
        ``text`` with every character outside printable ASCII (code 32–126) replaced by its
        backslash escape: ``carte_é.fits`` → ``carte_\\xe9.fits``, a newline → ``\\n``.
    """
    return "".join(c if 32 <= ord(c) < 127 else c.encode("ascii", "backslashreplace").decode() for c in text)


def provenance_cards(model: str, params: dict[str, Any] | None = None) -> list[tuple[str, Any, str]]:
    """FITS cards recording who made a product and how.

    Parameters
    ----------
    model : str
        Name of the model or step (``HF_MODEL`` card, cut to 68 characters).
    params : dict, optional
        Parameters to record, one card each.

    Returns
    -------
    list of (str, any, str)
        ``(keyword, value, comment)`` triples: ``CREATOR`` (helioforge version), ``DATE`` (UTC,
        ISO 8601), ``HF_MODEL`` and one ``HIERARCH HF <name>`` card per parameter. Values that
        FITS cannot hold are written as strings (non-finite floats as ``'nan'``/``'inf'``, other
        objects as JSON); string values are made ASCII (:func:`fits_ascii`) and cut to 60
        characters.

    Raises
    ------
    TypeError
        A parameter value that is not JSON-serialisable.
    """
    cards: list[tuple[str, Any, str]] = [
        ("CREATOR", f"helioforge {__version__}", "software that wrote this file"),
        ("DATE", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), "UTC file creation"),
        ("HF_MODEL", str(model)[:68], "helioforge model / step"),
    ]
    for key, value in (params or {}).items():
        if isinstance(value, (np.floating, np.integer)):
            value = value.item()
        if isinstance(value, float) and not np.isfinite(value):
            value = str(value)
        if not isinstance(value, (int, float, str, bool)):
            value = json.dumps(value, default=_jsonable)
        if isinstance(value, str):
            value = fits_ascii(value)[:60]
        cards.append((f"HIERARCH HF {fits_ascii(str(key))}", value, ""))
    return cards


def fits_hdul(
    data: np.ndarray,
    *,
    model: str,
    params: dict[str, Any] | None = None,
    header: fits.Header | None = None,
    extra_hdus: list[fits.hdu.base.ExtensionHDU] | None = None,
) -> fits.HDUList:
    """The HDU list :func:`write_fits` writes (for a file made in memory, e.g. a download).

    Parameters are those of :func:`write_fits`.

    Returns
    -------
    astropy.io.fits.HDUList : the primary HDU (``data``, ``header``, provenance cards) and ``extra_hdus``.
    """
    hdr = fits.Header() if header is None else header.copy()
    for card in hdr.cards:  # values copied from elsewhere (a file name in a comment card ...) must be ASCII too
        if card.keyword not in ("COMMENT", "HISTORY", "") and isinstance(card.value, str) and not card.value.isascii():
            hdr[card.keyword] = fits_ascii(card.value)
    for key, value, comment in provenance_cards(model, params):
        hdr[key] = (value, comment)
    return fits.HDUList([fits.PrimaryHDU(np.asarray(data), header=hdr), *(extra_hdus or [])])


def write_fits(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    model: str,
    params: dict[str, Any] | None = None,
    header: fits.Header | None = None,
    extra_hdus: list[fits.hdu.base.ExtensionHDU] | None = None,
) -> Path:
    """Write ``data`` as the primary HDU of a FITS file with provenance, atomically.

    Parameters
    ----------
    path : destination file.
    data : image or cube (any numeric dtype).
    model : name of the model or step that produced the data (``HF_MODEL`` card).
    params : parameters to record (``HIERARCH HF`` cards).
    header : extra header cards (e.g. ``BUNIT``) copied first.
    extra_hdus : further HDUs (tables) appended after the primary.
    """
    hdus = fits_hdul(data, model=model, params=params, header=header, extra_hdus=extra_hdus)
    with atomic_path(path) as tmp:
        hdus.writeto(tmp, overwrite=True)
    return Path(path)
