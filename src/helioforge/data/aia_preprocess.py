"""AIA images → network input and back (Ramunno et al. 2024, §2.1): the log intensity scaling
of each channel onto [-1, 1], its inverse, and :func:`preprocess_aia`, which reads (through
:func:`helioforge.data.aia.read_aia`) and scales any AIA input to a float32 (N, N) image.

DN/s images are log-scaled with the channel's :class:`AIAScaling`; display intensities of browse
images (``units = "display"``) are scaled linearly. :func:`to_intensity` inverts the scaling for
writing generated images in physical units.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import math

import numpy as np

from helioforge.data.aia import BROWSE_FILL_VALUE, AIAImage, is_display, read_aia

__all__ = ["AIAScaling", "DEFAULT_SCALINGS", "scale_aia", "to_intensity", "preprocess_aia"]


@dataclass(frozen=True)
class AIAScaling:
    """Log intensity scaling of one AIA channel onto [-1, 1].

    ``x = clip((log10(max(I, 10**log10_min)) - log10_min) / (log10_max - log10_min), 0, 1) · 2 − 1``
    for I in DN/s; :func:`to_intensity` inverts it inside [10**log10_min, 10**log10_max].

    Attributes
    ----------
    log10_min : log10 of the dark floor, DN/s (maps to -1; lower values and masked pixels
        are clipped there).
    log10_max : log10 of the saturation level, DN/s (maps to +1).
    """

    log10_min: float
    log10_max: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.log10_min) and math.isfinite(self.log10_max) and self.log10_max > self.log10_min):
            raise ValueError(f"AIAScaling needs finite log10_min < log10_max, got {self.log10_min}, {self.log10_max}")

    @classmethod
    def from_dn_per_s(cls, floor: float, ceiling: float) -> "AIAScaling":
        """Scaling from the floor and ceiling in DN/s.

        Parameters
        ----------
        floor, ceiling : float
            Intensities, DN/s, with 0 < floor < ceiling.

        Returns
        -------
        AIAScaling
            With ``log10_min = log10(floor)`` and ``log10_max = log10(ceiling)``.

        Raises
        ------
        ValueError
            Unless 0 < floor < ceiling.
        """
        if not (floor > 0 and ceiling > floor):
            raise ValueError(f"need 0 < floor < ceiling (DN/s), got {floor}, {ceiling}")
        return cls(math.log10(floor), math.log10(ceiling))

    @classmethod
    def for_channel(cls, wavelength: int) -> "AIAScaling":
        """The default scaling of a channel (:data:`DEFAULT_SCALINGS`).

        Parameters
        ----------
        wavelength : int
            AIA channel, Å.

        Returns
        -------
        AIAScaling

        Raises
        ------
        KeyError
            For a channel without a default scaling (the message lists the known ones).
        """
        try:
            return DEFAULT_SCALINGS[int(wavelength)]
        except KeyError:
            raise KeyError(
                f"no default AIA scaling for {wavelength} Å (known: {', '.join(map(str, sorted(DEFAULT_SCALINGS)))}); pass an AIAScaling"
            ) from None


#: Default per-channel clip range in DN/s, log-scaled. Floors and ceilings are those of the
#: SDOBenchmark preprocessing (github i4Ds/SDOBenchmark; reused for SDOMLv2 by the FDL
#: ``sdo`` anomaly-detection code as ``CHANNEL_PREPROCESS``): 94 Å 0.1-800, 131 Å 0.7-1900,
#: 171 Å 5-3500, 193 Å 20-5500, 211 Å 7-3500, 304 Å 0.1-3500, 335 Å 0.4-1000, 1600 Å 10-800,
#: 1700 Å 220-5000. The ceilings of 131 and 193 Å are raised to 2e4 DN/s from the real 2014
#: sample (aia/sdoml_binned, 4×4-binned SDOML): flare cores reach 1.3e4 (131 Å) and 1.5e4
#: (193 Å) DN/s and 46 of 126 (131 Å) and 39 of 65 (193 Å) frames exceed the SDOBenchmark
#: ceiling, which would flatten the flares the class labels are about. The floors sit below
#: the quiet-disk median of the sample (5.5 DN/s at 131 Å, 45 DN/s at 193 Å), so off-disk sky
#: goes to -1.
DEFAULT_SCALINGS: dict[int, AIAScaling] = {
    94: AIAScaling.from_dn_per_s(0.1, 800.0),
    131: AIAScaling.from_dn_per_s(0.7, 2.0e4),
    171: AIAScaling.from_dn_per_s(5.0, 3500.0),
    193: AIAScaling.from_dn_per_s(20.0, 2.0e4),
    211: AIAScaling.from_dn_per_s(7.0, 3500.0),
    304: AIAScaling.from_dn_per_s(0.1, 3500.0),
    335: AIAScaling.from_dn_per_s(0.4, 1000.0),
    1600: AIAScaling.from_dn_per_s(10.0, 800.0),
    1700: AIAScaling.from_dn_per_s(220.0, 5000.0),
}


def scale_aia(
    data: np.ndarray,
    wavelength: int,
    units: str,
    scaling: AIAScaling | None = None,
) -> np.ndarray:
    """Intensity → network units in [-1, 1] (no resizing, no masking).

    DN/s: the log scaling of :class:`AIAScaling` (``scaling`` or the channel default),
    ``x = 2·clip((log10 I − log10_min)/(log10_max − log10_min), 0, 1) − 1``; non-finite values go
    to -1. ``"display"`` (browse): ``x = 2·clip(v, 0, 1) − 1`` (NaN → -1).

    Parameters
    ----------
    data : np.ndarray
        Image, any shape, in ``units``.
    wavelength : int
        AIA channel, Å (for the default scaling).
    units : str
        ``"DN/s"`` or ``"display"`` (see :func:`is_display`).
    scaling : AIAScaling, optional
        Overrides the channel default.

    Returns
    -------
    np.ndarray
        float32 of the input's shape, in [-1, 1].

    Raises
    ------
    KeyError
        For a channel without a default scaling when ``scaling`` is None (DN/s only).
    """
    a = np.asarray(data, dtype=np.float64)
    if is_display(units):
        x = 2.0 * np.clip(np.nan_to_num(a, nan=0.0), 0.0, 1.0) - 1.0
        return x.astype(np.float32)
    s = scaling or AIAScaling.for_channel(wavelength)
    floor = 10.0**s.log10_min
    with np.errstate(invalid="ignore"):
        a = np.where(np.isfinite(a), np.maximum(a, floor), floor)
    u = (np.log10(a) - s.log10_min) / (s.log10_max - s.log10_min)
    return (np.clip(u, 0.0, 1.0) * 2.0 - 1.0).astype(np.float32)


def to_intensity(
    x: np.ndarray,
    wavelength: int,
    units: str = "DN/s",
    scaling: AIAScaling | None = None,
) -> np.ndarray:
    """Inverse of :func:`scale_aia`: network units in [-1, 1] → intensity.

    DN/s: ``I = 10**(log10_min + (clip(x, -1, 1) + 1)/2 · (log10_max − log10_min))``, exact
    inside the clip range (values that were clipped come back at the floor or ceiling).
    ``"display"``: ``v = (clip(x, -1, 1) + 1)/2``. For writing generated images in physical units.

    Parameters
    ----------
    x : np.ndarray
        Network-unit image, any shape.
    wavelength : int
        AIA channel, Å (for the default scaling).
    units : str, optional
        ``"DN/s"`` (default) or ``"display"``.
    scaling : AIAScaling, optional
        Overrides the channel default.

    Returns
    -------
    np.ndarray
        float64 of ``x``'s shape, DN/s or display units in [0, 1].

    Raises
    ------
    KeyError
        For a channel without a default scaling when ``scaling`` is None (DN/s only).
    """
    a = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    u = (a + 1.0) / 2.0
    if is_display(units):
        return u
    s = scaling or AIAScaling.for_channel(wavelength)
    return 10.0 ** (s.log10_min + u * (s.log10_max - s.log10_min))


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    ny, nx = image.shape
    if ny == size and nx == size:
        return image
    if ny % size == 0 and nx % size == 0 and ny // size == nx // size:
        from skimage.transform import downscale_local_mean

        f = ny // size
        return downscale_local_mean(image, (f, f))
    from skimage.transform import resize

    return resize(image, (size, size), order=1, anti_aliasing=size < ny, preserve_range=True, mode="edge")


def preprocess_aia(image: AIAImage | str | Path | Any, size: int, scaling: AIAScaling | None = None) -> np.ndarray:
    """An AIA image as network input: float32 (size, size) in [-1, 1].

    ``image`` is an :class:`AIAImage`, a file (FITS or browse image) or a ``sunpy.map.Map``
    (both read by :func:`read_aia`).

    Steps: (1) masked and non-finite pixels are filled with the dark level (the floor
    ``10**log10_min`` for DN/s, 0 for display intensities) so that neither the browse time
    stamp nor NaN reach the result; (2) the image is resized in linear intensity (block mean
    when the side is an integer multiple of ``size``, as SDOML bins its images; otherwise
    ``skimage.transform.resize`` with anti-aliasing); (3) :func:`scale_aia` (log scaling for
    DN/s with ``scaling`` or the channel default, ``2v − 1`` for display data).

    Raises
    ------
    ValueError : a non-square image (full-disk AIA images are square; resizing would
        distort the disk) or ``size < 1``.
    KeyError : a DN/s channel without default scaling and ``scaling`` None.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if not isinstance(image, AIAImage):
        image = read_aia(image)
    data = np.asarray(image.data, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] != data.shape[1]:
        raise ValueError(f"{image.path}: preprocess_aia needs a square 2-D image, got shape {data.shape}")
    if is_display(image.units):
        fill = BROWSE_FILL_VALUE
    else:
        s = scaling or AIAScaling.for_channel(image.wavelength)
        fill = 10.0**s.log10_min
        scaling = s
    valid = np.isfinite(data)
    if image.mask is not None:
        valid &= np.asarray(image.mask, dtype=bool)
    data = np.where(valid, data, fill)
    if not is_display(image.units):
        data = np.maximum(data, fill)  # negative DN/s (read noise after dark subtraction)
    small = _resize(data, int(size))
    return scale_aia(small, image.wavelength, image.units, scaling)
