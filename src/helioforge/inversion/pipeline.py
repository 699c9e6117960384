"""The SICON job over a work folder (paper §4): where the stages put their products, and the
validation of trained networks that chains them (``helioforge inversion validate``).

Stages (one module each): :mod:`~helioforge.inversion.config` (profiles) →
:mod:`~helioforge.inversion.dataset` (training sets; forward model
:mod:`~helioforge.inversion.forward`, targets :mod:`~helioforge.inversion.targets`) →
:mod:`~helioforge.inversion.train` (networks of :mod:`~helioforge.inversion.model`) →
:mod:`~helioforge.inversion.infer` (inverting SP maps, after
:mod:`~helioforge.inversion.preprocess`) → :mod:`~helioforge.inversion.evaluate` (metrics) →
:mod:`~helioforge.inversion.report` (figures, HTML).

Work folder: ``<workdir>/train_<network>/sicon_<network>`` (:func:`training_dir`,
:func:`weights_stem`) for each network; :func:`run_validation` reads them, inverts the held-out
set, the Milne-Eddington baseline and the real sample, and writes the report folder.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from helioforge.errors import check_count
from helioforge.inversion import evaluate as V
from helioforge.inversion import report
from helioforge.inversion.atmos_cube import read_spinor, resynthesize
from helioforge.inversion.dataset import (TrainsetDataset, quiet_sun_reference_of, require_same_reference,
                                          verify_trainset)
from helioforge.inversion.infer import SiconInverter, fill_masked, invert_stokes, load_map, masked_pixels
from helioforge.inversion.model import SICON_STEM
from helioforge.inversion.preprocess import line_core_velocities
from helioforge.inversion.train import train_sicon
from helioforge.locking import workdir_lock

__all__ = ["training_dir", "weights_stem", "train_network", "run_validation"]

log = logging.getLogger(__name__)


def training_dir(workdir: str | Path, network: str) -> Path:
    """The training folder of ``network`` in a work folder (checkpoints, logs, final weights).

    Parameters
    ----------
    workdir : str or Path
        The work folder.
    network : str
        ``encdec`` or ``concat``.

    Returns
    -------
    Path
        ``<workdir>/train_<network>``.
    """
    return Path(workdir) / f"train_{network}"


def weights_stem(workdir: str | Path, network: str) -> Path:
    """Where ``helioforge inversion train`` keeps the weights of ``network`` in a work folder.

    Parameters
    ----------
    workdir : str or Path
        The work folder.
    network : str
        ``encdec`` or ``concat``.

    Returns
    -------
    Path
        ``<workdir>/train_<network>/sicon_<network>`` (no suffix: ``.safetensors`` + ``.json``).
    """
    return training_dir(workdir, network) / SICON_STEM.format(network=network)


def train_network(trainset: str | Path, workdir: str | Path, network: str = "encdec", profile: str = "cpu", *,
                  accelerator: str = "auto", devices: int | str = "auto", progress: bool = True, verify: bool = True,
                  force: bool = False) -> Path:
    """Train (or resume) ``network`` on ``trainset`` into the work folder: the weights go to
    :func:`weights_stem` ``(workdir, network)`` (``helioforge inversion train``).

    The training set is verified before anything is made (``verify``), then the work folder is
    locked while :func:`~helioforge.inversion.train.train_sicon` runs in :func:`training_dir`.

    Returns
    -------
    Path : the weights stem (``.safetensors`` + ``.json``).

    Raises
    ------
    helioforge.inversion.dataset.TrainsetError, helioforge.errors.FolderInUse, ValueError,
    helioforge.errors.ProductError : as :func:`~helioforge.inversion.train.train_sicon`.
    """
    if verify:  # before the lock: a damaged set leaves no work folder behind
        verify_trainset(trainset)
    with workdir_lock(workdir):
        return train_sicon(trainset, training_dir(workdir, network), network=network, profile=profile,
                           progress=progress, verify=False, force=force, accelerator=accelerator, devices=devices)


def _quiet_core_velocity(stokes: np.ndarray, quiet: np.ndarray, wavelength: np.ndarray) -> list[float] | None:
    """Doppler velocities [km/s] of the Fe I line cores of the mean quiet-Sun I of held-out maps
    (``stokes`` (N, 4, nλ, H, W), ``quiet`` (N, H, W)): the convention real maps are calibrated to."""
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
    helioforge.inversion.dataset.TrainsetError : ``valset`` incomplete or damaged (every shard
        is checked against the manifest's checksums first), or normalised against another
        quiet-Sun reference (I_c, z offset) than the training set of a network (the message
        names both sets; :func:`~helioforge.inversion.dataset.require_same_reference`).
    FileNotFoundError : no trained network in ``workdir``.
    helioforge.errors.ProductError : unfinished or damaged weights.
    helioforge.errors.InputError : ``me_pixels`` < 1, or an implausible ``sample`` map.

    Nothing is written before these checks pass.
    """
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
        report.kde_figure(pred, truth, out / f"kde_{net}.png", title=f"{net}: inferred − true, {len(ds)} held-out maps")
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
            report.profiles_figure(sp.wavelength, sp.stokes, syn, syn0, out / f"profiles_{net}.png")
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
    report.write_report(out, tables=all_tables, figures=figures, metrics=metrics,
                   intro=f"Held-out set {valset} ({len(ds)} maps, noise {man['stokes']['noise_sigma']:g} I_c added); "
                         f"networks: {', '.join(present)}; ME baseline on {me_info['pixels']} pixels.")
    return metrics
