"""Stokes profiles of SIR model atmospheres as Hinode SP would record them.

``synthesize_model`` is the Python API under ``helioforge inversion synth``: a SIR-format model
atmosphere → LTE synthesis of Fe I 6301.5/6302.5 (:func:`helioforge.physics.lte.synth_lte`) on a
fine wavelength grid → convolution with the SP spectral transmission profile onto the standard
112-point grid (paper §2 step 3) → normalisation to the quiet-Sun continuum (HSRA at the same μ,
paper §2 step 3, or the model's own continuum). A single 1-D model has no spatial structure, so
the spatial PSF and rebinning (steps 2 and 4) do not apply; the map generator applies them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from astropy.io import fits

from helioforge.data.sir import SIRModel, model_path, plausibility_problem, read_sir
from helioforge.errors import InputError
from helioforge.inversion.forward import StokesChain, synthesis_wavelengths
from helioforge.inversion.instrument import HinodeSP, spectral_degrade
from helioforge.io import write_fits, write_text
from helioforge.physics.atomic import SpectralLine, fe_lines
from helioforge.physics.lte import Atmosphere, synth_lte

__all__ = ["StokesProfiles", "quiet_sun_continuum_intensity", "synthesize_model", "write_stokes",
           "INSTRUMENTS", "NORMALISATIONS"]

log = logging.getLogger(__name__)

INSTRUMENTS = ("hinode", "none")
NORMALISATIONS = ("quiet-sun", "model", "none")
#: Synthesis grid = SP step / this (≈ 4 mÅ) before the instrument convolution (the SP profile's
#: core is ≈ 24 mÅ wide); single models are cheap, so finer than the training sets' factor 2.
OVERSAMPLING = 5


@dataclass
class StokesProfiles:
    """Synthetic Stokes profiles of one atmosphere.

    Attributes
    ----------
    stokes : np.ndarray (4, nλ)
        I, Q, U, V, in units of ``unit``.
    wavelength : np.ndarray (nλ,)
        Air wavelengths [Å].
    unit : str
        ``"I_c(quiet Sun)"``, ``"I_c(model)"`` or ``"erg s-1 cm-2 sr-1 Hz-1"``.
    ic_model, ic_quiet : float
        Continuum intensity of the model and of the quiet-Sun reference (HSRA at the same μ)
        [erg s⁻¹ cm⁻² sr⁻¹ Hz⁻¹] (``ic_quiet`` is NaN when not computed).
    params : dict
        What was done (model, μ, instrument, normalisation), recorded in output headers.
    """

    stokes: np.ndarray
    wavelength: np.ndarray
    unit: str
    ic_model: float
    ic_quiet: float = float("nan")
    params: dict[str, Any] = field(default_factory=dict)


def _instrument():
    return HinodeSP.from_data()


def quiet_sun_continuum_intensity(mu: float = 1.0, wavelength_A: float | None = None) -> float:
    """Continuum intensity of the HSRA quiet-Sun model at μ, near 6302 Å.

    Parameters
    ----------
    mu : float, optional
        Cosine of the heliocentric angle (1 = disk centre).
    wavelength_A : float, optional
        Continuum wavelength, Å; default 6302.

    Returns
    -------
    float
        Continuum intensity, erg s⁻¹ cm⁻² sr⁻¹ Hz⁻¹.
    """
    hsra = Atmosphere.from_sir(read_sir(model_path("hsra11")))
    wav = np.array([wavelength_A or 6302.0])
    _, ic = synth_lte(hsra, wav, mu=mu, continuum_wavelength=float(wav[0]))
    return float(ic)


def synthesize_model(model: SIRModel | str | Path, mu: float = 1.0, instrument: str = "hinode",
                     normalise: str = "quiet-sun", lines: list[SpectralLine] | None = None,
                     wavelength: np.ndarray | None = None) -> StokesProfiles:
    """Synthesise the Hinode SP Stokes profiles of a SIR-format model atmosphere.

    Parameters
    ----------
    model : SIRModel or path
        The atmosphere (a path is read with :func:`helioforge.data.sir.read_sir`).
    mu : float
        Cosine of the heliocentric angle, (0, 1].
    instrument : {"hinode", "none"}
        ``hinode``: synthesise on a ≈ 4 mÅ grid (SP step / 5, ± 0.08 Å) and convolve with the SP spectral profile onto the
        112-point grid; ``none``: synthesise directly on the output grid.
    normalise : {"quiet-sun", "model", "none"}
        Divide by the HSRA continuum at the same μ (as Hinode maps are normalised to the nearby
        quiet Sun), by the model's own continuum, or leave absolute intensities.
    lines : list of SpectralLine, optional
        Default Fe I 6301.5 and 6302.5 (LINEAS 200/201).
    wavelength : array, optional
        Output grid [Å]; default the standard Hinode SP grid.

    Returns
    -------
    StokesProfiles

    Raises
    ------
    ValueError
        For an unknown ``instrument``/``normalise`` or ``mu`` outside (0, 1].
    helioforge.data.sir.SIRReadError
        If the model file cannot be read (names the file and line), or holds implausible
        values (:class:`~helioforge.data.sir.SIRPlausibilityError`, e.g. T outside
        1,000–100,000 K).
    helioforge.errors.InputError
        For an implausible :class:`SIRModel` given directly, or a synthesis that gives
        non-finite intensities.
    """
    if instrument not in INSTRUMENTS:
        raise ValueError(f"instrument must be one of {INSTRUMENTS}, got {instrument!r}")
    if normalise not in NORMALISATIONS:
        raise ValueError(f"normalise must be one of {NORMALISATIONS}, got {normalise!r}")
    if not 0.0 < mu <= 1.0:
        raise ValueError(f"mu must be in (0, 1], got {mu}")
    name = str(model) if not isinstance(model, SIRModel) else (model.name or "model")
    if not isinstance(model, SIRModel):
        model = read_sir(model)  # refuses implausible values (SIRPlausibilityError) naming the line
    else:
        implausible = plausibility_problem(model)
        if implausible is not None:
            raise InputError(f"SIR model {name!r}: row {implausible[0]} (0 = deepest): {implausible[1]}")
    lines = fe_lines() if lines is None else lines
    sp = _instrument() if (instrument == "hinode" or wavelength is None) else None
    wav_out = np.asarray(wavelength if wavelength is not None else sp.wavelengths, dtype=np.float64)
    atmos = Atmosphere.from_sir(model)
    if instrument == "hinode":
        wav_fine = synthesis_wavelengths(wav_out, oversampling=OVERSAMPLING)
        stokes, ic = synth_lte(atmos, wav_fine, lines=lines, mu=mu)
        stokes = spectral_degrade(stokes, torch.as_tensor(wav_fine), torch.as_tensor(wav_out),
                                  profile=sp.profile, quadrature=StokesChain.quadrature)
    else:
        stokes, ic = synth_lte(atmos, wav_out, lines=lines, mu=mu)
    stokes = stokes.detach().numpy()
    ic_model = float(ic)
    if not (np.isfinite(stokes).all() and np.isfinite(ic_model) and ic_model > 0):
        raise InputError(f"{model.source_path or name}: the synthesis gave non-finite or non-positive intensities "
                         f"(continuum {ic_model:.3g}); the model atmosphere is not usable")
    ic_quiet = float("nan")
    unit = "erg s-1 cm-2 sr-1 Hz-1"
    if normalise == "quiet-sun":
        ic_quiet = quiet_sun_continuum_intensity(mu, float(np.mean(wav_out)))
        stokes = stokes / ic_quiet
        unit = "I_c(quiet Sun)"
    elif normalise == "model":
        stokes = stokes / ic_model
        unit = "I_c(model)"
    model_name = Path(name).name.encode("ascii", "backslashreplace").decode()  # FITS header values are ASCII
    params = {"model": model_name, "mu": mu, "instrument": instrument, "normalise": normalise,
              "lines": ", ".join(ln.name for ln in lines), "ic_model": ic_model, "ic_quiet": ic_quiet}
    return StokesProfiles(stokes=stokes, wavelength=wav_out, unit=unit, ic_model=ic_model, ic_quiet=ic_quiet,
                          params=params)


def write_stokes(path: str | Path, result: StokesProfiles, fmt: str = "fits") -> Path:
    """Write synthetic profiles as FITS (4, nλ) with the wavelength axis in the header, or a text table.

    FITS: primary HDU (4, nλ) float64 with ``CTYPE1 = 'AWAV'`` (air wavelength, Å, linear axis
    from the first point and the mean step), ``CTYPE2 = 'STOKES'`` (1..4 = I, Q, U, V, FITS
    standard), ``BUNIT``, ``MU`` and provenance cards; an extension ``WAVELENGTH`` holds the exact
    grid. Text: columns λ, I, Q, U, V with a commented header. Written atomically.

    Raises
    ------
    ValueError
        For a format other than ``fits`` or ``txt``.
    """
    path = Path(path)
    wav = result.wavelength
    if fmt == "fits":
        hdr = fits.Header()
        hdr["CTYPE1"] = ("AWAV", "air wavelength")
        hdr["CUNIT1"] = ("Angstrom", "")
        hdr["CRPIX1"] = 1.0
        hdr["CRVAL1"] = float(wav[0])
        hdr["CDELT1"] = (float(np.mean(np.diff(wav))) if wav.size > 1 else 1.0, "mean step; exact grid in WAVELENGTH")
        hdr["CTYPE2"] = ("STOKES", "1=I 2=Q 3=U 4=V")
        hdr["CRPIX2"] = 1.0
        hdr["CRVAL2"] = 1.0
        hdr["CDELT2"] = 1.0
        hdr["BUNIT"] = (result.unit, "intensity unit")
        hdr["MU"] = (float(result.params.get("mu", 1.0)), "cosine of heliocentric angle")
        wav_hdu = fits.BinTableHDU.from_columns([fits.Column(name="WAVELENGTH", format="D", unit="Angstrom",
                                                             array=wav)], name="WAVELENGTH")
        return write_fits(path, result.stokes, model="LTE synthesis Fe I 6301/6302", params=result.params,
                          header=hdr, extra_hdus=[wav_hdu])
    if fmt == "txt":
        head = [f"helioforge LTE synthesis ({result.unit})"] + [f"{k} = {v}" for k, v in result.params.items()]
        head.append("wavelength_air_A I Q U V")
        lines = ["# " + h for h in head]
        for lam, (i, q, u, v) in zip(wav, result.stokes.T):
            lines.append(f"{lam:.4f} {i:.8e} {q:.8e} {u:.8e} {v:.8e}")
        return write_text(path, "\n".join(lines) + "\n")
    raise ValueError(f"format must be 'fits' or 'txt', got {fmt!r}")
