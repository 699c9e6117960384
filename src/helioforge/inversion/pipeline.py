"""The SICON job: invert a Hinode SP map, and validate the trained networks (paper §4).

``invert_map`` is the Python API under ``helioforge invert``: read → normalise to the quiet Sun
and resample to the standard grid → network → physical units → cube with (B_x, B_y, B_z).
``run_validation`` is ``helioforge inversion validate``: held-out synthetic maps (MAD, KDE),
the Milne-Eddington baseline, the real sample against SPINOR, the re-synthesis check and the
timings, as a report folder.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from helioforge import __version__
from helioforge.inversion.atmos_cube import AtmosCube, field_vector, split_targets

__all__ = ["training_dir", "weights_stem", "load_map", "invert_map", "invert_stokes", "run_validation"]

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


def load_map(path: str | Path, quiet_mask: np.ndarray | None = None):
    """Read an SP map, resample it to the standard grid and normalise it to the quiet Sun (§4).

    Returns
    -------
    (SPMap in quiet-Sun continuum units, skipped files, I_c used [counts], seconds)

    Raises
    ------
    helioforge.data.hinode.HinodeReadError
        For an unreadable map, or one with the wrong number of wavelengths or Stokes parameters.
    """
    from helioforge.data import hinode_sp

    t0 = time.perf_counter()
    sp, skipped = hinode_sp.read_sp_map(path)
    sp = hinode_sp.to_standard_grid(sp)
    sp, ic = hinode_sp.normalise_quiet_sun(sp, mask=quiet_mask)
    return sp, skipped, float(ic), time.perf_counter() - t0


def invert_map(path: str | Path, stem: str | Path, branch: int = 0, device: str | None = None,
               quiet_mask: np.ndarray | None = None) -> tuple[AtmosCube, dict[str, Any]]:
    """Invert a Hinode SP map file (or folder of per-slit files) into an atmosphere cube.

    Parameters
    ----------
    path : SP level-1 cube or folder of per-slit FITS files (:mod:`helioforge.data.hinode_sp`).
    stem : trained network weights.
    branch : azimuth solution for (B_x, B_y, B_z): 0 (B_x ≥ 0) or 1 (the opposite).
    quiet_mask : optional (ny, nx) bool mask of the quiet Sun used for the continuum normalisation.

    Returns
    -------
    (AtmosCube, info) where info holds the normalised Stokes map, wavelength shift, I_c used,
    skipped files and timings.

    Raises
    ------
    helioforge.data.hinode.HinodeReadError
        For an unreadable map, or one with the wrong number of wavelengths or Stokes parameters.
    ValueError
        For ``branch`` not 0 or 1.
    """
    if branch not in (0, 1):
        raise ValueError(f"branch must be 0 or 1, got {branch}")
    sp, skipped, ic, t_read = load_map(path, quiet_mask)
    data, t_net = invert_stokes(sp.stokes, stem, device)
    bxyz = field_vector(data, branch)
    params = {"network_weights": Path(stem).name, "input": Path(path).name, "branch": branch,
              "ic_normalisation": float(ic), "software": f"helioforge {__version__}"}
    info = {"stokes": sp.stokes, "wavelength": sp.wavelength, "ic": float(ic), "skipped": skipped,
            "seconds_read": t_read, "seconds_network": t_net, "sp": sp}
    return AtmosCube(data=data, bxyz=bxyz, branch=branch, params=params), info


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
    """
    import pandas as pd

    from helioforge.inversion import validate as V
    from helioforge.inversion.atmos_cube import read_spinor, resynthesize
    from helioforge.inversion.training import SiconInverter
    from helioforge.inversion.trainset import TrainsetDataset, read_manifest

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    man = read_manifest(valset)
    ds = TrainsetDataset(valset, noise_sigma=man["stokes"]["noise_sigma"], generator=torch.Generator().manual_seed(1))
    pairs = [ds[i][:2] for i in range(len(ds))]  # one read (and one noise draw) per patch
    stokes = np.stack([p[0].numpy() for p in pairs])
    truth = np.stack([p[1].numpy() for p in pairs])
    wav = np.asarray(man["stokes"]["wavelengths_air_A"])
    tables, figures, metrics = [], {"kde": [], "profiles": []}, {"valset": str(valset), "n_maps": len(ds),
                                                                  "timing": {}}
    present = [n for n in networks if Path(str(weights_stem(workdir, n)) + ".safetensors").is_file()]
    if not present:
        raise FileNotFoundError(f"{workdir}: no trained networks (train_<network>/sicon_<network>.safetensors); run "
                                "'helioforge inversion train' first")
    inverters = {net: SiconInverter.from_weights(weights_stem(workdir, net), device=device) for net in present}
    for net, inv in inverters.items():
        pred, secs = invert_stokes(stokes, inv)
        tables.append(V.validation_table(pred, truth.reshape(pred.shape), label=net))
        V.kde_figure(pred, truth, out / f"kde_{net}.png", title=f"{net}: inferred − true, {len(ds)} held-out maps")
        figures["kde"].append(f"kde_{net}.png")
        metrics["timing"][f"{net}_s_per_map"] = secs / len(ds)
    me_table, me_info = V.me_baseline(stokes, truth, wav, max_pixels=me_pixels)
    tables.append(me_table)
    metrics["me_baseline"] = me_info
    metrics["timing"]["me_pixels_per_s"] = me_info["pixels_per_s"]
    all_tables = {"validation": pd.concat(tables, ignore_index=True)}
    if sample is not None:
        sp, _, _, _ = load_map(sample)
        reference = read_spinor(spinor) if spinor is not None else None
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
    metrics["mad_at_log_tau_-1"] = {
        m: {r.quantity: r.mad for r in g[g.log_tau == -1.0].itertuples()}
        for m, g in all_tables["validation"].groupby("method")}
    V.write_report(out, tables=all_tables, figures=figures, metrics=metrics,
                   intro=f"Held-out set {valset} ({len(ds)} maps, noise {man['stokes']['noise_sigma']:g} I_c added); "
                         f"networks: {', '.join(present)}; ME baseline on {me_info['pixels']} pixels.")
    return metrics
