"""Physical parameters of (generated or real) radial-field magnetograms.

Source: Chatterjee, Muñoz-Jaramillo & Malanushenko (2025), paragraph "Interpretable
Generation of Magnetic Patches" (TUF, PSEP, R with a ±150 G threshold) and paragraph
"Querying Generated Image" (TPF, TNF); Schrijver (2007, ApJ 655, L117) and Bobra et al. (2014,
Sol. Phys. 289, 3549; SHARP ``R_VALUE``) for :func:`schrijver_r`. Tilt and leading polarity are
the usual companions, computed from the same thresholded polarity masks.

Definitions (threshold ``t``; ``t = 0.15`` on the paper's images, which are B / 1000 G):

* ``pos = B > t``, ``neg = B < -t``.
* ``TUF`` = Σ |B| over **all** pixels ("sum unsigned field strength over all the image pixels").
* ``TPF`` = Σ B over ``pos``; ``TNF`` = Σ |B| over ``neg`` (both ≥ 0): the paper's text
  ("integrated field strength within positive (TPF) and negative (TNF) polarity regions", the
  regions of the ±150 G threshold). This is the default, ``definition="paper"``.
  ``definition="authors_code"`` gives instead what the authors' code computes
  (``calculate_params_`` in ``utils.py`` of github.com/subhamoysgit/Generative_Interrogator,
  the function its ``main`` runs over the SHARPs): the **mean** |B| over the pixels with
  B > 0 (TPF) or B < 0 (TNF), **without** the threshold; NaN when there is no such pixel.
  It is a field strength (image units), not a flux; no pixel area enters.
* ``PSEP`` = distance between the field-weighted centroids of ``pos`` (weights B) and ``neg``
  (weights |B|); NaN when a polarity is empty.
* ``R`` — **the paper's R** ("R represents a total unsigned field in subregions with a high
  gradient of the field with polarity transition"; computed "following Schrijver 2007"):
  dilate ``pos`` and ``neg`` with a k×k square kernel (k odd; zero outside the image),
  intersect, and sum |B| inside the intersection. On the preprocessed N×N image; k = 7 at
  N = 128 as the authors' code (``calculate_srij_R``), the same physical area at other N
  (:meth:`helioforge.interrogate.config.ParamConfig.dilation_px`). No Gaussian weighting and no log:
  it is **not** Schrijver's R nor the SHARP ``R_VALUE``; units are image units × pixels.
* ``R_schrijver`` — **Schrijver's (2007) R** on a native-resolution patch in physical units
  (:func:`schrijver_r`, reported by :func:`physical_params`): the same ±150 G masks on the
  field binned to MDI-like 1.44 Mm pixels, dilated by 3×3, intersected (the strong-gradient
  polarity-inversion-line map), convolved with a normalised Gaussian of 15 Mm FWHM (the
  weighting map W), R = Σ |B|·W·(pixel area) in Mx, reported as log10(R / Mx).
* ``tilt``: x = column index (westward), y = row index (northward; images shown with
  ``origin='lower'``). The leading polarity is the one whose centroid has the larger x; tilt
  is ``atan2(dy, dx)`` in degrees of the vector from the following to the leading centroid,
  in [-90, 90]. NaN when a polarity is empty. When both centroids share the same x exactly,
  the leading polarity is undefined: tilt is reported as +90 (or 0 if the centroids coincide)
  and ``leading_sign`` as 0.
* ``leading_sign``: +1 if the positive centroid leads, -1 if the negative one does, 0 when
  undefined (a polarity is empty, or equal centroid x).

:func:`param_definitions` (and the constant :data:`PARAM_DEFINITIONS`, the default) names the
definition behind every key in one line each, for reports; :func:`param_units` gives the units.

Entry points sharing these definitions:

* :func:`compute_params` — batched, the production path: one fused compiled (numba) pass per
  image on the CPU, vectorised torch with max-pool dilation on other devices;
* :func:`physical_params` — one native-resolution patch in Gauss → Mx / Mm / deg, plus
  ``R_schrijver`` from :func:`schrijver_r`;
* :func:`reference_params` — a plain, independent NumPy/SciPy per-image implementation,
  kept as the benchmark baseline and as a cross-check in the tests.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from helioforge.physics.threads import run_in_slices

__all__ = [
    "is_active",
    "PARAM_NAMES",
    "PARAM_DEFINITIONS",
    "DEFINITIONS",
    "DEFAULT_DEFINITION",
    "SCHRIJVER_NAMES",
    "param_definitions",
    "param_units",
    "compute_params",
    "params_table",
    "physical_params",
    "schrijver_r",
    "reference_params",
    "kernel_px_for_mm",
    "as_value",
]

PARAM_NAMES: tuple[str, ...] = ("TUF", "TPF", "TNF", "PSEP", "R", "tilt", "leading_sign")

#: Names of the TPF/TNF definitions: the paper's text (default) and the authors' code.
DEFINITIONS: tuple[str, ...] = ("paper", "authors_code")
DEFAULT_DEFINITION = "paper"

#: Keys :func:`physical_params` adds from :func:`schrijver_r`.
SCHRIJVER_NAMES: tuple[str, ...] = ("R_schrijver", "R_schrijver_sharp")

#: Schrijver (2007): MDI full-disk pixels (1.98″ ≈ 1.44 Mm at disc centre), 3×3 dilation,
#: Gaussian weighting of 15 Mm FWHM. SHARP bins HMI by round(2″ / CDELT) = 4 to match.
SCHRIJVER_PIXEL_MM = 1.44
SCHRIJVER_FWHM_MM = 15.0

_FLUX_NAMES = ("TUF", "TPF", "TNF", "R")
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.3548

_BASE_DEFINITIONS = {
    "TUF": "total unsigned field: sum |B| over all pixels (paper)",
    "TPF": "total positive flux: sum B over pixels with B > threshold (paper's text)",
    "TNF": "total negative flux: sum |B| over pixels with B < -threshold (paper's text)",
    "PSEP": "distance between field-weighted centroids of the two polarities (|B| > threshold; paper)",
    "R": ("paper's R (Chatterjee et al. 2025, after Schrijver 2007): sum |B| inside the intersection "
          "of the k x k-dilated +/-threshold polarity masks of the N x N image (k = 7 at N = 128); "
          "no Gaussian weighting, not log - not the SHARP R_VALUE"),
    "tilt": "angle of the following->leading centroid vector, atan2(dy, dx), x west, y north",
    "leading_sign": "+1 positive polarity leads (larger x), -1 negative leads, 0 undefined",
    "R_schrijver": ("Schrijver (2007) R: sum |B| x W x pixel area over the native patch binned to "
                    "1.44 Mm pixels, W = (3x3-dilated +/-150 G masks intersected) convolved with a "
                    "Gaussian of 15 Mm FWHM; log10(R / Mx), comparable to SHARP R_VALUE"),
    "R_schrijver_sharp": ("the same sum in the SHARP R_VALUE convention: log10(sum |B|[G] x W) over "
                          "the 1.44 Mm pixels, no pixel area, 0 when the sum is < 1"),
}

_AUTHORS_CODE_DEFINITIONS = {
    "TPF": ("mean |B| over pixels with B > 0, no threshold (authors' code, calculate_params_; "
            "a mean field strength, not a flux)"),
    "TNF": ("mean |B| over pixels with B < 0, no threshold (authors' code, calculate_params_; "
            "a mean field strength, not a flux)"),
}


def _check_definition(definition: str) -> str:
    if definition not in DEFINITIONS:
        raise ValueError(f"definition must be one of {DEFINITIONS}, got {definition!r}")
    return definition


def param_definitions(definition: str = DEFAULT_DEFINITION) -> dict[str, str]:
    """One line per parameter key naming the definition it follows (for reports and tables).

    Parameters
    ----------
    definition : ``"paper"`` (default: TPF/TNF = sums above the threshold, as the paper's text)
        or ``"authors_code"`` (TPF/TNF = mean |B| over B > 0 / B < 0 without threshold, as
        the authors' code).

    Returns
    -------
    dict[str, str] with the keys :data:`PARAM_NAMES` followed by :data:`SCHRIJVER_NAMES`,
    plus ``"definition"`` (the name passed). A fresh dict; edit it freely.

    Raises
    ------
    ValueError : unknown ``definition``.

    Source: Chatterjee et al. (2025), "Interpretable Generation" and "Querying"; authors' code
    ``utils.calculate_params_``; Schrijver (2007); Bobra et al. (2014) for ``R_VALUE``.
    """
    _check_definition(definition)
    out = dict(_BASE_DEFINITIONS)
    if definition == "authors_code":
        out.update(_AUTHORS_CODE_DEFINITIONS)
    out["definition"] = definition
    return out


#: :func:`param_definitions` of the default (``"paper"``) definition.
PARAM_DEFINITIONS: dict[str, str] = param_definitions(DEFAULT_DEFINITION)


def param_units(space: str = "image", definition: str = DEFAULT_DEFINITION) -> dict[str, str]:
    """Unit string of every parameter key.

    Parameters
    ----------
    space : ``"image"`` — :func:`compute_params` on the paper's preprocessed N×N images with
        ``pixel_size = field_scale = 1`` (field unit 1000 G = the 1000 G clip); or
        ``"physical"`` — :func:`physical_params` on a native patch in Gauss.
    definition : as :func:`param_definitions`.

    Returns
    -------
    dict[str, str] for :data:`PARAM_NAMES` (and, for ``"physical"``, :data:`SCHRIJVER_NAMES`).

    Raises
    ------
    ValueError : unknown ``space`` or ``definition``.

    Source: the definitions of this module (Chatterjee et al. 2025; Schrijver 2007).
    """
    _check_definition(definition)
    if space == "image":
        flux, mean, length = "kG px (image units x N x N pixels)", "kG (image units)", "px"
        out = {k: flux for k in _FLUX_NAMES}
    elif space == "physical":
        flux, mean, length = "Mx", "G", "Mm"
        out = {k: flux for k in _FLUX_NAMES}
        out["R_schrijver"] = "log10(Mx)"
        out["R_schrijver_sharp"] = "log10(G x 1.44 Mm pixel), SHARP R_VALUE convention"
    else:
        raise ValueError(f"space must be 'image' or 'physical', got {space!r}")
    if definition == "authors_code":
        out["TPF"] = out["TNF"] = mean
    out.update(PSEP=length, tilt="deg", leading_sign="")
    return {k: out[k] for k in (*PARAM_NAMES, *(SCHRIJVER_NAMES if space == "physical" else ()))}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _check_kernel(dilation_px: int) -> int:
    k = int(dilation_px)
    if k != dilation_px or k < 1 or k % 2 == 0:
        raise ValueError(f"dilation_px must be a positive odd integer, got {dilation_px!r}")
    return k


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"threshold must be finite and >= 0, got {threshold!r}")
    return t


def _as_batch(images: Any) -> torch.Tensor:
    """Return a floating ``(B, 1, H, W)`` tensor view of ``images`` (no dtype change yet)."""
    if isinstance(images, np.ndarray):
        if not np.issubdtype(images.dtype, np.floating):
            raise ValueError(f"images must be a floating array, got dtype {images.dtype}")
        images = torch.from_numpy(np.ascontiguousarray(images))
    elif not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor or numpy.ndarray, got {type(images).__name__}")
    if not torch.is_floating_point(images):
        raise ValueError(f"images must be a floating tensor, got dtype {images.dtype}")
    if images.ndim == 3:
        images = images.unsqueeze(1)
    elif images.ndim == 4:
        if images.shape[1] != 1:
            raise ValueError(f"images of shape (B, C, H, W) must have C == 1, got shape {tuple(images.shape)}")
    else:
        raise ValueError(f"images must have shape (B, 1, H, W) or (B, H, W), got ndim={images.ndim}")
    if images.shape[-1] == 0 or images.shape[-2] == 0:
        raise ValueError(f"images must have non-empty spatial dimensions, got shape {tuple(images.shape)}")
    return images


def kernel_px_for_mm(r_kernel_mm: float, pixel_size_mm: float) -> int:
    """Nearest odd kernel side (≥ 3 pixels) to ``r_kernel_mm / pixel_size_mm``.

    Parameters
    ----------
    r_kernel_mm : float > 0, kernel side, Mm.
    pixel_size_mm : float > 0, pixel side, Mm.

    Returns
    -------
    int, odd, ≥ 3 (11 for 4.3 Mm on SHARP CEA 0.364 Mm pixels, 3 on 1.44 Mm pixels).

    Raises
    ------
    ValueError : non-positive or non-finite inputs.

    Source: Schrijver (2007) uses a 3×3 kernel on 1.44 Mm MDI pixels, i.e. ~4.3 Mm.
    """
    if not (math.isfinite(r_kernel_mm) and math.isfinite(pixel_size_mm)) or r_kernel_mm <= 0 or pixel_size_mm <= 0:
        raise ValueError(f"r_kernel_mm and pixel_size_mm must be > 0, got {r_kernel_mm!r}, {pixel_size_mm!r}")
    x = r_kernel_mm / pixel_size_mm
    k = 2 * int(math.floor((x - 1.0) / 2.0 + 0.5)) + 1
    return max(3, k)


# --------------------------------------------------------------------------------------------
# batched torch implementation
# --------------------------------------------------------------------------------------------
def compute_params(
    images: torch.Tensor | np.ndarray,
    threshold: float = 0.15,
    dilation_px: int = 7,
    pixel_size: float = 1.0,
    field_scale: float = 1.0,
    definition: str = DEFAULT_DEFINITION,
) -> dict[str, torch.Tensor]:
    """Physical parameters of a batch of magnetograms, fully vectorised in torch.

    Parameters
    ----------
    images : torch.Tensor or numpy.ndarray, shape ``(B, 1, H, W)`` or ``(B, H, W)``, floating.
        Radial field; on the paper's preprocessed images the unit is 1000 G (so values lie in
        [-1, 1]). Rows are y (north, up with ``origin='lower'``), columns are x (west).
        NaN pixels are not replaced (they propagate into TUF); clean them first.
    threshold : float
        Polarity threshold ``t`` in image units (0.15 = 150 G on the paper's images), ≥ 0.
    dilation_px : int
        Odd side ``k`` of the square dilation kernel for the paper's R (authors' code: 7 at
        N = 128; for other N use ``ParamConfig.dilation_px(N)``, the same physical area).
        Pixels outside the image count as empty.
    pixel_size : float
        Side of one pixel in the caller's length unit; flux-type outputs are multiplied by
        ``pixel_size**2`` and PSEP by ``pixel_size``.
    field_scale : float
        Multiplier turning image units into the caller's field unit (e.g. 1000 for Gauss on
        the paper's images); applied to flux-type outputs only (the threshold stays in image
        units).
    definition : str
        ``"paper"`` (default): TPF / TNF are sums over the pixels beyond ±threshold, as the
        paper's text. ``"authors_code"``: TPF / TNF are the mean |B| over the pixels with
        B > 0 / B < 0, no threshold (authors' ``calculate_params_``), times ``field_scale``
        only (a field strength: no ``pixel_size²``); NaN when no pixel has that sign. The
        other keys do not depend on it. :func:`param_definitions` names each definition.

    Returns
    -------
    dict[str, torch.Tensor]
        Keys :data:`PARAM_NAMES`; each a float64 tensor of shape ``(B,)`` on the input device
        (on devices without float64 support, such as MPS, the work is done on the CPU and the
        results are CPU tensors).

        * ``TUF``, ``TPF``, ``TNF``, ``R``: Σ(field_scale·B)·pixel_size² (image units × pixels
          with the defaults); ``R`` is the paper's R (no Gaussian weighting, not log10 — see
          :func:`schrijver_r` for Schrijver's / SHARP's). With ``definition="authors_code"``
          ``TPF`` / ``TNF`` are mean field_scale·|B| instead.
        * ``PSEP``: pixels × pixel_size; NaN when a polarity is empty.
        * ``tilt``: degrees in [-90, 90]; NaN when a polarity is empty.
        * ``leading_sign``: +1, -1, or 0 (undefined).

    Raises
    ------
    ValueError
        Wrong ndim, C ≠ 1, empty spatial dimensions, non-floating dtype, negative threshold,
        even / non-positive ``dilation_px``, or unknown ``definition``.

    Notes
    -----
    Two implementations of the same sums, equal to rtol 1e-9 (tested; only the summation
    order differs) and to the NumPy/SciPy :func:`reference_params`:

    * **CPU tensors** (and NumPy arrays): one fused, compiled (numba) kernel reads each image
      once and produces every parameter from it: Σ|B|, the thresholded sums, the centroid
      moments, the polarity code of each row and its k-wide row dilation in pass 1, then the
      k-row OR (the k×k dilation of both masks at once) and the R sum in pass 2 on the cached
      image, only on rows whose window holds both polarities. Comparisons and accumulations
      are float64 (the threshold is compared as in float64 for float32 input). The batch is
      split over ``torch.get_num_threads()`` threads. The first call compiles the kernel
      (a few seconds; cached on disk afterwards).
    * **Other devices** (CUDA): element-wise torch in the input dtype with float64
      reductions; the dilation is ``F.max_pool2d`` on the two masks stacked as channels
      (:func:`_dilate_maxpool`; k×k square, stride 1, padding k//2, so zero outside the
      image), bit-for-bit equal to ``scipy.ndimage.binary_dilation`` with ``ones((k, k))``
      (tested). MPS tensors are computed on the CPU.

    Half-precision input is widened to float32 (exact). Works under ``torch.no_grad()``; no
    autograd is needed (outputs carry no graph).

    Source
    ------
    Chatterjee et al. (2025), "Interpretable Generation of Magnetic Patches" (TUF, PSEP, R
    after Schrijver 2007) and "Querying Generated Image" (TPF, TNF); authors' code
    ``utils.calculate_srij_R`` (R, 7×7 kernel) and ``utils.calculate_params_``
    (``definition="authors_code"``).
    """
    x = _as_batch(images)
    t = _check_threshold(threshold)
    k = _check_kernel(dilation_px)
    _check_definition(definition)
    if x.device.type == "mps":  # no float64 on MPS
        x = x.cpu()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float32)  # half / bfloat16: widen (exact)
    if x.device.type == "cpu":
        sums = _fused_sums_cpu(x, t, k, authors=definition == "authors_code")
    else:
        sums = _torch_sums(x, t, k, dilate="maxpool", authors=definition == "authors_code")
    return _finish(sums, pixel_size, field_scale, definition)


def _compute_params_torch(
    images: Any,
    threshold: float = 0.15,
    dilation_px: int = 7,
    pixel_size: float = 1.0,
    field_scale: float = 1.0,
    definition: str = DEFAULT_DEFINITION,
    dilate: str = "shift",
) -> dict[str, torch.Tensor]:
    """The batched all-torch path (before issue 16 part 2 the only one): kept for non-CPU
    devices, for the benchmark (``dilate="shift"`` on a CPU tensor is the former
    :func:`compute_params` operation for operation) and as a cross-check in the tests."""
    x = _as_batch(images)
    t = _check_threshold(threshold)
    k = _check_kernel(dilation_px)
    _check_definition(definition)
    if x.dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float32)
    return _finish(_torch_sums(x, t, k, dilate=dilate, authors=definition == "authors_code"), pixel_size, field_scale, definition)


def _torch_sums(x: torch.Tensor, t: float, k: int, dilate: str = "shift", authors: bool = True) -> dict[str, torch.Tensor]:
    """Per-image float64 sums of the batched all-torch path (any device).

    ``dilate``: ``"shift"`` (separable OR of shifted uint8 masks, :func:`_dilate`, fastest on
    CPU) or ``"maxpool"`` (:func:`_dilate_maxpool`, ``F.max_pool2d`` on the two masks; used on
    accelerators). Both are bit-for-bit the same dilation (tested).
    """
    f64 = torch.float64
    dev = x.device
    # Polarity masks with the threshold applied exactly as in float64 (no rounding of t).
    pos, neg = _polarity_masks(x, t)
    # Element-wise work stays in the input dtype (abs/where are exact); every reduction
    # accumulates in float64.
    absb = x.abs()
    zero = torch.zeros((), dtype=x.dtype, device=dev)
    wp = torch.where(pos, x, zero)  # B on positive pixels
    wn = torch.where(neg, absb, zero)  # |B| on negative pixels
    cols = torch.arange(x.shape[-1], dtype=f64, device=dev)
    rows = torch.arange(x.shape[-2], dtype=f64, device=dev)
    # Row / column marginals give the flux and both centroid moments in two passes.
    col_p = wp.sum(dim=(1, 2), dtype=f64)  # (B, W)
    row_p = wp.sum(dim=(1, 3), dtype=f64)  # (B, H)
    col_n = wn.sum(dim=(1, 2), dtype=f64)
    row_n = wn.sum(dim=(1, 3), dtype=f64)
    out = {
        "tuf": absb.sum(dim=(1, 2, 3), dtype=f64),
        "sp": col_p.sum(dim=1),
        "sn": col_n.sum(dim=1),
        "mxp": (col_p * cols).sum(dim=1),  # x = column index
        "myp": (row_p * rows).sum(dim=1),  # y = row index
        "mxn": (col_n * cols).sum(dim=1),
        "myn": (row_n * rows).sum(dim=1),
        "has_p": pos.flatten(1).any(dim=1),
        "has_n": neg.flatten(1).any(dim=1),
    }
    # R: dilate both masks with a k×k square (zero border), intersect, integrate |B|.
    if dilate == "maxpool":
        both = _dilate_maxpool(torch.cat([pos, neg], dim=1), k)
        inter = both[:, :1] & both[:, 1:]
    else:
        # Both masks travel as bits of one uint8 code (1 = pos, 2 = neg); OR-dilation acts on
        # each bit independently, so one pass dilates both and the intersection is code == 3.
        code = pos.to(torch.uint8) | (neg.to(torch.uint8) << 1)
        inter = _dilate(code, k) == 3
    out["r"] = torch.where(inter, absb, zero).sum(dim=(1, 2, 3), dtype=f64)
    if authors:
        gt, lt = x > 0, x < 0
        out["ngt"] = gt.flatten(1).sum(dim=1).to(f64)
        out["nlt"] = lt.flatten(1).sum(dim=1).to(f64)
        out["sgt"] = torch.where(gt, x, zero).sum(dim=(1, 2, 3), dtype=f64)
        out["slt"] = torch.where(lt, absb, zero).sum(dim=(1, 2, 3), dtype=f64)
    return out


def _finish(s: dict[str, torch.Tensor], pixel_size: float, field_scale: float, definition: str) -> dict[str, torch.Tensor]:
    """Parameters from the per-image sums of :func:`_torch_sums` / :func:`_fused_sums_cpu`."""
    f64 = torch.float64
    sum_p, sum_n, has_p, has_n = s["sp"], s["sn"], s["has_p"], s["has_n"]
    nan = torch.tensor(float("nan"), dtype=f64, device=sum_p.device)
    ok = has_p & has_n
    safe_p = torch.where(has_p, sum_p, torch.ones_like(sum_p))
    safe_n = torch.where(has_n, sum_n, torch.ones_like(sum_n))
    xp, yp = s["mxp"] / safe_p, s["myp"] / safe_p
    xn, yn = s["mxn"] / safe_n, s["myn"] / safe_n
    dx = xp - xn
    dy = yp - yn
    psep = torch.where(ok, torch.sqrt(dx * dx + dy * dy), nan) * float(pixel_size)
    # Vector following -> leading always has dx >= 0.
    flip = dx < 0
    vx = torch.where(flip, -dx, dx)
    vy = torch.where(flip, -dy, dy)
    vy = torch.where((vx == 0) & (vy != 0), vy.abs(), vy)  # equal x: report +90 by convention
    tilt = torch.where(ok, torch.rad2deg(torch.atan2(vy, vx)), nan)
    sign = torch.where(dx > 0, 1.0, torch.where(dx < 0, -1.0, 0.0)).to(f64)
    leading = torch.where(ok, sign, torch.zeros_like(sign))
    scale = float(field_scale) * float(pixel_size) ** 2
    if definition == "authors_code":
        # mean |B| over B > 0 / B < 0 without threshold (a field strength: no pixel area)
        n_gt, n_lt = s["ngt"], s["nlt"]
        tpf = torch.where(n_gt > 0, s["sgt"] / n_gt.clamp(min=1), nan) * float(field_scale)
        tnf = torch.where(n_lt > 0, s["slt"] / n_lt.clamp(min=1), nan) * float(field_scale)
    else:
        tpf, tnf = sum_p * scale, sum_n * scale
    return {
        "TUF": s["tuf"] * scale,
        "TPF": tpf,
        "TNF": tnf,
        "PSEP": psep,
        "R": s["r"] * scale,
        "tilt": tilt,
        "leading_sign": leading,
    }


# --------------------------------------------------------------------------------------------
# fused CPU kernel (numba): every parameter in one pass over each image
# --------------------------------------------------------------------------------------------
_NB_FASTMATH = {"contract", "reassoc", "nsz"}  # no nnan / ninf: NaN must propagate into TUF
_NB_FIELDS = ("tuf", "sp", "sn", "mxp", "myp", "mxn", "myn", "anyp", "anyn", "r", "sgt", "ngt", "slt", "nlt")
_NB_KERNEL: Any = None


# Each loop of the kernel is its own small function: numba/LLVM vectorise these short loops
# reliably, and measured 2x faster than the same loops written inline in one function.
def _nb_row_code(xr, tp, tn, cr):  # pragma: no cover - compiled by numba
    """Polarity code of one row into ``cr`` (1: x >= tp, 2: x <= tn, 0 else); returns its OR."""
    flag = 0
    for c in range(xr.shape[0]):
        v = xr[c]
        cr[c] = (v >= tp) + 2 * (v <= tn)
    for c in range(xr.shape[0]):
        flag |= cr[c]
    return flag


def _nb_row_abs(xr):  # pragma: no cover - compiled by numba
    """Σ |x| of one row, float64."""
    s = 0.0
    for c in range(xr.shape[0]):
        s += abs(np.float64(xr[c]))
    return s


def _nb_row_pos(xr, tp, colf):  # pragma: no cover - compiled by numba
    """(Σ x, Σ x·col) over x >= tp of one row, float64."""
    s = 0.0
    m = 0.0
    for c in range(xr.shape[0]):
        v = xr[c]
        w = np.float64(v) if v >= tp else 0.0
        s += w
        m += w * colf[c]
    return s, m


def _nb_row_neg(xr, tn, colf):  # pragma: no cover - compiled by numba
    """(Σ |x|, Σ |x|·col) over x <= tn of one row, float64."""
    s = 0.0
    m = 0.0
    for c in range(xr.shape[0]):
        v = xr[c]
        w = -np.float64(v) if v <= tn else 0.0
        s += w
        m += w * colf[c]
    return s, m


def _nb_row_signs(xr):  # pragma: no cover - compiled by numba
    """(Σ x over x > 0, count, Σ |x| over x < 0, count) of one row (authors' TPF / TNF)."""
    sg = 0.0
    sl = 0.0
    ng = 0
    nl = 0
    for c in range(xr.shape[0]):
        d = np.float64(xr[c])
        sg += d if d > 0.0 else 0.0
        sl += -d if d < 0.0 else 0.0
        ng += 1 if d > 0.0 else 0
        nl += 1 if d < 0.0 else 0
    return sg, ng, sl, nl


def _nb_row_or(src, dst, k):  # pragma: no cover - compiled by numba
    """``dst[c] = OR(src[c : c + k])``: the k-wide dilation of a zero-padded code row."""
    n = dst.shape[0]
    for c in range(n):
        dst[c] = src[c]
    for j in range(1, k):
        for c in range(n):
            dst[c] |= src[c + j]


def _nb_rows_or(hbuf, r, k, acc):  # pragma: no cover - compiled by numba
    """``acc = OR(hbuf[r : r + k])``: the k-tall dilation of the row-dilated codes."""
    n = acc.shape[0]
    for c in range(n):
        acc[c] = hbuf[r, c]
    for j in range(1, k):
        for c in range(n):
            acc[c] |= hbuf[r + j, c]


def _nb_row_r(xr, acc):  # pragma: no cover - compiled by numba
    """Σ |x| where the dilated code is 3 (both dilated polarities: the intersection)."""
    s = 0.0
    for c in range(xr.shape[0]):
        s += abs(np.float64(xr[c])) if acc[c] == 3 else 0.0
    return s


_NB_HELPERS = ("_nb_row_code", "_nb_row_abs", "_nb_row_pos", "_nb_row_neg", "_nb_row_signs",
               "_nb_row_or", "_nb_rows_or", "_nb_row_r")


def _nb_params_py(x, tp, k, authors, out):  # pragma: no cover - compiled by numba
    """Fused kernel over images ``x`` (B, H, W) float32/float64 → ``out`` (B, 14) float64
    (the columns :data:`_NB_FIELDS`).

    ``tp`` (in the dtype of ``x``) is the smallest value with ``float64(tp) > t``, so
    ``x >= tp`` ⇔ ``float64(x) > t`` and ``x <= -tp`` ⇔ ``float64(x) < -t`` exactly.

    Pass 1, row by row (the only read of the image from memory; the row stays in L1): the
    polarity code of the row (1 = B > t, 2 = B < −t) and its OR, Σ|B|, the thresholded sums
    and their first moments, (``authors``) the sums and counts of B ≷ 0, and the code
    OR-dilated along the row by k into a zero-padded (H + k − 1, W) buffer. Pass 2 (the image
    is now in cache), only on rows whose k-row window holds both polarities: OR of k buffer
    rows = the k×k dilation of both masks at once, and Σ|B| where the code is 3 (the
    intersection). All accumulation is float64.
    """
    nb, nh, nw = x.shape
    h = k // 2
    crow = np.zeros(nw + 2 * h, np.uint8)
    hbuf = np.zeros((nh + 2 * h, nw), np.uint8)
    hflag = np.zeros(nh + 2 * h, np.uint8)
    acc = np.zeros(nw, np.uint8)
    colf = np.arange(nw).astype(np.float64)
    tn = -tp
    for b in range(nb):
        tuf = 0.0
        sp = 0.0
        sn = 0.0
        mxp = 0.0
        myp = 0.0
        mxn = 0.0
        myn = 0.0
        sgt = 0.0
        slt = 0.0
        ngt = 0
        nlt = 0
        flags = 0
        for r in range(nh):
            xr = x[b, r]
            flag = _nb_row_code(xr, tp, tn, crow[h : h + nw])
            tuf += _nb_row_abs(xr)
            s, m = _nb_row_pos(xr, tp, colf)
            sp += s
            mxp += m
            myp += s * r
            s, m = _nb_row_neg(xr, tn, colf)
            sn += s
            mxn += m
            myn += s * r
            if authors:
                sg, ng, sl, nl = _nb_row_signs(xr)
                sgt += sg
                ngt += ng
                slt += sl
                nlt += nl
            flags |= flag
            hflag[h + r] = flag
            _nb_row_or(crow, hbuf[h + r], k)
        rs = 0.0
        if flags == 3:
            for r in range(nh):
                f = 0
                for j in range(k):
                    f |= hflag[r + j]
                if f != 3:
                    continue
                _nb_rows_or(hbuf, r, k, acc)
                rs += _nb_row_r(x[b, r], acc)
        o = out[b]
        o[0] = tuf
        o[1] = sp
        o[2] = sn
        o[3] = mxp
        o[4] = myp
        o[5] = mxn
        o[6] = myn
        o[7] = flags & 1
        o[8] = flags >> 1
        o[9] = rs
        o[10] = sgt
        o[11] = ngt
        o[12] = slt
        o[13] = nlt


def _nb_kernel() -> Any:
    """The compiled :func:`_nb_params_py` (numba, on-disk cache), or None without numba.
    The row helpers are compiled first and replace their Python versions in this module."""
    global _NB_KERNEL
    if _NB_KERNEL is None:
        try:
            import numba
        except ImportError:  # pragma: no cover - numba is a dependency
            _NB_KERNEL = False
        else:
            jit = numba.njit(cache=True, nogil=True, fastmath=_NB_FASTMATH, error_model="numpy")
            g = globals()
            for name in _NB_HELPERS:
                if not hasattr(g[name], "py_func"):
                    g[name] = jit(g[name])
            _NB_KERNEL = jit(_nb_params_py)
    return _NB_KERNEL or None


def _fused_sums_cpu(x: torch.Tensor, t: float, k: int, authors: bool = False) -> dict[str, torch.Tensor]:
    """Per-image sums of a CPU batch with the fused numba kernel, split over
    ``torch.get_num_threads()`` threads (the kernel releases the GIL); falls back to
    :func:`_torch_sums` without numba."""
    kern = _nb_kernel()
    if kern is None:  # pragma: no cover
        return _torch_sums(x, t, k, authors=authors)
    arr = x.detach().reshape(x.shape[0], x.shape[-2], x.shape[-1]).contiguous().numpy()
    nb = arr.shape[0]
    tp = _threshold_above(t, arr.dtype)
    out = np.empty((nb, len(_NB_FIELDS)), dtype=np.float64)

    def run(sl: slice) -> None:
        kern(arr[sl], tp, k, authors, out[sl])

    run_in_slices(run, nb, max(1, min(torch.get_num_threads(), nb // 8)))
    cols = torch.from_numpy(np.ascontiguousarray(out.T))
    s = {name: cols[i] for i, name in enumerate(_NB_FIELDS)}
    s["has_p"] = s["anyp"] > 0
    s["has_n"] = s["anyn"] > 0
    return s


def _dilate_maxpool(masks: torch.Tensor, k: int) -> torch.Tensor:
    """Binary dilation of bool ``(B, C, H, W)`` masks by a k×k square with ``F.max_pool2d``.

    Zero outside the image (``max_pool2d`` pads with −inf, so the border never adds a pixel);
    bit-for-bit equal to :func:`_dilate` and ``scipy.ndimage.binary_dilation`` (tested). The
    masks are pooled as float16 on accelerators and float32 on the CPU (0 / 1 are exact).
    """
    if k == 1:
        return masks.bool()
    dt = torch.float32 if masks.device.type == "cpu" else torch.float16
    return F.max_pool2d(masks.to(dt), k, stride=1, padding=k // 2) > 0


def _threshold_above(t: float, dtype: Any) -> Any:
    """The smallest value of ``dtype`` (float32 / float64) whose float64 value exceeds ``t``:
    ``x >= result`` ⇔ ``float64(x) > t`` for every ``x`` of that dtype."""
    if np.dtype(dtype) == np.float64:
        return np.nextafter(np.float64(t), np.float64(np.inf))
    f = np.float32(t)
    if float(f) <= t:
        f = np.nextafter(f, np.float32(np.inf), dtype=np.float32)
    return f


def _polarity_masks(x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x > t, x < -t)`` with ``t`` compared in float64 even when ``x`` is float32.

    A float32 tensor compared with a Python float compares against ``float32(t)``; instead we
    use the smallest float32 strictly above ``t``, so ``x >= f`` ⇔ ``float64(x) > t``.
    """
    if x.dtype == torch.float64:
        return x > t, x < -t
    f = np.float32(t)
    if float(f) <= t:
        f = np.nextafter(f, np.float32(np.inf), dtype=np.float32)
    f = float(f)
    return x >= f, x <= -f


def _dilate(mask: torch.Tensor, k: int) -> torch.Tensor:
    """Binary (bitwise-OR) dilation of an integer/bool ``(..., H, W)`` mask by a k×k square.

    Zero outside the image. For a 0/1 mask this is identical to
    ``F.max_pool2d(mask.float(), k, stride=1, padding=k//2) > 0`` and to
    ``scipy.ndimage.binary_dilation(mask, np.ones((k, k)))``; on an integer code every bit
    is dilated independently. Computed separably by OR-ing shifted copies with doubling
    window widths (about 2·log2(k) passes), several times faster than ``max_pool2d`` on CPU.
    """
    if k == 1:
        return mask
    h = k // 2
    out = F.pad(mask.to(torch.uint8), (h, h, h, h))
    for dim in (-1, -2):
        width = 1
        while width < k:
            step = min(width, k - width)  # grow the window from `width` to `width + step`
            n = out.shape[dim]
            out = out.narrow(dim, 0, n - step) | out.narrow(dim, step, n - step)
            width += step
    return out


def is_active(images: Any, threshold: float = 0.15, min_area_fraction: float = 0.0025) -> np.ndarray:
    """Whether each image holds an active region: both polarities above ``threshold`` over at
    least ``min_area_fraction`` of the image each (a bipolar strong-field region, as a HARP).

    Parameters
    ----------
    images : (B, 1, H, W) or (B, H, W), array or tensor, in the same units as ``threshold``.
    threshold : polarity threshold (≥ 0; 0.15 = 150 G on the paper's images).
    min_area_fraction : share of the H·W pixels each polarity must cover.

    Returns
    -------
    numpy.ndarray of bool, shape (B,).

    Raises
    ------
    ValueError : as :func:`compute_params`.

    Source: the ±150 G polarity masks of Chatterjee et al. (2025), "Interpretable Generation".
    """
    x = _as_batch(images)
    t = _check_threshold(threshold)
    pos, neg = _polarity_masks(x, t)
    area = x.shape[-1] * x.shape[-2]
    need = min_area_fraction * area
    return ((pos.flatten(1).sum(1) >= need) & (neg.flatten(1).sum(1) >= need)).cpu().numpy()


def params_table(
    images: torch.Tensor | np.ndarray,
    names: Sequence[str] | None = None,
    flux_unit: Any = None,
    length_unit: Any = None,
    **kw: Any,
):
    """:func:`compute_params` as an :class:`astropy.table.Table`, one row per image.

    Parameters
    ----------
    images : as for :func:`compute_params`, shape ``(B, 1, H, W)`` or ``(B, H, W)``.
    names : optional sequence of ``B`` strings, stored as a leading ``names`` column.
    flux_unit, length_unit : optional astropy units (or unit strings) attached to the
        flux-type columns (TUF, TPF, TNF, R; TPF / TNF only under ``definition="paper"``) and
        to PSEP. When omitted, flux columns carry no unit (their description states "image
        units × pixel_size²") and PSEP gets ``pix`` if ``pixel_size`` is 1, else no unit.
    **kw : forwarded to :func:`compute_params` (``threshold``, ``dilation_px``,
        ``pixel_size``, ``field_scale``, ``definition``).

    Returns
    -------
    astropy.table.Table with columns ``[names,] TUF, TPF, TNF, PSEP, R, tilt, leading_sign``
    (float64; ``leading_sign`` int8; ``tilt`` in deg). Each column's ``description`` is its
    :func:`param_definitions` line (R: the paper's R). The table ``meta`` records the
    threshold, kernel, pixel size, field scale and TPF/TNF definition used.

    Raises
    ------
    ValueError : as :func:`compute_params`, or when ``len(names) != B``.

    Source: Chatterjee et al. (2025), "Interpretable Generation" and "Querying"; R after
    Schrijver (2007) as the paper computes it.
    """
    import astropy.units as u
    from astropy.table import Table

    out = compute_params(images, **kw)
    definition = kw.get("definition", DEFAULT_DEFINITION)
    defs = param_definitions(definition)
    flux_names = _FLUX_NAMES if definition == "paper" else ("TUF", "R")
    n = int(out["TUF"].shape[0])
    table = Table()
    if names is not None:
        names = [str(s) for s in names]
        if len(names) != n:
            raise ValueError(f"names has {len(names)} entries for {n} images")
        table["names"] = names
    pixel_size = float(kw.get("pixel_size", 1.0))
    for key in PARAM_NAMES:
        values = out[key].detach().cpu().numpy()
        if key == "leading_sign":
            values = values.astype(np.int8)
        table[key] = values
        col = table[key]
        desc = defs[key]
        if key in flux_names:
            if flux_unit is not None:
                col.unit = u.Unit(flux_unit)
            else:
                desc += " [image units x pixel_size^2]"
        elif key in ("TPF", "TNF"):
            desc += " [image units x field_scale]"
        elif key == "PSEP":
            if length_unit is not None:
                col.unit = u.Unit(length_unit)
            elif pixel_size == 1.0:
                col.unit = u.pix
            else:
                desc += " [pixels x pixel_size]"
        elif key == "tilt":
            col.unit = u.deg
        col.description = desc
    table.meta.update(
        threshold=float(kw.get("threshold", 0.15)),
        dilation_px=int(kw.get("dilation_px", 7)),
        pixel_size=pixel_size,
        field_scale=float(kw.get("field_scale", 1.0)),
        definition=definition,
        source="Chatterjee et al. 2025 (Interpretable Generation); R: the paper's R, after Schrijver 2007",
    )
    return table


# --------------------------------------------------------------------------------------------
# native-resolution patch in physical units
# --------------------------------------------------------------------------------------------
def as_value(value: Any, unit: str, name: str = "value") -> Any:
    """``value`` in ``unit``: an astropy ``Quantity`` is converted, anything else (a plain
    number or array, taken to be in ``unit`` already) is returned unchanged.

    Parameters
    ----------
    value : number, array or ``astropy.units.Quantity`` (e.g. ``150 * u.G``, ``0.36 * u.Mm``,
        a ``Mx/cm2`` map: 1 Mx/cm² = 1 G).
    unit : the unit the caller computes in (``"G"``, ``"Mm"``).
    name : the argument's name, for the message.

    Returns
    -------
    float or numpy.ndarray in ``unit`` (``value`` itself when it carries no unit).

    Raises
    ------
    ValueError : a Quantity whose unit does not convert to ``unit``.

    Examples
    --------
    >>> import astropy.units as u
    >>> as_value(0.015 * u.T, "G"), as_value(150.0, "G")
    (150.0, 150.0)
    """
    if not (hasattr(value, "unit") and hasattr(value, "to_value")):
        return value
    import astropy.units as u

    try:
        out = value.to_value(u.Unit(unit))
    except u.UnitConversionError:
        raise ValueError(f"{name} must be in {unit} (or a unit convertible to it), got {value.unit}") from None
    return float(out) if np.ndim(out) == 0 else np.asarray(out)


def _clean_patch(Br_gauss: Any, mask: np.ndarray | None, name: str = "Br_gauss") -> np.ndarray:
    """2-D float64 copy with NaN/inf → 0 and pixels outside ``mask`` → 0 (ValueError otherwise)."""
    arr = np.asarray(Br_gauss)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (H, W), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must be floating, got dtype {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {arr.shape}")
    arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != arr.shape:
            raise ValueError(f"mask shape {m.shape} does not match {name} shape {arr.shape}")
        arr = np.where(m.astype(bool), arr, 0.0)
    return arr


def _check_positive(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number > 0, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return v


def _block_mean(arr: np.ndarray, f: int) -> np.ndarray:
    """Mean over f×f blocks; the last partial blocks are padded with zeros (as
    ``skimage.measure.block_reduce(arr, (f, f), np.mean)``, which SHARP's R_VALUE code uses)."""
    if f == 1:
        return arr
    ny, nx = arr.shape
    padded = np.pad(arr, ((0, (-ny) % f), (0, (-nx) % f)))
    return padded.reshape(padded.shape[0] // f, f, padded.shape[1] // f, f).mean(axis=(1, 3))


def schrijver_r(
    Br_gauss: np.ndarray,
    pixel_size_mm: float,
    threshold_gauss: float = 150.0,
    fwhm_mm: float = SCHRIJVER_FWHM_MM,
    bin_mm: float | None = SCHRIJVER_PIXEL_MM,
    dilation_mm: float = 4.3,
    mask: np.ndarray | None = None,
    return_maps: bool = False,
) -> dict[str, Any]:
    """Schrijver's (2007) R of one native-resolution patch, in Mx (and as SHARP's ``R_VALUE``).

    Steps (Schrijver 2007, §2; the SHARP ``R_VALUE`` recipe of Bobra et al. 2014 and of the
    SHARP reference code, which bins HMI by round(2″ / CDELT) = 4 to MDI-like pixels):

    1. NaN → 0; pixels outside ``mask`` → 0; bin by ``f = max(1, round(bin_mm / pixel_size_mm))``
       (block mean, zero-padded partial blocks) to pixels of ``p = f · pixel_size_mm`` Mm
       (1.458 Mm for SHARP CEA 0.364 Mm pixels: ``f = 4``).
    2. Strong-field masks ``B > +threshold``, ``B < -threshold`` on the binned field.
    3. Dilate each with a k×k square, ``k = kernel_px_for_mm(dilation_mm, p)`` (3 at 1.458 Mm:
       Schrijver's 3×3 on 1.44 Mm MDI pixels); the intersection is the strong-gradient
       polarity-inversion-line map (PIL).
    4. Weighting map ``W = gaussian_filter(PIL, σ)``, ``σ = fwhm_mm / 2.3548 / p`` pixels
       (normalised kernel, ``mode="reflect"`` as the SHARP reference code; 15 Mm FWHM).
    5. ``R = Σ |B| · W · (p · 1e8 cm)²`` in Mx.

    Parameters
    ----------
    Br_gauss : numpy.ndarray, shape ``(H, W)``, floating, G. Radial field (SHARP ``Br``) or
        the line-of-sight ``magnetogram`` segment (what SHARP's ``R_VALUE`` uses). Every
        argument with a unit may also be an astropy ``Quantity`` (:func:`as_value`).
    pixel_size_mm : float > 0, native pixel side, Mm (``SharpPatch.pixel_size_mm``).
    threshold_gauss : float ≥ 0, strong-field threshold, G (Schrijver: 150 G; ``150 * u.G``).
    fwhm_mm : float > 0, FWHM of the Gaussian weighting, Mm (Schrijver: 15 Mm).
    bin_mm : float > 0 or None. Target pixel size for step 1, Mm (Schrijver's MDI pixels:
        1.44 Mm). ``None`` keeps the native pixels (no binning; the dilation kernel is then
        ``kernel_px_for_mm(dilation_mm, pixel_size_mm)``, 11 px on SHARP CEA). Binning matters
        with the noisy vector-field Br: on the sample frames the unbinned R tracks
        ``R_VALUE`` far worse (see ``tests/interrogate/test_physics_r_schrijver.py``).
    dilation_mm : float > 0, dilation kernel side, Mm (4.3 Mm ≈ 3 × 1.44 Mm;
        ``ParamConfig.r_kernel_mm``).
    mask : optional bool ``(H, W)``; pixels outside are set to 0 first (SHARP computes
        ``R_VALUE`` over the whole CEA patch, so leave it ``None`` to compare with it).
    return_maps : also return the binned field, the PIL map and the weighting map.

    Returns
    -------
    dict with

    * ``R_schrijver`` : float, log10(R / Mx); ``-inf`` when R = 0 (no strong-field PIL).
    * ``R_schrijver_Mx`` : float, R in Mx.
    * ``R_schrijver_sharp`` : float, the SHARP ``R_VALUE`` convention, log10 of
      Σ |B|[G] · W over the binned pixels (no pixel area, although the keyword is labelled Mx),
      0.0 when that sum is < 1. Equal to ``R_schrijver − log10((p·1e8)²)`` when the sum is ≥ 1.
    * ``bin_factor`` (int f), ``pixel_mm`` (float p), ``dilation_px`` (int k),
      ``sigma_px`` (float σ in binned pixels).
    * with ``return_maps``: ``field`` (binned B, G), ``pil`` (bool), ``weight`` (float),
      each ``(ceil(H/f), ceil(W/f))``.

    Raises
    ------
    ValueError
        Non-2-D, empty or non-floating ``Br_gauss``; non-positive or non-finite
        ``pixel_size_mm``, ``fwhm_mm``, ``bin_mm`` or ``dilation_mm``; negative threshold;
        ``mask`` of the wrong shape.

    Source
    ------
    Schrijver (2007, ApJ 655, L117), eq. 1 and §2; Bobra et al. (2014, Sol. Phys. 289, 3549),
    Table 3 (``R_VALUE``). Differences from the SHARP pipeline: the input here is whatever
    field is passed (SHARP uses the line-of-sight magnetogram); NaN pixels count as 0 instead
    of being skipped; the FWHM is 15 Mm (SHARP: 10 binned pixels ≈ 14.6 Mm).
    """
    from scipy import ndimage

    Br_gauss, threshold_gauss = as_value(Br_gauss, "G", "Br_gauss"), as_value(threshold_gauss, "G", "threshold_gauss")
    pixel_size_mm = as_value(pixel_size_mm, "Mm", "pixel_size_mm")
    fwhm_mm, dilation_mm = as_value(fwhm_mm, "Mm", "fwhm_mm"), as_value(dilation_mm, "Mm", "dilation_mm")
    bin_mm = as_value(bin_mm, "Mm", "bin_mm")
    px = _check_positive("pixel_size_mm", pixel_size_mm)
    fwhm = _check_positive("fwhm_mm", fwhm_mm)
    dil = _check_positive("dilation_mm", dilation_mm)
    t = _check_threshold(threshold_gauss)
    f = 1 if bin_mm is None else max(1, int(round(_check_positive("bin_mm", bin_mm) / px)))
    field = _block_mean(_clean_patch(Br_gauss, mask), f)
    p = f * px
    k = kernel_px_for_mm(dil, p)
    sigma = fwhm / _FWHM_PER_SIGMA / p
    structure = np.ones((k, k), dtype=bool)
    pil = ndimage.binary_dilation(field > t, structure=structure) & ndimage.binary_dilation(field < -t, structure=structure)
    weight = ndimage.gaussian_filter(pil.astype(np.float64), sigma, mode="reflect")
    total = float(np.sum(np.abs(field) * weight))  # G × binned pixels
    area_cm2 = (p * 1e8) ** 2
    r_mx = total * area_cm2
    out: dict[str, Any] = {
        "R_schrijver": math.log10(r_mx) if r_mx > 0 else -math.inf,
        "R_schrijver_Mx": r_mx,
        "R_schrijver_sharp": math.log10(total) if total >= 1.0 else 0.0,
        "bin_factor": f,
        "pixel_mm": p,
        "dilation_px": k,
        "sigma_px": sigma,
    }
    if return_maps:
        out.update(field=field, pil=pil, weight=weight)
    return out


def physical_params(
    Br_gauss: np.ndarray,
    pixel_size_mm: float,
    threshold_gauss: float = 150.0,
    r_kernel_mm: float = 4.3,
    mask: np.ndarray | None = None,
    definition: str = DEFAULT_DEFINITION,
    schrijver: bool = True,
) -> dict[str, float]:
    """Parameters of one native-resolution patch in physical units (Mx, Mm, deg).

    Parameters
    ----------
    Br_gauss : numpy.ndarray, shape ``(H, W)``
        Radial field in Gauss, rows = y (north), columns = x (west) (SHARP CEA layout).
        NaN pixels (off-disk / missing) are set to 0. May be a ``Quantity`` (G, Mx/cm², T).
    pixel_size_mm : float or Quantity (length)
        Pixel side in Mm (for SHARP CEA: ``CDELT1[deg] · π/180 · RSUN_REF[m] / 1e6``).
    threshold_gauss : float or Quantity
        Polarity threshold, G (paper: 150 G; ``150 * u.G``). Plain numbers are gauss.
    r_kernel_mm : float or Quantity (length)
        Side of the dilation kernel in Mm, for ``R`` and ``R_schrijver``. For ``R`` the
        kernel is the nearest odd integer number of native pixels to
        ``r_kernel_mm / pixel_size_mm`` and at least 3 (:func:`kernel_px_for_mm`); for
        ``R_schrijver`` the same on the 1.44 Mm binned pixels (3).
    mask : numpy.ndarray of bool, shape ``(H, W)``, optional
        Pixels to include; all others are set to 0 before *every* parameter is computed.
        Use ``bitmap >= 33`` (SHARP ``bitmap`` segment: 33/34 = weak/strong-field pixels
        inside the HARP) to reproduce the header ``USFLUX``, which SHARP sums over those
        pixels only. On the 37 sample SHARP frames, all-pixel TUF tracks ``USFLUX`` with
        Spearman ρ = 0.76 only (the CEA patch includes much weak-field and noise flux around
        the region); with the bitmap mask ρ = 0.99 on the 26 frames that have a bitmap (see
        ``tests/interrogate/test_physics_params.py``). Masked TUF still exceeds ``USFLUX`` by ×1.1–4.4
        because SHARP also drops pixels of low disambiguation confidence. SHARP computes
        ``R_VALUE`` over the whole patch: to compare ``R_schrijver`` with it, pass no mask.
    definition : ``"paper"`` (default; TPF / TNF in Mx, sums beyond ±threshold) or
        ``"authors_code"`` (TPF / TNF = mean |B| in G over B > 0 / B < 0, no threshold).
    schrijver : also compute ``R_schrijver`` and ``R_schrijver_sharp`` (:func:`schrijver_r`,
        default settings); ``False`` skips that work (callers that need TUF only).

    Returns
    -------
    dict[str, float]
        ``TUF``, ``TPF``, ``TNF``, ``R`` in Mx (pixel area ``(pixel_size_mm·1e8 cm)²``; ``R``
        is the paper's R — unweighted, not log — on native pixels); ``PSEP`` in Mm (NaN if a
        polarity is empty); ``tilt`` in degrees (NaN likewise); ``leading_sign`` in
        {+1, -1, 0}; ``kernel_px`` (int, the R kernel used); and with ``schrijver``:
        ``R_schrijver`` (log10 Mx, ``-inf`` when no PIL; comparable to SHARP ``R_VALUE``)
        and ``R_schrijver_sharp`` (the ``R_VALUE`` convention itself). :func:`param_units`
        ``("physical")`` names the units.

    Raises
    ------
    ValueError
        Non-2-D or non-floating ``Br_gauss``, non-positive pixel size / kernel, mask of the
        wrong shape, unknown ``definition``.

    Source: Chatterjee et al. (2025), "Interpretable Generation"; Schrijver (2007) and Bobra
    et al. (2014) for ``R_schrijver``. Implemented by calling :func:`compute_params` with
    ``pixel_size = 1`` and scaling, and :func:`schrijver_r`.
    """
    _check_definition(definition)
    Br_gauss, threshold_gauss = as_value(Br_gauss, "G", "Br_gauss"), as_value(threshold_gauss, "G", "threshold_gauss")
    pixel_size_mm, r_kernel_mm = as_value(pixel_size_mm, "Mm", "pixel_size_mm"), as_value(r_kernel_mm, "Mm", "r_kernel_mm")
    k = kernel_px_for_mm(float(r_kernel_mm), float(pixel_size_mm))
    arr = _clean_patch(Br_gauss, mask)
    with torch.no_grad():
        out = compute_params(arr[None, None], threshold=threshold_gauss, dilation_px=k, definition=definition)
    pixel_cm = float(pixel_size_mm) * 1e8
    area_cm2 = pixel_cm * pixel_cm
    flux_names = _FLUX_NAMES if definition == "paper" else ("TUF", "R")
    res: dict[str, float] = {}
    for key in PARAM_NAMES:
        v = float(out[key][0])
        if key in flux_names:
            v *= area_cm2
        elif key == "PSEP":
            v *= float(pixel_size_mm)
        res[key] = v
    res["kernel_px"] = k
    if schrijver:
        sr = schrijver_r(arr, pixel_size_mm, threshold_gauss=threshold_gauss, dilation_mm=r_kernel_mm)
        for key in SCHRIJVER_NAMES:
            res[key] = sr[key]
    return res


# --------------------------------------------------------------------------------------------
# independent NumPy / SciPy reference
# --------------------------------------------------------------------------------------------
def reference_params(
    image: np.ndarray,
    threshold: float = 0.15,
    dilation_px: int = 7,
    definition: str = DEFAULT_DEFINITION,
) -> dict[str, float]:
    """Per-image NumPy/SciPy implementation of the same definitions (benchmark baseline).

    Parameters
    ----------
    image : numpy.ndarray, shape ``(H, W)`` (or ``(1, H, W)``), floating, image units.
    threshold : polarity threshold in image units (≥ 0).
    dilation_px : odd side of the square structuring element for
        ``scipy.ndimage.binary_dilation`` (zero border).
    definition : ``"paper"`` or ``"authors_code"`` (TPF / TNF), as :func:`compute_params`.

    Returns
    -------
    dict[str, float] with keys :data:`PARAM_NAMES`, in image units × pixels (flux) and pixels
    (PSEP), matching :func:`compute_params` with ``pixel_size = field_scale = 1``.

    Raises
    ------
    ValueError : wrong shape, non-floating dtype, bad threshold, kernel or definition.

    Source: Chatterjee et al. (2025), "Interpretable Generation"; the paper's R after
    Schrijver (2007); authors' ``utils.calculate_params_`` for ``definition="authors_code"``.
    Written independently of :func:`compute_params` (index lists via ``np.nonzero``) so that
    each checks the other.
    """
    from scipy import ndimage

    b = np.asarray(image)
    if b.ndim == 3 and b.shape[0] == 1:
        b = b[0]
    if b.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W), got shape {b.shape}")
    if not np.issubdtype(b.dtype, np.floating):
        raise ValueError(f"image must be floating, got dtype {b.dtype}")
    t = _check_threshold(threshold)
    k = _check_kernel(dilation_px)
    _check_definition(definition)
    b = b.astype(np.float64)

    pos = b > t
    neg = b < -t
    tuf = float(np.sum(np.abs(b)))
    pr, pc = np.nonzero(pos)
    nr, nc = np.nonzero(neg)
    bp = b[pr, pc]
    bn = -b[nr, nc]
    tpf = float(bp.sum())
    tnf = float(bn.sum())

    structure = np.ones((k, k), dtype=bool)
    inter = ndimage.binary_dilation(pos, structure=structure) & ndimage.binary_dilation(neg, structure=structure)
    r = float(np.abs(b[inter]).sum())

    if pr.size and nr.size:
        cxp, cyp = np.dot(bp, pc) / tpf, np.dot(bp, pr) / tpf
        cxn, cyn = np.dot(bn, nc) / tnf, np.dot(bn, nr) / tnf
        psep = float(math.hypot(cxp - cxn, cyp - cyn))
        if cxp > cxn:
            lead, tilt = 1.0, math.degrees(math.atan2(cyp - cyn, cxp - cxn))
        elif cxn > cxp:
            lead, tilt = -1.0, math.degrees(math.atan2(cyn - cyp, cxn - cxp))
        else:
            lead = 0.0
            tilt = 90.0 if cyp != cyn else 0.0
    else:
        psep, tilt, lead = math.nan, math.nan, 0.0
    if definition == "authors_code":
        above, below = b[b > 0], -b[b < 0]
        tpf = float(above.mean()) if above.size else math.nan
        tnf = float(below.mean()) if below.size else math.nan
    return {"TUF": tuf, "TPF": tpf, "TNF": tnf, "PSEP": psep, "R": r, "tilt": tilt, "leading_sign": lead}
