"""The FITS base every reader shares: the read error, the skipped-file record and the one
image-HDU reader that turns astropy's many failure modes into one error naming the file.

:class:`FitsReadError` (``path``, ``problem``; ``str`` is ``"<path>: <problem>"``) is what every
reader in :mod:`helioforge.data` raises for an unusable file; batch readers turn it into a
:class:`Skipped` entry and go on with the rest.
"""

from __future__ import annotations

import io
import logging
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError, VerifyWarning

from helioforge.errors import InputError, describe_path_problem

__all__ = ["FitsReadError", "Skipped", "read_image_hdu", "safe_get", "finite_or_none"]

logger = logging.getLogger(__name__)

_NONSTANDARD = re.compile(r"Card '([^']+)' is not FITS standard \(invalid value string: '([^']*)'\)")


class FitsReadError(InputError):
    """A FITS file that cannot be used: empty, truncated, no image, missing keywords.

    Attributes
    ----------
    path : Path of the offending file.
    problem : human-readable description of what is wrong.

    ``str(err)`` is ``"<path>: <problem>"``.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = str(problem)
        super().__init__(f"{self.path}: {self.problem}")

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"

    def __reduce__(self):  # keep picklable (multiprocessing) despite the 2-argument init
        return (type(self), (self.path, self.problem))



@dataclass
class Skipped:
    """A file left out of a batch read.

    path : the file. reason : the problem (the ``problem`` of the :class:`FitsReadError`).
    """

    path: Path
    reason: str



def finite_or_none(value: Any) -> float | None:
    """A finite float from a header or metadata value, else ``None``.

    Parameters
    ----------
    value : a card value, attribute or metadata entry (numbers, numeric strings, ``None``).

    Returns
    -------
    float or None : ``None`` for ``None``, booleans, non-numbers and non-finite values
        (strings like ``'nan'`` included).

    Examples
    --------
    >>> finite_or_none("1.5e20"), finite_or_none("nan"), finite_or_none(True), finite_or_none(None)
    (1.5e+20, None, None, None)
    """
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def safe_get(header: fits.Header, key: str, default=None):
    """``header.get(key)`` that returns ``default`` for absent or unparsable cards.

    Parameters
    ----------
    header : astropy.io.fits.Header
        The header.
    key : str
        Card keyword.
    default : optional
        Value for an absent or unparsable card.

    Returns
    -------
    object
        The card value or ``default``.
    """
    try:
        return header.get(key, default)
    except (VerifyError, ValueError):
        return default



def _card_raises(header: fits.Header, key: str) -> bool:
    try:
        header[key]
    except VerifyError:
        return True
    except KeyError:
        return False
    return False


def _check_header_parsable(hdu: fits.hdu.base._BaseHDU, path: Path, watch: Iterable[str] = ()) -> list[str]:
    """Make every card of ``hdu.header`` readable; return a warning if a watched card was broken.

    Non-standard cards (``'nan'`` values, lower-case exponents, ...) are common in JSOC headers;
    astropy parses most of them lazily, but some (``R_VALUE = nan`` in the HARP 377 files) raise
    ``VerifyError`` on access until ``verify('fix')``. When any card is unparsable the header is
    fixed silently (astropy's ``VerifyWarning`` is captured). A warning naming the file and the
    fixed cards is returned only when one of the ``watch`` keywords (those the caller reads)
    could not be read before the fix; other fixes are logged at debug level.
    """
    header = hdu.header
    broken = [k for k in watch if _card_raises(header, k)]
    if not broken:
        try:
            for card in header.cards:
                card.value  # noqa: B018 - parsing is the check
            return []
        except VerifyError:
            pass
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdu.verify("fix")
        except VerifyError as exc:
            raise FitsReadError(path, f"header cards cannot be fixed: {exc}") from None
    fixed: dict[str, str] = {}
    for w in caught:
        if issubclass(w.category, VerifyWarning):
            for key, raw in _NONSTANDARD.findall(str(w.message)):
                fixed[key] = raw
    if not broken:
        logger.debug("%s: non-standard header cards fixed: %s", path.name, ", ".join(fixed))
        return []
    first = [f"{k}={fixed[k]!r}" if k in fixed else k for k in broken]
    others = [k for k in fixed if k not in broken]
    names = ", ".join(first + others)
    return [f"{path.name}: non-standard header cards fixed by verify('fix') ({names})"]


def read_image_hdu(
    path: str | Path,
    *,
    required: Iterable[str] = (),
    watch: Iterable[str] = (),
    error: type[FitsReadError] = FitsReadError,
    content: bytes | None = None,
    max_pixels: int | None = None,
) -> tuple[np.ndarray, fits.Header, list[str]]:
    """Read the last image HDU that holds data from a FITS file, closing the file afterwards.

    Parameters
    ----------
    path : FITS file (plain or tile-compressed image; JSOC puts RICE images in HDU 1); with
        ``content``, only the name used in messages.
    content : the file's bytes, parsed in memory (an upload): nothing is read from or written
        to disk.
    max_pixels : refuse an image whose header declares more pixels than this, before its data
        are read or decompressed (a small tile-compressed upload can declare gigapixels).
    required : header keywords that must be present (checked after any header fix).
    watch : further keywords the caller will read; a warning is returned when one of them was
        unparsable and had to be fixed (``required`` keywords are always watched).
    error : the :class:`FitsReadError` subclass to raise.

    Returns
    -------
    data : 2-D or N-D float/int array, a copy (BSCALE/BZERO applied by astropy; float64 for
        JSOC's scaled int32).
    header : copy of that HDU's header.
    notes : warnings about worked-around problems (fixed header cards, missing end padding),
        each starting with the file name.

    Raises
    ------
    FileNotFoundError : the file does not exist.
    FitsReadError (or ``error``) : empty/corrupt file, truncated data unit, no image data,
        missing required keywords, unfixable header.
    """
    path = Path(path)
    if content is None and not path.is_file():
        why = describe_path_problem(path) or "no such file"
        if why == "no such file":
            raise FileNotFoundError(f"{path}: no such file")
        raise error(path, why)
    if (len(content) if content is not None else path.stat().st_size) == 0:
        raise error(path, "empty or corrupt FITS file (0 bytes)")
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(io.BytesIO(content) if content is not None else path, memmap=False) as hdul:
                image_hdus = [
                    h
                    for h in hdul
                    if isinstance(h, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU))
                    and h.header.get("NAXIS", 0) > 0
                ]
                if not image_hdus:
                    raise error(path, "no image data in any HDU")
                hdu = image_hdus[-1]
                declared = int(np.prod(hdu.shape, dtype=np.float64)) if hdu.shape else 0
                if max_pixels is not None and declared > max_pixels:
                    raise error(path, f"image of {' x '.join(map(str, hdu.shape[::-1]))} pixels declared, more than "
                                      f"the {max_pixels:,} allowed")
                required = tuple(required)
                notes.extend(_check_header_parsable(hdu, path, (*required, *watch)))
                try:
                    data = np.array(hdu.data)
                except (TypeError, ValueError, OSError, EOFError) as exc:
                    if _truncated(caught):
                        raise error(
                            path,
                            f"truncated FITS file: data unit shorter than the header says "
                            f"({_truncation_detail(caught)})",
                        ) from None
                    raise error(path, f"image data unreadable ({type(exc).__name__}: {exc})") from None
                header = hdu.header.copy()
        except FitsReadError as exc:
            if not isinstance(exc, error):
                raise error(exc.path, exc.problem) from None
            raise
        except OSError as exc:
            msg = str(exc)
            if "Empty or corrupt FITS file" in msg:
                raise error(path, "empty or corrupt FITS file") from None
            raise error(path, f"not a readable FITS file ({msg})") from None
        except (OverflowError, MemoryError, ValueError, TypeError) as exc:  # absurd header sizes, bad cards
            raise error(path, f"not a readable FITS file ({type(exc).__name__}: {exc})") from None
    if data.ndim == 0 or data.size == 0:
        raise error(path, "no image data in any HDU")
    if _truncated(caught):
        notes.append(f"{path.name}: file shorter than its header says ({_truncation_detail(caught)}); data read fine")
    missing = [k for k in required if k not in header]
    if missing:
        raise error(path, f"missing required header keyword(s): {', '.join(missing)}")
    return data, header, notes


def _truncated(caught: list[warnings.WarningMessage]) -> bool:
    return any("may have been truncated" in str(w.message) for w in caught)


def _truncation_detail(caught: list[warnings.WarningMessage]) -> str:
    for w in caught:
        m = re.search(r"actual file length \((\d+)\).*expected size \((\d+)\)", str(w.message))
        if m:
            return f"{m.group(1)} bytes on disk, {m.group(2)} expected"
    return "file may have been truncated"
