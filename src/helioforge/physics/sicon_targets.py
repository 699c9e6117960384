"""The SICON target quantities: names, units, optical-depth surfaces and the ambiguity-free
field components B_Q, B_U, B_V (Asensio Ramos & Díaz Baso 2019, A&A 626, A102, §2 eq. 1).

Defined once here and used by the networks (:mod:`helioforge.nn.sicon`), the training sets,
the inference and the validation of :mod:`helioforge.inversion`.

Targets: 7 quantities × 7 surfaces log τ = 0, −0.5, …, −3 = 49 maps, quantity-major
(index = 7 q + k, the order of SICON's ``encdec_normalization.npz``).
"""

from __future__ import annotations

import torch

__all__ = ["QUANTITIES", "TARGET_LOG_TAU", "UNITS", "TARGET_UNITS", "bq_bu_bv", "bxbyz_from_bqbubv"]

#: The 7 target quantities, in SICON's order (quantity-major order of the 49 maps, paper §2).
QUANTITIES = ("T", "vz", "z", "logP", "BQ", "BU", "BV")
#: The optical-depth surfaces of the targets (paper §2).
TARGET_LOG_TAU = (0.0, -0.5, -1.0, -1.5, -2.0, -2.5, -3.0)
#: Short unit labels (tables, figures, FITS ``QUNITn`` cards), with the (B_x, B_y, B_z) of a cube.
UNITS = {"T": "K", "vz": "km/s", "z": "km", "logP": "log10(dyn/cm2)", "BQ": "G", "BU": "G", "BV": "G",
         "Bx": "G", "By": "G", "Bz": "G"}
#: Units of the stored targets, with their conventions (written into training-set manifests).
TARGET_UNITS = {
    "T": "K",
    "vz": "km s-1, positive = downflow (redshift at disk centre)",
    "z": "km, positive upward, 0 = mean log tau=0 height of the quiet-Sun reference map",
    "logP": "log10(P_gas / dyn cm-2)",
    "BQ": "G, sign(Bx^2-By^2)|Bx^2-By^2|^1/2",
    "BU": "G, sign(Bx By)|Bx By|^1/2",
    "BV": "G, Bz (towards the observer)",
}


def bq_bu_bv(Bx: torch.Tensor, By: torch.Tensor, Bz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SICON's ambiguity-free field components (paper eq. 1).

    B_Q = sign(Bx² − By²)|Bx² − By²|^½, B_U = sign(Bx By)|Bx By|^½, B_V = Bz. They are
    unchanged by (Bx, By) → (−Bx, −By), the 180° azimuth ambiguity at disk centre.

    Parameters
    ----------
    Bx, By, Bz : tensors of one shape, G.

    Returns
    -------
    (B_Q, B_U, B_V) tensors, G.
    """
    Bx, By, Bz = (torch.as_tensor(b) for b in (Bx, By, Bz))
    a = Bx**2 - By**2
    b = Bx * By
    return torch.sign(a) * torch.sqrt(a.abs()), torch.sign(b) * torch.sqrt(b.abs()), Bz.clone()


def bxbyz_from_bqbubv(
    BQ: torch.Tensor, BU: torch.Tensor, BV: torch.Tensor, branch: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Invert eq. 1, choosing one of the two azimuth solutions.

    With A = sign(B_Q) B_Q² = Bx² − By² = B⊥² cos 2φ and C = sign(B_U) B_U² = Bx By =
    ½ B⊥² sin 2φ: B⊥ = (A² + 4C²)^¼ and φ = ½ atan2(2C, A) ∈ (−90°, 90°]. ``branch`` 0 returns
    that azimuth (Bx > 0, or Bx = 0 and By ≥ 0), ``branch`` 1 the other solution φ + 180°
    (−Bx, −By).

    Parameters
    ----------
    BQ, BU, BV : tensors of one shape, G.
    branch : 0 or 1.

    Returns
    -------
    (Bx, By, Bz) tensors, G.

    Raises
    ------
    ValueError : branch not 0 or 1.

    Source: paper §2 eq. 1; same solution as SICON's ``evaluate_encdec.py`` (its Bx ≥ 0 branch
    when B_U > 0).
    """
    if branch not in (0, 1):
        raise ValueError(f"branch must be 0 or 1, got {branch}")
    BQ, BU, BV = (torch.as_tensor(b) for b in (BQ, BU, BV))
    A = torch.sign(BQ) * BQ**2
    C = torch.sign(BU) * BU**2
    bperp = torch.sqrt(torch.sqrt(A**2 + 4 * C**2))
    phi = 0.5 * torch.atan2(2 * C, A)
    sgn = 1.0 if branch == 0 else -1.0
    return sgn * bperp * torch.cos(phi), sgn * bperp * torch.sin(phi), BV.clone()

