"""Inferred atmospheres: the FITS cube, re-synthesis and the SPINOR reference.

The networks return 49 maps (7 quantities × 7 log τ surfaces, quantity-major, paper §2):
T [K], v_z [km/s, positive down], z [km], log P_g [dyn cm⁻²], B_Q, B_U, B_V [G]. This module

- writes them as a FITS cube (quantity, log τ, y, x) with units, the log τ axis, provenance and
  helioprojective world coordinates of the map (``AtmosCube.wcs``; :meth:`AtmosCube.to_map`
  gives a ``sunpy.map.Map`` of one surface), plus (B_x, B_y, B_z) on an explicitly chosen
  azimuth branch (paper eq. 1 inverted, :func:`helioforge.inversion.targets.field_vector`);
- builds a smooth depth-stratified atmosphere from the seven surfaces (anchored on the HSRA
  stratification, paper §4.4 "smooth model") and synthesises its Stokes profiles for the
  re-synthesis check;
- reads the independent SPINOR inversion of the sample patch (``spinor_inv``) on the same
  surfaces for comparison.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from astropy.io import fits

from helioforge.data.fits import FitsReadError
from helioforge.data.sir import model_path, read_sir
from helioforge.inversion.atmospheres import interpolate_model
from helioforge.inversion.config import DepthGridConfig
from helioforge.inversion.forward import StokesChain
from helioforge.inversion.instrument import spectral_degrade
from helioforge.io import write_fits
from helioforge.physics.eos import electron_pressure
from helioforge.physics.lte import Atmosphere, hydrostatic_equilibrium
from helioforge.physics.sicon_targets import QUANTITIES, TARGET_LOG_TAU, UNITS, bxbyz_from_bqbubv

__all__ = [
    "AtmosCube",
    "WCS_KEYS",
    "write_atmos_cube",
    "read_atmos_cube",
    "targets_to_atmosphere",
    "resynthesize",
    "read_spinor",
]

log = logging.getLogger(__name__)

#: The world-coordinate cards of the two spatial axes (FITS axes 1 = x, 2 = y) a cube carries.
WCS_KEYS = ("CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CDELT1", "CDELT2",
            "DATE-OBS", "RSUN_REF", "DSUN_OBS", "HGLN_OBS", "HGLT_OBS")


@dataclass
class AtmosCube:
    """An inferred atmosphere on the SICON surfaces.

    Attributes
    ----------
    data : np.ndarray (7, n_tau, ny, nx)
        T, v_z, z, log P_g, B_Q, B_U, B_V (see :data:`UNITS`).
    log_tau : tuple of float (n_tau,)
    bxyz : np.ndarray (3, n_tau, ny, nx) or None
        B_x, B_y, B_z [G] on azimuth branch ``branch``.
    branch : int or None
    params : dict
        Provenance (network, weights, input file, normalisation…), written to the header.
    wcs : dict
        World coordinates of the spatial axes (FITS cards of :data:`WCS_KEYS`: helioprojective
        ``HPLN-TAN``/``HPLT-TAN`` in arcsec, ``DATE-OBS``), written to every image extension;
        empty: plain pixel axes. Made from the SP map by :func:`helioforge.inversion.infer.sp_wcs`.
    """

    data: np.ndarray
    log_tau: tuple[float, ...] = TARGET_LOG_TAU
    bxyz: np.ndarray | None = None
    branch: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    wcs: dict[str, Any] = field(default_factory=dict)

    def quantity(self, name: str) -> np.ndarray:
        """Maps of one quantity by name.

        Parameters
        ----------
        name : str
            One of :data:`QUANTITIES` (``T``, ``vz``, ``z``, ``logP``, ``BQ``, ``BU``, ``BV``) or, when the
            cube has :attr:`bxyz`, ``Bx``, ``By``, ``Bz``.

        Returns
        -------
        np.ndarray
            (n_tau, ny, nx) view into the cube, in the unit of :data:`UNITS` (K, km/s, km, log10(dyn/cm2), G).

        Raises
        ------
        KeyError
            For an unknown name, or ``Bx``/``By``/``Bz`` of a cube without ``bxyz``.
        """
        if name in QUANTITIES:
            return self.data[QUANTITIES.index(name)]
        if name in ("Bx", "By", "Bz") and self.bxyz is not None:
            return self.bxyz[("Bx", "By", "Bz").index(name)]
        raise KeyError(f"no quantity {name!r} in this cube")

    def to_map(self, name: str, log_tau: float = -1.0):
        """One surface of one quantity as a ``sunpy.map.Map`` with the cube's world coordinates.

        Parameters
        ----------
        name : ``T``, ``vz``, …, ``Bx``, ``By``, ``Bz`` (:meth:`quantity`).
        log_tau : the surface (one of :attr:`log_tau`).

        Raises
        ------
        KeyError : no such quantity. ValueError : no such surface, or a cube without world
            coordinates (``wcs`` empty).
        """
        import sunpy.map

        if not self.wcs:
            raise ValueError("this cube has no world coordinates (wcs is empty)")
        k = [float(x) for x in self.log_tau].index(float(log_tau))
        meta = dict(self.wcs)
        meta["BUNIT"] = UNITS.get(name, "")
        return sunpy.map.Map(np.asarray(self.quantity(name)[k], dtype=np.float64), meta)


def write_atmos_cube(path: str | Path, cube: AtmosCube, mask: np.ndarray | None = None) -> Path:
    """Write the cube as FITS: primary (7, n_tau, ny, nx) float32 + ``BXYZ`` + ``LOGTAU`` extensions,
    and a ``MASK`` extension when ``mask`` is given.

    Header: ``QUANT1..7``/``QUNIT1..7`` (quantity and unit per plane of axis 4), ``CTYPE3 =
    'LOGTAU'``, ``VZSIGN`` (v_z > 0 = downflow), the world coordinates of ``cube.wcs`` on axes 1 and 2
    (in every image extension; ``CTYPE1``/``CTYPE2`` = ``X``/``Y`` without them), ``BRANCH`` (azimuth
    solution of ``BXYZ``) and provenance cards. Atomic: every extension is in the file when it appears
    under its name.

    Parameters
    ----------
    path : str or Path
        Destination FITS file.
    cube : AtmosCube
        The inverted atmosphere; ``cube.bxyz`` (3, n_tau, ny, nx), G, becomes the ``BXYZ`` extension
        when present, ``cube.log_tau`` the float64 ``LOGTAU`` extension.
    mask : np.ndarray, optional
        (ny, nx) bool/uint8, 1 = pixel not inverted (NaN in the cube); its header counts the flagged
        input pixels per kind from ``cube.params`` (``bad_nonfinite``, ``bad_negative``,
        ``bad_saturated``) and the masked pixels (``NMASKED``).

    Returns
    -------
    Path
        The written file (from :func:`helioforge.io.write_fits`).
    """
    hdr = fits.Header()
    for i, q in enumerate(QUANTITIES, 1):
        hdr[f"QUANT{i}"] = (q, f"plane {i} of axis 4")
        hdr[f"QUNIT{i}"] = (UNITS[q], f"unit of {q}")
    hdr["CTYPE3"] = ("LOGTAU", "log10 optical depth at 500 nm, see LOGTAU ext")
    hdr["CTYPE1"], hdr["CTYPE2"] = "X", "Y"
    hdr.update(cube.wcs)
    hdr["VZSIGN"] = ("positive down", "vz > 0: redshift / downflow")
    extra = [fits.ImageHDU(np.asarray(cube.log_tau, dtype=np.float64), name="LOGTAU")]
    if cube.bxyz is not None:
        bh = fits.Header(cube.wcs)
        bh["BRANCH"] = (int(cube.branch or 0), "azimuth solution: 0 = Bx >= 0, 1 = opposite")
        bh["BUNIT"] = "G"
        bh["COMMENT"] = "planes: Bx, By, Bz; x = columns, y = rows, z = towards the observer"
        extra.append(fits.ImageHDU(cube.bxyz.astype(np.float32), header=bh, name="BXYZ"))
    if mask is not None:
        mh = fits.Header(cube.wcs)
        mh["COMMENT"] = "1 = pixel not inverted (NaN in the cube): non-finite, negative or saturated counts, or no continuum"
        for key, card in (("bad_nonfinite", "NBADNAN"), ("bad_negative", "NBADNEG"), ("bad_saturated", "NBADSAT")):
            mh[card] = (int(cube.params.get(key, 0)), f"input pixels flagged: {key.removeprefix('bad_')}")
        mh["NMASKED"] = (int(np.asarray(mask).sum()), "pixels masked in this cube")
        extra.append(fits.ImageHDU(np.asarray(mask, dtype=np.uint8), header=mh, name="MASK"))
    return write_fits(path, cube.data.astype(np.float32), model="SICON inversion", params=cube.params, header=hdr,
                      extra_hdus=extra)


def read_atmos_cube(path: str | Path) -> AtmosCube:
    """Read a cube written by :func:`write_atmos_cube`.

    Raises
    ------
    FitsReadError
        If the file is not such a cube.
    """
    path = Path(path)
    try:
        with fits.open(path) as hdul:
            data = np.asarray(hdul[0].data, dtype=np.float64)
            lt = tuple(float(x) for x in hdul["LOGTAU"].data)
            bxyz = np.asarray(hdul["BXYZ"].data, dtype=np.float64) if "BXYZ" in hdul else None
            branch = int(hdul["BXYZ"].header["BRANCH"]) if bxyz is not None else None
            h = hdul[0].header
            wcs = {k: h[k] for k in WCS_KEYS if k in h} if str(h.get("CTYPE1", "")).startswith("HPLN") else {}
    except (OSError, KeyError) as e:
        raise FitsReadError(path, f"not a helioforge atmosphere cube ({e})") from e
    if data.ndim != 4 or data.shape[0] != len(QUANTITIES):
        raise FitsReadError(path, f"primary HDU has shape {data.shape}, expected (7, n_tau, ny, nx)")
    return AtmosCube(data=data, log_tau=lt, bxyz=bxyz, branch=branch, wcs=wcs)


def _extend(values: torch.Tensor, nodes: np.ndarray, grid: np.ndarray, mode: str) -> torch.Tensor:
    """Values (..., k) at decreasing log τ ``nodes`` → (..., n) on ``grid`` (linear inside).

    Outside the nodes: ``constant`` holds the end value, ``linear`` continues the end segment.
    """
    order = np.argsort(nodes)
    x = torch.as_tensor(nodes[order], dtype=values.dtype)
    y = values[..., order]
    g = torch.as_tensor(grid, dtype=values.dtype)
    idx = torch.searchsorted(x, g).clamp(1, x.numel() - 1)
    x0, x1 = x[idx - 1], x[idx]
    w = (g - x0) / (x1 - x0)
    if mode == "constant":
        w = w.clamp(0, 1)
    return y[..., idx - 1] * (1 - w) + y[..., idx] * w


def targets_to_atmosphere(cube_data: np.ndarray, log_tau_nodes=TARGET_LOG_TAU, grid: np.ndarray | None = None,
                          vmic_kms: float = 0.9):
    """A smooth depth-stratified atmosphere from the seven surfaces (paper §4.4).

    T and log P_g are the HSRA stratification (in hydrostatic equilibrium) plus the inferred
    departures, interpolated linearly in log τ between the surfaces and held constant outside
    them; v_z and the field components are interpolated linearly and held constant outside.
    P_e follows from (T, P_g) by the ionisation balance. The networks do not infer the
    microturbulence: ``vmic_kms`` (the middle of the training sets' 0.3–1.5 km/s) is used.

    Parameters
    ----------
    cube_data : np.ndarray (7, n_tau, ny, nx)
    grid : log τ grid (n,), deepest first; default the training-set grid (+1.2 … −4.0, 0.1 dex).

    Returns
    -------
    helioforge.physics.lte.Atmosphere with tensors (ny, nx, n), float64.
    """
    grid = DepthGridConfig().log_tau() if grid is None else np.asarray(grid, dtype=np.float64)
    nodes = np.asarray(log_tau_nodes, dtype=np.float64)
    hsra = read_sir(model_path("hsra11"))
    T_ref = torch.as_tensor(interpolate_model(hsra, grid))
    _, Pg_ref, _, _ = hydrostatic_equilibrium(torch.as_tensor(grid), T_ref)
    T_ref_nodes = _extend(T_ref, grid, nodes, "linear")
    lp_ref_nodes = _extend(torch.log10(Pg_ref), grid, nodes, "linear")
    d = torch.as_tensor(np.moveaxis(np.asarray(cube_data, dtype=np.float64), (0, 1), (-2, -1)))  # (ny, nx, 7, k)
    q = {name: d[..., i, :] for i, name in enumerate(QUANTITIES)}
    T = T_ref + _extend(q["T"] - T_ref_nodes, nodes, grid, "constant")
    logP = torch.log10(Pg_ref) + _extend(q["logP"] - lp_ref_nodes, nodes, grid, "constant")
    T = T.clamp(2500.0, 20000.0)
    Pg = 10.0 ** logP
    Pe = electron_pressure(T, Pg)
    Bx, By, Bz = bxbyz_from_bqbubv(q["BQ"], q["BU"], q["BV"], 0)
    Bx, By, Bz = (_extend(b, nodes, grid, "constant") for b in (Bx, By, Bz))
    B = torch.sqrt(Bx ** 2 + By ** 2 + Bz ** 2)
    inc = torch.rad2deg(torch.atan2(torch.sqrt(Bx ** 2 + By ** 2), Bz))
    azi = torch.rad2deg(torch.atan2(By, Bx))
    vlos = _extend(q["vz"], nodes, grid, "constant") * 1e5
    return Atmosphere(log_tau=torch.as_tensor(grid), T=T, Pe=Pe, vmic=torch.full_like(T, vmic_kms * 1e5), B=B,
                      vlos=vlos, inclination=inc, azimuth=azi, Pg=Pg)


def resynthesize(cube_data: np.ndarray, ic_quiet_sun: float, pixel_arcsec: float = 0.16,
                 mu: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Stokes maps synthesised from an inferred atmosphere (paper §4.4), with and without the PSF.

    The atmosphere of :func:`targets_to_atmosphere` is synthesised once (LTE, as the training
    sets) and degraded two ways: the full instrument (Hinode PSF at the map's pixel + SP
    spectral profile), the profile to compare with the observation; and the spectral profile
    alone, the deconvolved profile (the networks return PSF-free atmospheres). Both are divided
    by the training set's quiet-Sun continuum ``ic_quiet_sun`` [erg s⁻¹ cm⁻² sr⁻¹ Hz⁻¹].

    Returns
    -------
    (with_psf, deconvolved) : np.ndarray (4, 112, ny, nx) each, quiet-Sun I_c units.
    """
    chain = StokesChain(mu=mu)
    raw, _ = chain.synthesize_map(targets_to_atmosphere(cube_data))
    with_psf = chain.degrade(raw, pixel_arcsec)
    # the SP profile alone, with the matrix chain.degrade has just built (cached by the instrument)
    deconvolved = spectral_degrade(raw, chain.wavelengths,
                                   matrix=chain.instrument.spectral_matrix(chain.wavelengths, chain.quadrature))
    to_map = lambda x: np.moveaxis(x.cpu().numpy(), (0, 1), (-2, -1)) / ic_quiet_sun  # noqa: E731 (H, W, 4, 112) → (4, 112, H, W)
    return to_map(with_psf), to_map(deconvolved)


def read_spinor(folder: str | Path, log_tau_nodes=(0.0, -1.0, -2.0)) -> dict[str, np.ndarray]:
    """T [K], v_z [km/s], B_z [G] of a SPINOR ``inverted_atmos_maptau`` file at given log τ.

    The file (11, n_tau, ny, nx) holds height, T, P, P_e, κ, ρ, v_turb, v [cm/s], B, γ, χ on
    log τ from ``LTTOP`` to ``LTBOT`` in steps ``LTINC`` (header). SPINOR's velocity is taken as
    positive for a redshift, like SIR's; B_z = B cos γ.

    Returns
    -------
    dict with ``log_tau`` (k,) and ``T``, ``vz``, ``Bz`` arrays (k, ny, nx)

    Raises
    ------
    FitsReadError
        If the file is missing or not in that layout.
    """
    folder = Path(folder)
    path = folder / "inverted_atmos_maptau.1.fits" if folder.is_dir() else folder
    try:
        with fits.open(path) as hdul:
            d = np.asarray(hdul[0].data, dtype=np.float64)
            h = hdul[0].header
            top, inc = float(h["LTTOP"]), float(h["LTINC"])
    except (OSError, KeyError) as e:
        raise FitsReadError(path, f"not a SPINOR maptau file ({e})") from e
    if d.ndim != 4 or d.shape[0] != 11:
        raise FitsReadError(path, f"shape {d.shape}, expected (11, n_tau, ny, nx)")
    lt = top + inc * np.arange(d.shape[1])
    idx = [int(np.argmin(np.abs(lt - x))) for x in log_tau_nodes]
    return {"log_tau": lt[idx], "T": d[1, idx], "vz": d[7, idx] / 1e5,
            "Bz": d[8, idx] * np.cos(np.deg2rad(d[9, idx]))}
