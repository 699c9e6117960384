"""Magnetogram preprocessing for the networks (Chatterjee et al. 2025, §Data).

The paper interpolates every patch to 128×128 and scales the field by 1000 G, clipping to
[-1, 1] (i.e. ±1000 G). Here the order is: NaN → 0 G, clip to ±``clip_gauss``, divide by
``clip_gauss``, then resize with bilinear interpolation and anti-aliasing
(``skimage.transform.resize``), so the output stays in [-1, 1]. Non-square patches are
stretched to a square, as in the paper.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from skimage.transform import resize

__all__ = ["preprocess_br", "preprocess_stack"]


def preprocess_br(Br: np.ndarray, size: int, clip_gauss: float = 1000.0) -> np.ndarray:
    """Scale, clip and resize one field map to a square network input.

    Parameters
    ----------
    Br : (ny, nx) field, G (radial or line-of-sight); NaN allowed (set to 0 G).
    size : output side N, pixels (≥ 8).
    clip_gauss : clip level and scale, G (> 0); paper 1000 G.

    Returns
    -------
    (size, size) float32 array of B / clip_gauss in [-1, 1] (dimensionless).

    Raises
    ------
    ValueError : ``Br`` is not 2-D or is empty, ``size`` < 8, or ``clip_gauss`` ≤ 0.
    """
    arr = np.asarray(Br)
    if arr.ndim != 2:
        raise ValueError(f"preprocess_br needs a 2-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("preprocess_br got an empty array")
    size = int(size)
    if size < 8:
        raise ValueError(f"image size must be at least 8 pixels, got {size}")
    if not (np.isfinite(clip_gauss) and clip_gauss > 0):
        raise ValueError(f"clip_gauss must be a positive number of gauss, got {clip_gauss}")
    x = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=clip_gauss, neginf=-clip_gauss)
    x = np.clip(x, -clip_gauss, clip_gauss) / clip_gauss
    if x.shape != (size, size):
        x = resize(x, (size, size), order=1, anti_aliasing=True, preserve_range=True, mode="reflect")
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def preprocess_stack(arrays: Sequence[np.ndarray], size: int, clip_gauss: float = 1000.0) -> np.ndarray:
    """Apply :func:`preprocess_br` to each map and stack them.

    Parameters
    ----------
    arrays : sequence of 2-D field maps, G (shapes may differ).
    size, clip_gauss : as in :func:`preprocess_br`.

    Returns
    -------
    (n, 1, size, size) float32 in [-1, 1]; (0, 1, size, size) for an empty sequence.

    Raises
    ------
    ValueError : as :func:`preprocess_br`, with the index of the offending array.
    """
    out = np.empty((len(arrays), 1, int(size), int(size)), dtype=np.float32)
    if len(arrays) == 0 and int(size) < 8:
        raise ValueError(f"image size must be at least 8 pixels, got {size}")
    for i, a in enumerate(arrays):
        try:
            out[i, 0] = preprocess_br(a, size, clip_gauss)
        except ValueError as exc:
            raise ValueError(f"array {i}: {exc}") from None
    return out
