"""The SICON job: invert a Hinode SP map, and validate the trained networks (paper §4).

``invert_map`` is the Python API under ``helioforge invert``: read → normalise to the quiet Sun
and resample to the standard grid → network → physical units → cube with (B_x, B_y, B_z).
``run_validation`` is ``helioforge inversion validate``: held-out synthetic maps (MAD, KDE),
the Milne-Eddington baseline, the real sample against SPINOR, the re-synthesis check and the
timings, as a report folder.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from helioforge import __version__
from helioforge.inversion.atmos_cube import AtmosCube, field_vector, split_targets

__all__ = ["training_dir", "weights_stem", "load_map", "masked_pixels", "fill_masked", "invert_map", "invert_stokes",
           "run_validation"]

log = logging.getLogger(__name__)


def training_dir(workdir: str | Path, network: str) -> Path:
    """The training folder of ``network`` in a work folder (checkpoints, logs, final weights)."""
    return Path(workdir) / f"train_{network}"


def weights_stem(workdir: str | Path, network: str) -> Path:
    """Where ``helioforge inversion train`` keeps the weights of ``network`` in a work folder."""
    return training_dir(workdir, network) / f"sicon_{network}"


def invert_stokes(stokes: np.ndarray, network, device: str | None = None) -> tuple[np.ndarray, float]:
    """Network inversion of normalised Stokes maps.

    Parameters
    ----------
    stokes : np.ndarray (4, 112, ny, nx) or (N, 4, 112, ny, nx), quiet-Sun continuum units.
    network : a :class:`~helioforge.inversion.training.SiconInverter`, or the stem of its weights
        (``…/sicon_encdec``: ``.safetensors`` + ``.json``), loaded here.

    Returns
    -------
    (cube data (…, 7, 7, ny, nx) in physical units, seconds spent in the network)
    """
    from helioforge.inversion.training import SiconInverter

    inv = network if isinstance(network, SiconInverter) else SiconInverter.from_weights(network, device=device)
    t0 = time.perf_counter()
    out = inv.invert(torch.as_tensor(np.asarray(stokes, dtype=np.float32)))
    seconds = time.perf_counter() - t0
    return split_targets(out), seconds


def _ascii(text: str) -> str:
    """``text`` with non-ASCII characters backslash-escaped (FITS header values are ASCII)."""
    return str(text).encode("ascii", "backslashreplace").decode()


def masked_pixels(stokes: np.ndarray, wavelength: np.ndarray | None = None) -> np.ndarray:
    """Pixels (ny, nx) of Stokes maps (4, nλ, ny, nx) that cannot be inverted: a non-finite
    value anywhere in the profiles, or a continuum that is not positive (Stokes I over the blue
    continuum window of ``wavelength``; the first point when no axis is given)."""
    from helioforge.data.hinode_sp import continuum_from_stokes

    stokes = np.asarray(stokes)
    bad = ~np.isfinite(stokes).all(axis=(0, 1))
    ic = continuum_from_stokes(stokes, wavelength) if wavelength is not None else stokes[0, 0]
    with np.errstate(invalid="ignore"):
        bad |= ~(np.asarray(ic) > 0)
    return bad


def fill_masked(stokes: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """A copy of ``stokes`` (4, nλ, ny, nx) with the ``bad`` pixels replaced by the median
    profile of the others (so that a convolutional network sees no NaN; their outputs are
    discarded)."""
    if not bad.any():
        return stokes
    out = np.array(stokes, dtype=np.float32, copy=True)
    out[:, :, bad] = np.median(out[:, :, ~bad], axis=-1)[..., None]
    return out


def load_map(path: str | Path, quiet_mask: np.ndarray | None = None, calibrate: bool = True,
             qs_velocity_kms: float = 0.0):
    """Read an SP map, calibrate its wavelengths, resample it to the standard grid and normalise
    it to the quiet Sun (§4).

    The wavelength axis is calibrated on the quiet-Sun Fe I line cores
    (:func:`helioforge.data.hinode_sp.calibrate_wavelength`: their mean Doppler velocity is set
    to ``qs_velocity_kms``, 0 = the quiet Sun at rest, which is also where the synthetic
    training sets' quiet-Sun cores lie, within 0.11 km/s) before the map is resampled to the
    standard grid; ``sp.header["wavelength_calibration"]`` records the correction.

    Bad pixels are set to NaN, with a warning naming the file and how many of each kind
    (:func:`helioforge.data.hinode_sp.flag_bad_pixels`: non-finite values, negative Stokes I
    counts, saturated level-1 Stokes I); :func:`masked_pixels` then finds them, and the counts
    are in ``sp.header["bad_pixels"]``.

    Returns
    -------
    (SPMap in quiet-Sun continuum units, skipped files, I_c used [counts], seconds)

    Parameters
    ----------
    path : SP cube or folder of per-slit files.
    quiet_mask : (ny, nx) bool quiet-Sun pixels (default: the automatic mask).
    calibrate : calibrate the wavelength axis (``False``: the file's axis as it is).
    qs_velocity_kms : velocity given to the quiet-Sun line cores, km s⁻¹ (+ = redshift).

    Raises
    ------
    helioforge.data.hinode.HinodeReadError
        For an unreadable map, or one with the wrong number of wavelengths or Stokes parameters.
    helioforge.errors.InputError
        For a map that cannot be Hinode SP data (values beyond the instrument's range, a
        continuum that is not positive, no Fe I absorption lines: see
        :func:`helioforge.data.hinode_sp.plausibility_problem`), with no valid pixel, whose
        quiet-Sun continuum cannot be found, or whose wavelength axis puts the quiet-Sun line
        cores more than 0.06 Å from their laboratory wavelengths; the message names the file.
    """
    from helioforge.data import hinode_sp
    from helioforge.errors import InputError

    t0 = time.perf_counter()
    sp, skipped = hinode_sp.read_sp_map(path)
    why = hinode_sp.plausibility_problem(sp)  # the whole map first: medians, robust to a few bad pixels
    if why is not None:
        raise InputError(f"{path}: {why}")
    try:
        sp, bad, counts = hinode_sp.flag_bad_pixels(sp)
    except hinode_sp.SPReadError as exc:
        raise InputError(str(exc)) from None
    if bad.any():
        log.warning("%s: %d of %d pixel(s) cannot be inverted (%d non-finite, %d with negative Stokes I counts, %d "
                    "saturated): masked, NaN in the output there", path, int(bad.sum()), bad.size, counts["nonfinite"],
                    counts["negative"], counts["saturated"])
    if calibrate:
        try:
            sp, cal = hinode_sp.calibrate_wavelength(sp, mask=quiet_mask, qs_velocity_kms=qs_velocity_kms)
        except (hinode_sp.SPReadError, ValueError) as exc:
            raise InputError(str(exc)) from None
        log.info("%s: wavelength axis calibrated on the quiet-Sun Fe I line cores: they were at %+.2f km/s "
                 "(6301.5: %+.2f, 6302.5: %+.2f), shift %+.1f mA at 6302 A (%d quiet pixels)", path,
                 cal["velocity_kms"], *cal["line_velocities_kms"], cal["shift_mA"], cal["n_quiet"])
    sp = hinode_sp.to_standard_grid(sp)
    try:
        sp, ic = hinode_sp.normalise_quiet_sun(sp, mask=quiet_mask)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None
    return sp, skipped, float(ic), time.perf_counter() - t0


def invert_map(path: str | Path, stem: str | Path, branch: int = 0, device: str | None = None,
               quiet_mask: np.ndarray | None = None,
               pixel_scale: tuple[float, float] | None = None, calibrate: bool = True,
               qs_velocity_kms: float = 0.0) -> tuple[AtmosCube, dict[str, Any]]:
    """Invert a Hinode SP map file (or folder of per-slit files) into an atmosphere cube.

    The map's pixel (``XSCALE``, ``YSCALE``) is checked against the pixel the networks were
    trained at (sidecar ``stokes.pixel_arcsec``, 0.16″): an axis that differs by more than 2 %
    is **resampled** to it with a warning naming the file
    (:func:`helioforge.data.hinode_sp.match_pixel_scale`), and the cube is then on the trained
    pixel (header cards ``HF pixel_scale_x``, ``HF pixel_scale_y``, ``HF pixel_resampled``); a
    map without the cards gets a warning naming the file and is taken to be at the trained
    pixel (``HF pixel_scale_source = assumed``) unless ``pixel_scale`` is given.

    Pixels that cannot be inverted (non-finite values, negative Stokes I counts, saturated
    level-1 Stokes I, a continuum that is not positive) are masked: the network sees the median
    profile there and the cube holds NaN at those pixels (``info["mask"]``, ``info["n_masked"]``,
    header cards ``HF masked_pixels``, ``HF bad_nonfinite``, ``HF bad_negative``,
    ``HF bad_saturated``; a warning names the file); the other pixels are inverted.
    ``helioforge invert`` writes the mask as the ``MASK`` extension of the cube.

    Parameters
    ----------
    path : SP level-1 cube or folder of per-slit FITS files (:mod:`helioforge.data.hinode_sp`).
    stem : trained network weights.
    branch : azimuth solution for (B_x, B_y, B_z): 0 (B_x ≥ 0) or 1 (the opposite).
    quiet_mask : optional (ny, nx) bool mask of the quiet Sun used for the continuum normalisation.
    pixel_scale : (x, y) pixel of the map [arcsec], instead of its XSCALE/YSCALE cards.
    calibrate, qs_velocity_kms : wavelength calibration on the quiet-Sun Fe I line cores (see
        :func:`load_map`); the correction is in the header (``HF wavelength_shift_mA``,
        ``HF qs_core_velocity_kms``: where the cores were before, km/s).

    Returns
    -------
    (AtmosCube, info) where info holds the normalised Stokes map (at the trained pixel),
    wavelength calibration (``wavelength_calibration``) and shift, I_c used, skipped files, the pixel-scale check (``pixel_scale``: see
    :func:`~helioforge.data.hinode_sp.match_pixel_scale`), the mask of the masked pixels
    (``mask``, ``n_masked``) and timings.

    Raises
    ------
    helioforge.data.hinode.HinodeReadError
        For an unreadable map, or one with the wrong number of wavelengths or Stokes parameters.
    helioforge.errors.InputError
        For an implausible map (see :func:`load_map`).
    helioforge.errors.ProductError
        For weights that are unfinished, damaged or inconsistent
        (:meth:`~helioforge.inversion.training.SiconInverter.from_weights`).
    ValueError
        For ``branch`` not 0 or 1.
    """
    if branch not in (0, 1):
        raise ValueError(f"branch must be 0 or 1, got {branch}")
    from helioforge.inversion.training import SiconInverter

    inverter = SiconInverter.from_weights(stem, device=device)  # damaged weights: refused before any reading
    from helioforge.data.hinode_sp import match_pixel_scale

    sp, skipped, ic, t_read = load_map(path, quiet_mask, calibrate=calibrate, qs_velocity_kms=qs_velocity_kms)
    cal = sp.header.get("wavelength_calibration") or {}
    sp, pix = match_pixel_scale(sp, inverter.pixel_arcsec, pixel_scale=pixel_scale)
    bad = masked_pixels(sp.stokes, sp.wavelength)
    n_bad = int(bad.sum())
    flagged = sp.header.get("bad_pixels") or {}
    if n_bad:
        log.warning("%s: %d of %d pixel(s) masked (non-finite, negative or saturated counts, or no positive "
                    "continuum): NaN in the output there", path, n_bad, bad.size)
    data, t_net = invert_stokes(fill_masked(sp.stokes, bad), inverter)
    data[..., bad] = np.nan
    bxyz = field_vector(data, branch)
    bxyz[..., bad] = np.nan
    params = {"network_weights": _ascii(Path(stem).name), "input": _ascii(Path(path).name), "branch": branch,
              "ic_normalisation": float(ic), "masked_pixels": n_bad, "software": f"helioforge {__version__}",
              "pixel_scale_x": float(sp.header["pixel_scale_arcsec"]["x"]) if pix["source"] != "assumed" else
              float(pix["target_arcsec"][0]),
              "pixel_scale_y": float(sp.header["pixel_scale_arcsec"]["y"]) if pix["source"] != "assumed" else
              float(pix["target_arcsec"][1]),
              "pixel_scale_source": pix["source"], "pixel_resampled": ",".join(pix["resampled"]) or "none",
              "bad_nonfinite": int(flagged.get("nonfinite", 0)), "bad_negative": int(flagged.get("negative", 0)),
              "bad_saturated": int(flagged.get("saturated", 0)),
              "wavelength_calibrated": bool(cal)}
    if cal:
        params.update(wavelength_shift_mA=float(cal["shift_mA"]), qs_core_velocity_kms=float(cal["velocity_kms"]),
                      qs_velocity_kms=float(qs_velocity_kms))
    info = {"stokes": sp.stokes, "wavelength": sp.wavelength, "ic": float(ic), "skipped": skipped,
            "wavelength_calibration": cal or None,
            "pixel_scale": pix,
            "seconds_read": t_read, "seconds_network": t_net, "sp": sp, "mask": bad, "n_masked": n_bad}
    return AtmosCube(data=data, bxyz=bxyz, branch=branch, params=params), info


def _quiet_core_velocity(stokes: np.ndarray, quiet: np.ndarray, wavelength: np.ndarray) -> list[float] | None:
    """Doppler velocities [km/s] of the Fe I line cores of the mean quiet-Sun I of held-out maps
    (``stokes`` (N, 4, nλ, H, W), ``quiet`` (N, H, W)): the convention real maps are calibrated to."""
    from helioforge.data.hinode_sp import line_core_velocities

    if not quiet.any():
        return None
    mean_i = np.moveaxis(stokes[:, 0], 1, -1)[quiet].mean(axis=0)
    return [float(v) for v in line_core_velocities(np.asarray(wavelength, dtype=np.float64), mean_i)[1]]


def run_validation(workdir: str | Path, valset: str | Path, sample: str | Path | None, spinor: str | Path | None,
                   out_dir: str | Path, networks: tuple[str, ...] = ("encdec", "concat"), me_pixels: int = 1000,
                   device: str | None = None) -> dict[str, Any]:
    """Validate trained networks and write the report (paper §4.1, §4.4; issue 5 item 5).

    Parameters
    ----------
    workdir : work folder with ``train_<network>/sicon_<network>`` weights.
    valset : held-out training-set folder (a generator run with another seed).
    sample : real SP map to invert (the data folder's sample by default in the CLI), or None.
    spinor : folder of the SPINOR inversion of ``sample``, or None.
    out_dir : report folder.
    me_pixels : held-out pixels inverted by the Milne-Eddington baseline.

    Returns
    -------
    metrics dict (also in ``out_dir/metrics.json``).

    Raises
    ------
    helioforge.inversion.trainset.TrainsetError : ``valset`` incomplete or damaged (every shard
        is checked against the manifest's checksums first), or normalised against another
        quiet-Sun reference (I_c, z offset) than the training set of a network (the message
        names both sets; :func:`~helioforge.inversion.trainset.require_same_reference`).
    FileNotFoundError : no trained network in ``workdir``.
    helioforge.errors.ProductError : unfinished or damaged weights.
    helioforge.errors.InputError : ``me_pixels`` < 1, or an implausible ``sample`` map.

    Nothing is written before these checks pass.
    """
    import pandas as pd

    from helioforge.inversion import validate as V
    from helioforge.inversion.atmos_cube import read_spinor, resynthesize
    from helioforge.inversion.training import SiconInverter
    from helioforge.errors import check_count
    from helioforge.inversion.trainset import (TrainsetDataset, quiet_sun_reference_of, require_same_reference,
                                               verify_trainset)

    check_count("me_pixels", me_pixels, 1)
    out = Path(out_dir)
    man = verify_trainset(valset)  # a damaged held-out set is refused, not read as zeros
    present = [n for n in networks if Path(str(weights_stem(workdir, n)) + ".safetensors").is_file()]
    if not present:
        raise FileNotFoundError(f"{workdir}: no trained networks (train_<network>/sicon_<network>.safetensors); run "
                                f"`helioforge inversion train -t TRAINSET -w {workdir} -n encdec` first")
    inverters = {net: SiconInverter.from_weights(weights_stem(workdir, net), device=device) for net in present}
    val_ref = quiet_sun_reference_of(man, Path(valset))
    for net, inv in inverters.items():  # the held-out maps must be normalised as the training maps were
        sidecar = Path(str(weights_stem(workdir, net)) + ".json")
        trained_on = (inv.config.get("trainset") or {}).get("path") or str(sidecar)
        require_same_reference(quiet_sun_reference_of(inv.config, sidecar), val_ref, trained_on, Path(valset),
                               f"make the held-out set with the training set's reference: `helioforge inversion "
                               f"make-trainset -o NEW_VALSET --seed N --reference-from {trained_on}` (network {net}, "
                               f"{sidecar})")
    ds = TrainsetDataset(valset, noise_sigma=man["stokes"]["noise_sigma"], generator=torch.Generator().manual_seed(1))
    pairs = [ds[i][:2] for i in range(len(ds))]  # one read (and one noise draw) per patch
    stokes = np.stack([p[0].numpy() for p in pairs])
    truth = np.stack([p[1].numpy() for p in pairs])
    wav = np.asarray(man["stokes"]["wavelengths_air_A"])
    tables, figures = [], {"kde": [], "profiles": []}
    regions = V.region_masks(truth)
    n_pix = {k: int(m.sum()) for k, m in regions.items()}
    metrics = {"valset": str(valset), "n_maps": len(ds), "map_size": list(stokes.shape[-2:]),
               "pixels_per_region": n_pix, "quiet_sun_reference": val_ref, "timing": {},
               "region_note": (f"{len(ds)} held-out maps of {stokes.shape[-2]}×{stokes.shape[-1]} pixels, each inverted "
                               f"whole; quiet: true |B| below {V.MAGNETIC_B_G:.0f} G at log τ = −1 ({n_pix['quiet']} pixels), "
                               f"magnetic: {V.MAGNETIC_B_G:.0f} G or more ({n_pix['magnetic']} pixels). Intervals: 95 % "
                               f"bootstrap over the {len(ds)} maps (200 resamples); with few maps they are wide, and "
                               "differences inside them are not resolved by this set."),
               "synthetic_qs_core_velocity_kms": _quiet_core_velocity(stokes, regions["quiet"], wav)}
    sample_map = load_map(sample)[0] if sample is not None else None  # an unreadable map: refused before writing
    reference = read_spinor(spinor) if (sample is not None and spinor is not None) else None
    out.mkdir(parents=True, exist_ok=True)
    tables.append(V.validation_table(np.zeros_like(truth), truth, label="constant", regions=regions, n_boot=200))
    for net, inv in inverters.items():
        pred, secs = invert_stokes(stokes, inv)
        tables.append(V.validation_table(pred, truth.reshape(pred.shape), label=net, regions=regions, n_boot=200))
        V.kde_figure(pred, truth, out / f"kde_{net}.png", title=f"{net}: inferred − true, {len(ds)} held-out maps")
        figures["kde"].append(f"kde_{net}.png")
        metrics["timing"][f"{net}_s_per_map"] = secs / len(ds)
    me_table, me_info = V.me_baseline(stokes, truth, wav, max_pixels=me_pixels, n_boot=200)
    tables.append(me_table)
    metrics["me_baseline"] = me_info
    metrics["timing"]["me_pixels_per_s"] = me_info["pixels_per_s"]
    all_tables = {"validation": pd.concat(tables, ignore_index=True)}
    if sample_map is not None:
        sp = sample_map
        bad = masked_pixels(sp.stokes, sp.wavelength)
        if bad.any():
            log.warning("%s: %d pixel(s) masked (non-finite or no positive continuum): filled with the median profile "
                        "for the comparison", sample, int(bad.sum()))
            metrics["sample_masked_pixels"] = int(bad.sum())
            sp = dataclasses.replace(sp, stokes=fill_masked(sp.stokes, bad))
        spinor_rows, resyn_rows = [], []
        for net, inv in inverters.items():
            data, _ = invert_stokes(sp.stokes, inv)
            if reference is not None:
                t = V.spinor_comparison(data, reference)
                t.insert(0, "network", net)
                spinor_rows.append(t)
            syn, syn0 = resynthesize(data, man["stokes"]["ic_quiet_sun_cgs"])
            resyn_rows += [{"network": net, "psf": True, **V.resynthesis_rms(sp.stokes, syn)},
                           {"network": net, "psf": False, **V.resynthesis_rms(sp.stokes, syn0)}]
            V.profiles_figure(sp.wavelength, sp.stokes, syn, syn0, out / f"profiles_{net}.png")
            figures["profiles"].append(f"profiles_{net}.png")
        if spinor_rows:
            all_tables["spinor"] = pd.concat(spinor_rows, ignore_index=True)
        all_tables["resynthesis"] = pd.DataFrame(resyn_rows)
    val = all_tables["validation"]
    at1 = val[(val.log_tau == -1.0) & (val.region == "all")]
    metrics["mad_at_log_tau_-1"] = {m: {r.quantity: r.mad for r in g.itertuples()} for m, g in at1.groupby("method")}
    metrics["mad_interval_at_log_tau_-1"] = {
        m: {r.quantity: [r.mad_lo, r.mad_hi] for r in g.itertuples()} for m, g in at1.groupby("method")}
    if sample_map is not None:
        metrics["sample_wavelength_calibration"] = sample_map.header.get("wavelength_calibration")
    V.write_report(out, tables=all_tables, figures=figures, metrics=metrics,
                   intro=f"Held-out set {valset} ({len(ds)} maps, noise {man['stokes']['noise_sigma']:g} I_c added); "
                         f"networks: {', '.join(present)}; ME baseline on {me_info['pixels']} pixels.")
    return metrics
