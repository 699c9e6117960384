"""Synthetic training sets of (Stokes maps, atmosphere maps) for the SICON inversion: the
data stage of :mod:`helioforge.inversion` (zarr shards, manifest, verification, the torch
Dataset and the range diagnostics).

Recipe (Asensio Ramos & Díaz Baso 2019, A&A 626, A102, §2), with the 3-D MHD snapshots of the
paper replaced by the 2-D maps of 1-D models of :mod:`helioforge.inversion.atmospheres`:

Stokes maps (inputs)
    1.–3. synthesis and Hinode SP degradation by the forward model
       (:class:`helioforge.inversion.forward.StokesChain`);
    4. division by the median continuum of a quiet-Sun reference map (one value for the whole
       set, recorded in the manifest with the z zero point, ``quiet_sun_reference``). The
       reference map is drawn from its own seed (``qs_reference_seed``), not the set's, so a
       held-out set made with another seed shares it; ``make_trainset(reference_from=...)``
       makes a set with the reference of another one, and :func:`require_same_reference`
       refuses to validate networks on a set normalised against another reference;
    5. the noise of 10⁻³ I_c is **not** stored: the maps are noise-free and the noise is meant to
       be added online in training (:class:`TrainsetDataset` ``noise_sigma``).

Targets (outputs), 7 quantities × 7 optical-depth surfaces = 49 maps, quantity-major
(:mod:`helioforge.physics.sicon_targets`, made by :func:`helioforge.inversion.targets.patch_targets`):
    ``T`` [K]; ``vz`` [km s⁻¹, **positive = downflow** (redshift at disk centre), the SIR v_LOS
    sign, which is also SICON's: its ``rempel_vzminus`` files flip MURaM's upward v_z and the
    normalisation ranges are skewed to positive values, −8.7…+15.4 km s⁻¹ at log τ = 0, as
    fast narrow downflows are]; ``z`` [km, positive upward, relative to the mean log τ = 0
    height of the quiet-Sun reference map]; ``logP`` [log₁₀ of P_gas in dyn cm⁻²]; ``BQ``,
    ``BU``, ``BV`` [G] (eq. 1, :func:`~helioforge.physics.sicon_targets.bq_bu_bv`), at log τ = 0, −0.5, …, −3, as r×r means over
    the model pixels of each 0.16″ pixel (rebinned, not PSF-degraded: paper §2 "physical
    conditions" step 1). SICON's file stores vz and z in cm s⁻¹ and cm: :func:`sicon_ranges`
    converts them.

Storage: ``out_dir/shard_NNNNN.zarr`` (zarr 3 groups) holding ``stokes`` (N, 4, 112, H, W)
float32, ``targets`` (N, 49, H, W) float32, ``kind`` (N,) int8 (index in
:data:`~helioforge.inversion.atmospheres.KINDS`) and ``patch_index`` (N,) int64, one chunk per
patch. The float32 arrays are compressed with **Blosc zstd level 3, byte shuffle**, chosen by
measurement (``benchmarks/bench_trainset_dask.py``, 6 patches of 32×32: 1.57 MB a patch against
2.04 MB raw and 1.88 MB with zarr's default Zstd level 0 that earlier sets used, reads in 5–8 ms a
patch; the smallest store among the codecs that write and read within 2× of the fastest;
noise-free float32 spectra compress little). The codec is stored in each array's metadata, so
shards written before keep being read; the checksums hash the decoded arrays, so they do not
depend on the codec (the benchmark checks it). Each shard is written under a temporary name
and renamed when complete, and ``manifest.json`` (atomic) lists the shards with their SHA-256
checksums. A rerun verifies the complete shards against them and keeps those that match
(resumable); a damaged one (a chunk deleted, garbled or edited) is taken off the manifest and
made again. Patch i is always drawn
from ``default_rng([seed, i])``, so a remade shard is bit-identical. Readers of a set
(training, validation) check every shard first (:func:`verify_trainset`): a deleted chunk
would otherwise read as zeros. ``make_trainset`` holds the folder's lock while it runs.

Clusters (issue 15): with ``make_trainset(..., scheduler="local" | "tcp://HOST:PORT")`` each
missing shard is one task on a Dask cluster (:mod:`helioforge.inversion.cluster`), made by the
same code (:func:`_write_shard`) from the same seeds, so a shard is the same bit for bit however
it is made; this process alone writes the manifest, which records the code version, the
synthesis kernel, the scheduler and the shards that failed. See docs/inversion.md, "Training
sets on a cluster".
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import functools
import hashlib
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported where the table is built
    import pandas as pd

import numpy as np
import torch

from helioforge import __version__
from helioforge.config import data_root
from helioforge.errors import InputError, ProductError
from helioforge.inversion.atmospheres import KINDS, ModelSet, load_model_set, make_patch_atmosphere
from helioforge.inversion.config import TrainsetProfile, get_trainset_profile
from helioforge.inversion.forward import StokesChain, SynthesizeFn, kernel_functions
from helioforge.inversion.instrument import HinodeSP
from helioforge.inversion.targets import interp_log_tau, patch_targets, target_names
from helioforge.io import write_json, write_text
from helioforge.locking import workdir_lock
from helioforge.physics.eos import EOS_VERSION
from helioforge.physics.sicon_targets import QUANTITIES, TARGET_UNITS
from helioforge.progress import progress_bar

__all__ = [
    "quiet_sun_reference",
    "quiet_sun_reference_of",
    "require_same_reference",
    "make_patch",
    "make_trainset",
    "read_manifest",
    "shard_checksum",
    "shard_problem",
    "verify_trainset",
    "reading_shard",
    "make_trainset_command",
    "TrainsetError",
    "ShardsFailed",
    "TrainsetDataset",
    "sicon_ranges",
    "target_ranges",
    "MANIFEST",
]

logger = logging.getLogger(__name__)

#: Multipliers from SICON's ``encdec_normalization.npz`` units to ours (vz cm/s → km/s, z cm → km).
_SICON_TO_OURS = {"T": 1.0, "vz": 1e-5, "z": 1e-5, "logP": 1.0, "BQ": 1.0, "BU": 1.0, "BV": 1.0}

MANIFEST = "manifest.json"
#: Runs a manifest's ``runs`` history keeps (the latest).
_MAX_RUNS = 50
_FORMAT = "helioforge-sicon-trainset"
_FORMAT_VERSION = 1


class TrainsetError(ProductError, RuntimeError):
    """A training-set folder that cannot be used (settings changed, corrupt shard, missing manifest).

    A :class:`~helioforge.errors.ProductError` (and, as before, a ``RuntimeError``):
    ``str(err)`` is ``"<path>: <problem>"`` followed by ``"; <remedy>"`` when there is one;
    attributes ``path``, ``problem`` and ``remedy``.
    """

    def __init__(self, path: str | Path, problem: str, remedy: str = "") -> None:
        ProductError.__init__(self, path, str(problem), remedy)

    def __reduce__(self):
        return (type(self), (self.path, self.problem, self.remedy))


class ShardsFailed(TrainsetError):
    """Some shards of a training set made on a Dask cluster failed after their retries.

    The other shards were made and are listed in the manifest (``complete`` is ``False``; its
    ``failed`` entry describes each failure); rerunning the same command makes only the
    missing shards.

    Parameters
    ----------
    path : str or Path
        The manifest.
    problem : str
        The failed shards and their errors, in words.
    remedy : str
        The command that makes the missing shards.
    failed : list of dict
        The manifest's ``failed`` entries: ``shard``, ``file``, ``first_patch``, ``n``,
        ``patches`` ("first–last"), ``seed``, ``rng`` (the patches' generators), ``error``.
    manifest : dict, optional
        The manifest as written.
    """

    def __init__(self, path: str | Path, problem: str, remedy: str = "", failed: list[dict[str, Any]] | None = None,
                 manifest: dict[str, Any] | None = None) -> None:
        super().__init__(path, problem, remedy)
        self.failed = list(failed or [])
        self.manifest = manifest

    def __reduce__(self):
        return (type(self), (self.path, self.problem, self.remedy, self.failed, self.manifest))


def make_trainset_command(root: str | Path, manifest: dict[str, Any] | None = None, *,
                          scheduler: str | None = None) -> str:
    """The ``helioforge inversion make-trainset`` command that resumes (or repairs) the set in ``root``.

    Parameters
    ----------
    root : str or Path
        The training-set folder (``-o``).
    manifest : dict, optional
        Its manifest; its ``profile_name``, ``n_patches``, ``patch_size`` and ``seed`` become ``-p``,
        ``--patches``, ``--size`` and ``--seed`` when present, and ``shard_size`` becomes
        ``--shard-size`` when it differs from the profile's.
    scheduler : str, optional
        ``--scheduler`` of the command (``local`` or a scheduler address); none: serial.

    Returns
    -------
    str
        The shell command, arguments quoted with :func:`shlex.quote`.
    """
    cmd = f"helioforge inversion make-trainset -o {shlex.quote(str(root))}"
    if isinstance(manifest, dict):
        for opt, key in (("-p", "profile_name"), ("--patches", "n_patches"), ("--size", "patch_size"),
                         ("--seed", "seed")):
            if manifest.get(key) is not None:
                cmd += f" {opt} {shlex.quote(str(manifest[key]))}"
        if manifest.get("shard_size") is not None:
            try:
                default = get_trainset_profile(str(manifest.get("profile_name"))).trainset.shard_size
            except ValueError:
                default = None
            if manifest["shard_size"] != default:
                cmd += f" --shard-size {shlex.quote(str(manifest['shard_size']))}"
    if scheduler:
        cmd += f" --scheduler {shlex.quote(str(scheduler))}"
    return cmd



def quiet_sun_reference(
    profile: TrainsetProfile, models: ModelSet, chain: StokesChain, hydrostatic: Callable | None = None
) -> dict[str, float]:
    """Median quiet-Sun continuum and mean log τ = 0 height of a reference quiet-Sun map.

    The map (``qs_reference_size``² model pixels, granulation and internetwork field, no
    network) is drawn from ``default_rng([qs_reference_seed, 2**32])``, synthesised and
    degraded. The seed is the reference's own, not the set's: a training set and a held-out set
    made with other seeds (and otherwise the same settings) get the same reference. (Until
    issue 13 it was the set's seed: a held-out set was normalised ≈ 1.2 % differently, 15–20 K
    at log τ = 0, with another z zero point.)

    Returns
    -------
    ``{"ic_quiet_sun": median continuum (first SP wavelength, 6300.89 Å) in
    erg s⁻¹ cm⁻² sr⁻¹ Hz⁻¹, "z_offset_km": mean z(log τ = 0), km}``.

    Source: paper §2 step 3 ("normalized to the median continuum in the surrounding quiet
    Sun") and "physical conditions" step 1 ("We subtract the average height of the log τ = 0
    surface on the quietest region").
    """
    ts = profile.trainset
    cfg = dataclasses.replace(profile.atmosphere, network_probability=0.0)
    rng = np.random.default_rng([ts.qs_reference_seed, 2**32])
    patch = make_patch_atmosphere(models, cfg, ts.qs_reference_size, ts.model_pixel_arcsec, rng, kind="quiet",
                                  hydrostatic=hydrostatic)
    stokes = chain(patch.atmosphere, ts.model_pixel_arcsec)
    ic = float(stokes[..., 0, 0].median())
    z0 = float(interp_log_tau(patch.z_km, models.log_tau, [0.0]).mean())
    return {"ic_quiet_sun": ic, "z_offset_km": z0}


#: Relative tolerance on I_c and absolute tolerance on the z offset [km] within which two
#: quiet-Sun references are the same.
_REF_RTOL_IC, _REF_ATOL_Z_KM = 1e-6, 1e-3


def quiet_sun_reference_of(document: dict[str, Any], where: str | Path | None = None) -> dict[str, Any]:
    """The quiet-Sun reference a training-set manifest or a SICON weights sidecar records.

    Parameters
    ----------
    document : a manifest (:func:`read_manifest`) or a weights sidecar: both hold
        ``stokes.ic_quiet_sun_cgs`` and ``targets.z_offset_km``; a ``quiet_sun_reference`` entry
        (written since issue 13) adds where the reference was made.
    where : the set (or sidecar) it was read from, for the record.

    Returns
    -------
    ``{"ic_quiet_sun_cgs": I_c [erg s⁻¹ cm⁻² sr⁻¹ Hz⁻¹], "z_offset_km": z(log τ = 0) [km],
    "id": short hash of the two values, "made_in": the set whose reference map gave them,
    "source": how}``.

    Raises
    ------
    TrainsetError : no I_c or z offset recorded (names ``where``).
    """
    rec = dict(document.get("quiet_sun_reference") or {})
    ic = rec.get("ic_quiet_sun_cgs", (document.get("stokes") or {}).get("ic_quiet_sun_cgs"))
    z0 = rec.get("z_offset_km", (document.get("targets") or {}).get("z_offset_km"))
    if ic is None or z0 is None:
        raise TrainsetError(where or "<manifest>", "no quiet-Sun reference recorded (stokes.ic_quiet_sun_cgs, "
                                                  "targets.z_offset_km)")
    ic, z0 = float(ic), float(z0)
    return {"ic_quiet_sun_cgs": ic, "z_offset_km": z0,
            "id": hashlib.sha1(f"{ic:.9e}/{z0:.6f}".encode()).hexdigest()[:12],
            "made_in": rec.get("made_in", str(where) if where is not None else None),
            "source": rec.get("source", "computed with the set (manifest before issue 13)")}


def require_same_reference(reference: dict[str, Any], other: dict[str, Any], reference_name: str | Path,
                           other_name: str | Path, remedy: str = "") -> None:
    """Refuse two sets (or a network and a set) normalised against different quiet-Sun references.

    The Stokes maps are divided by the reference's I_c and z is counted from its mean
    log τ = 0 height (paper §2 step 3 and "physical conditions" step 1): a network trained on
    one reference and measured on maps of another gets a bias in T (≈ 15–20 K at log τ = 0
    per 1 % of I_c) and in z that has nothing to do with the network.

    Parameters
    ----------
    reference, other : :func:`quiet_sun_reference_of` results.
    reference_name, other_name : the two sets (paths), named in the message.
    remedy : what to do instead (default: make ``other`` again with ``--reference-from``).

    Raises
    ------
    TrainsetError : I_c differ by more than 1e-6 (relative) or z offsets by more than 1e-3 km;
        the message names both sets and both references.
    """
    ic_a, ic_b = reference["ic_quiet_sun_cgs"], other["ic_quiet_sun_cgs"]
    z_a, z_b = reference["z_offset_km"], other["z_offset_km"]
    if abs(ic_a - ic_b) <= _REF_RTOL_IC * abs(ic_a) and abs(z_a - z_b) <= _REF_ATOL_Z_KM:
        return
    remedy = remedy or (f"make {other_name} again with the reference of {reference_name}: `helioforge inversion "
                        f"make-trainset -o NEW_FOLDER --reference-from {shlex.quote(str(reference_name))} ...`")
    raise TrainsetError(other_name, f"normalised against another quiet-Sun reference than {reference_name}: I_c "
                                    f"{ic_b:.6e} vs {ic_a:.6e} erg s-1 cm-2 sr-1 Hz-1 ({(ic_b / ic_a - 1) * 100:+.3f} %), "
                                    f"z(log tau=0) offset {z_b:.2f} vs {z_a:.2f} km (reference {other['id']} vs "
                                    f"{reference['id']})", remedy)


def make_patch(
    index: int,
    profile: TrainsetProfile,
    models: ModelSet,
    chain: StokesChain,
    reference: dict[str, float],
    hydrostatic: Callable | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Generate training pair ``index``: Stokes maps, target maps and patch kind.

    Draws from ``numpy.random.default_rng([seed, index])``; the Stokes maps are divided by
    ``reference["ic_quiet_sun"]`` and carry no noise; z is relative to
    ``reference["z_offset_km"]``. With ``margin_px`` > 0 the maps are made larger by that many
    SP pixels on each side and cropped after the PSF (no padding artefacts). Paper 003 §2.

    Parameters
    ----------
    index : int
        Patch number (with the profile's seed, it fixes the random draw).
    profile : TrainsetProfile
        Training-set settings (``trainset`` sizes and seed, ``atmosphere`` perturbations).
    models : ModelSet
        The reference model atmospheres and their log τ grid.
    chain : StokesChain
        Synthesis and instrument degradation (maps → (H, W, 4, 112)).
    reference : dict
        ``ic_quiet_sun`` (quiet-Sun continuum, same units as the synthesis) and ``z_offset_km`` (km).
    hydrostatic : callable, optional
        Hydrostatic solver; default the package's LTE solver.

    Returns
    -------
    tuple
        ``(stokes, targets, kind)``: stokes float32 (4, 112, H, W) in quiet-Sun continuum units;
        targets float32 (7 n_tau, H, W) = (49, H, W), quantity-major, in :data:`TARGET_UNITS`; kind the
        index into :data:`KINDS`. H = W = ``patch_size`` (SP pixels).
    """
    ts = profile.trainset
    r = ts.rebin()
    m = ts.margin_px
    rng = np.random.default_rng([ts.seed, int(index)])
    size = (ts.patch_size + 2 * m) * r
    patch = make_patch_atmosphere(models, profile.atmosphere, size, ts.model_pixel_arcsec, rng, hydrostatic=hydrostatic)
    stokes = chain(patch.atmosphere, ts.model_pixel_arcsec) / reference["ic_quiet_sun"]  # (H', W', 4, 112)
    targets = patch_targets(patch, models.log_tau, ts.target_log_tau, r, reference["z_offset_km"])
    if m:
        stokes = stokes[m:-m, m:-m]
        targets = targets[:, m:-m, m:-m]
    stokes = stokes.permute(2, 3, 0, 1).to(torch.float32).contiguous()
    return stokes.numpy(), targets.numpy(), KINDS.index(patch.kind)


# --------------------------------------------------------------------------- shards
def _shard_name(k: int) -> str:
    return f"shard_{k:05d}.zarr"


def _software() -> dict[str, str]:
    import zarr

    return {"helioforge": __version__, "torch": torch.__version__, "numpy": np.__version__, "zarr": zarr.__version__}


#: Entries every manifest written by :func:`make_trainset` holds, with their JSON type.
_MANIFEST_KEYS = {"digest": str, "shards": list, "stokes": dict, "targets": dict, "complete": bool}


def read_manifest(root: str | Path) -> dict[str, Any]:
    """Read ``root/manifest.json``.

    Raises
    ------
    TrainsetError : missing or unreadable manifest (garbled JSON, not an object, entries
        missing), or not a helioforge training set; the message names the file and the remedy.
    """
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise TrainsetError(path, "no manifest: not a training-set folder",
                            f"make it with `{make_trainset_command(root)}` (or pass the right folder)")
    garbled = ("delete it and rerun `helioforge inversion make-trainset -o {root}` with the options the set was made "
               "with (its complete shards are verified and kept)").format(root=shlex.quote(str(root)))
    try:
        man = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TrainsetError(path, f"unreadable manifest ({type(exc).__name__}: {exc})", garbled) from None
    if not isinstance(man, dict):
        raise TrainsetError(path, f"unreadable manifest (a JSON {type(man).__name__}, not an object)", garbled)
    if man.get("format") != _FORMAT:
        raise TrainsetError(path, f"not a {_FORMAT} manifest (format={man.get('format')!r})")
    for key, kind in _MANIFEST_KEYS.items():
        if not isinstance(man.get(key), kind):
            raise TrainsetError(path, f"damaged manifest: entry {key!r} missing or not a {kind.__name__}", garbled)
    for e in man["shards"]:
        if not (isinstance(e, dict) and isinstance(e.get("file"), str) and isinstance(e.get("n"), int)
                and isinstance(e.get("sha256"), str)):
            raise TrainsetError(path, f"damaged manifest: bad shard entry {str(e)[:80]}", garbled)
    return man


def _checksum_update(h, stokes: np.ndarray, targets: np.ndarray) -> None:
    h.update(np.ascontiguousarray(stokes, dtype="<f4").tobytes())
    h.update(np.ascontiguousarray(targets, dtype="<f4").tobytes())


def _existing_shard(path: Path, digest: str, first: int, n: int) -> dict[str, Any] | None:
    """Entry of a complete shard made with the same settings, else ``None`` (stale/partial)."""
    import zarr

    if not path.is_dir():
        return None
    try:
        g = zarr.open_group(str(path), mode="r")
        attrs = dict(g.attrs)
    except Exception as exc:  # noqa: BLE001 - any unreadable store is simply remade
        logger.warning("%s: unreadable shard (%s); it will be made again", path, exc)
        return None
    if not attrs.get("complete"):
        return None
    if attrs.get("digest") != digest:
        raise TrainsetError(path, f"made with other settings (digest {attrs.get('digest')} ≠ {digest}); use a new folder")
    if attrs.get("first_patch") != first or attrs.get("n") != n:
        raise TrainsetError(path, f"holds patches {attrs.get('first_patch')}+{attrs.get('n')}, expected {first}+{n}")
    return {"file": path.name, "first_patch": first, "n": n, "sha256": attrs["sha256"], "kinds": attrs["kinds"]}


def _shard_compressors() -> list:
    """The codec of the shards' float32 arrays: Blosc zstd level 3 with byte shuffle (see the module docstring)."""
    from zarr.codecs import BloscCodec

    return [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")]


def _write_shard(path: Path, indices: range, make: Callable[[int], tuple[np.ndarray, np.ndarray, int]],
                 digest: str, on_patch: Callable[[], None]) -> dict[str, Any]:
    import zarr

    tmp = path.with_name(f".{path.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    n = len(indices)
    g = zarr.open_group(str(tmp), mode="w")
    h = hashlib.sha256()
    kinds = np.zeros(n, dtype=np.int8)
    arr_s = arr_t = None
    for j, i in enumerate(indices):
        stokes, targets, kind = make(i)
        if arr_s is None:
            arr_s = g.create_array("stokes", shape=(n, *stokes.shape), chunks=(1, *stokes.shape), dtype="float32",
                                   compressors=_shard_compressors())
            arr_t = g.create_array("targets", shape=(n, *targets.shape), chunks=(1, *targets.shape), dtype="float32",
                                   compressors=_shard_compressors())
        arr_s[j] = stokes
        arr_t[j] = targets
        kinds[j] = kind
        _checksum_update(h, stokes, targets)
        on_patch()
    g.create_array("kind", shape=(n,), dtype="int8")[:] = kinds
    g.create_array("patch_index", shape=(n,), dtype="int64")[:] = np.asarray(indices, dtype=np.int64)
    h.update(kinds.tobytes())
    counts = {k: int((kinds == c).sum()) for c, k in enumerate(KINDS)}
    entry = {"file": path.name, "first_patch": indices[0], "n": n, "sha256": h.hexdigest(), "kinds": counts}
    g.attrs.update({"complete": True, "digest": digest, "first_patch": indices[0], "n": n, "sha256": entry["sha256"],
                    "kinds": counts})
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return entry


def shard_checksum(path: str | Path) -> str:
    """SHA-256 of a shard's contents as written (stokes and targets per patch, then kinds).

    A chunk file that was deleted reads as zeros (zarr's fill value) and so changes the sum; a
    garbled chunk raises (zarr's decompression error) — :func:`shard_problem` turns both into
    words.

    Parameters
    ----------
    path : str or Path
        The shard's zarr group folder.

    Returns
    -------
    str
        Hexadecimal digest (64 characters).

    Raises
    ------
    Exception
        zarr/numcodecs errors for a missing group or an unreadable chunk (several kinds).
    """
    import zarr

    g = zarr.open_group(str(path), mode="r")
    h = hashlib.sha256()
    s, t = g["stokes"], g["targets"]
    for j in range(s.shape[0]):
        _checksum_update(h, s[j], t[j])
    h.update(np.asarray(g["kind"][:], dtype=np.int8).tobytes())
    return h.hexdigest()


def shard_problem(path: str | Path, sha256: str) -> str | None:
    """Why the shard ``path`` is not the one the manifest lists with checksum ``sha256``.

    Parameters
    ----------
    path : str or Path
        The shard's zarr group folder.
    sha256 : str
        The checksum the manifest records (:func:`shard_checksum`).

    Returns
    -------
    str or None
        The problem in words: missing, unreadable (a garbled or truncated chunk), or changed (a
        deleted chunk reads as zeros, an edited one as other numbers); ``None`` when the shard is intact.
    """
    path = Path(path)
    if not path.is_dir():
        return "shard listed in the manifest is missing"
    try:
        found = shard_checksum(path)
    except Exception as exc:  # noqa: BLE001 - zarr/numcodecs raise many kinds for a damaged store
        return f"damaged shard: a chunk cannot be read ({type(exc).__name__}: {exc})"
    if found != sha256:
        return "damaged shard: its contents no longer match the manifest's checksum (a chunk deleted or modified)"
    return None


def verify_trainset(root: str | Path, *, require_complete: bool = True, progress: bool = False) -> dict[str, Any]:
    """Check every shard of a training set against the checksums of its manifest.

    Reads each shard once (≈ the cost of one epoch over the set). Returns the manifest.

    Raises
    ------
    TrainsetError : no or unreadable manifest, an incomplete set (``require_complete``), or a
        missing, unreadable or changed shard; the message names the shard and the
        ``helioforge inversion make-trainset`` command that makes it again (the other shards are
        kept).
    """
    root = Path(root)
    man = read_manifest(root)
    cmd = make_trainset_command(root, man)
    if require_complete and not man.get("complete"):
        raise TrainsetError(root / MANIFEST, "the training set is incomplete", f"run `{cmd}` to finish it")
    shards = man["shards"]
    t0 = time.perf_counter()
    for k, e in enumerate(shards):
        why = shard_problem(root / e["file"], e["sha256"])
        if why is not None:
            raise TrainsetError(root / e["file"], why, f"run `{cmd}` to make it again (the other shards are kept)")
        if progress and time.perf_counter() - t0 > 30:
            logger.info("%s: %d of %d shards verified", root, k + 1, len(shards))
            t0 = time.perf_counter()
    return man


@contextlib.contextmanager
def reading_shard(root: str | Path, entry_file: str, manifest: dict[str, Any] | None = None):
    """Context for reading a shard that turns a damaged chunk into a :class:`TrainsetError`.

    A zarr decompression or decoding error inside the ``with`` block becomes a
    :class:`TrainsetError` naming the shard and the command that makes it again, instead of a
    traceback; a :class:`TrainsetError` passes unchanged.

    Parameters
    ----------
    root : str or Path
        The training-set folder.
    entry_file : str
        The shard's file name relative to ``root`` (as in the manifest).
    manifest : dict, optional
        The manifest, for the options of the remedy command (:func:`make_trainset_command`).

    Raises
    ------
    TrainsetError
        For any other exception raised inside the block.
    """
    try:
        yield
    except TrainsetError:
        raise
    except Exception as exc:  # noqa: BLE001 - zarr/numcodecs raise many kinds for a damaged store
        cmd = make_trainset_command(root, manifest)
        raise TrainsetError(Path(root) / entry_file, f"damaged shard: a chunk cannot be read ({type(exc).__name__}: {exc})",
                            f"run `{cmd}` to make it again (the other shards are kept)") from None


def _progress(total: int, initial: int, enabled: bool):
    return progress_bar(total, "training set", "patch", initial=initial, disable=not enabled)


#: The parts of the package whose code makes a shard (their Python files are hashed).
_SOURCE_PARTS = ("*.py", "data/**/*.py", "physics/**/*.py", "inversion/**/*.py")


def _source_digest() -> str:
    """SHA-256 (16 hex digits) of the Python files of :data:`_SOURCE_PARTS`, names and contents (a few ms)."""
    pkg = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for p in sorted({p for pattern in _SOURCE_PARTS for p in pkg.glob(pattern)}):
        h.update(str(p.relative_to(pkg)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


#: The package's source as this process imported it (hashed at import, after the physics modules
#: above: a Dask worker started after a file changed gets another digest and is refused).
_SOURCE_SHA256 = _source_digest()


@functools.lru_cache(maxsize=1)
def _code_version() -> dict[str, Any]:
    """helioforge's version and source digest, and its git commit when the package is a tracked file of a
    git checkout."""
    code: dict[str, Any] = {"helioforge": __version__, "source_sha256": _SOURCE_SHA256}
    here = Path(__file__).resolve()

    def git(*args: str) -> str:
        return subprocess.run(["git", "--no-optional-locks", "-C", str(here.parent), *args], capture_output=True,
                              text=True, timeout=20, check=True).stdout.strip()

    try:  # a tracked file: a checkout of helioforge, not an installed copy inside some other repository
        git("ls-files", "--error-unmatch", here.name)
        code["git_commit"] = git("rev-parse", "HEAD")
        code["git_dirty"] = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        pass
    return code


def _set_digest(prof: TrainsetProfile) -> str:
    """The digest of the settings that fix a set's contents (what a resumed set must share)."""
    ts = prof.trainset
    # the reference map's seed only matters for a new set (a resumed one keeps its manifest's
    # reference): sets made before it existed keep their digest
    # the physics version is part of the digest: a set synthesised with another equation of state
    # (before H₂, issue 13) is not resumed or extended with the new one
    # sets made before the SP-profile quadrature was a setting used the trapezoid: with it, the
    # digest leaves the key out, so those sets can still be resumed
    drop = ("trainset.qs_reference_seed",)
    if ts.spectral_quadrature == "trapezoid":
        drop += ("trainset.spectral_quadrature",)
    if ts.synthesis_kernel == "torch":  # sets made before the fused kernel keep their digest
        drop += ("trainset.synthesis_kernel",)
    return prof.digest("trainset", "grid", "atmosphere", drop=drop, extra={"eos_version": EOS_VERSION})


def _synthesis_chain(prof: TrainsetProfile, *, synthesize, instrument, hydrostatic, root, device: str):
    """``(instrument, models, chain, hydrostatic)`` of a set: what :func:`make_patch` needs besides the
    reference. The one place where the defaults are chosen: the serial path and every Dask worker
    build the chain here; the synthesis and the hydrostatic equilibrium not given are those of the
    profile's ``synthesis_kernel`` (:func:`~helioforge.inversion.forward.kernel_functions`)."""
    ts = prof.trainset
    if ts.synthesis_kernel == "fused" and synthesize is None and str(device) != "cpu":
        raise InputError(f"the fused synthesis kernel runs on the CPU; use synthesis_kernel='torch' (--kernel torch) "
                         f"to synthesise on {device}")
    if instrument is None:
        instrument = HinodeSP.from_data(root)
    models = load_model_set(prof.atmosphere.models, prof.grid, root)
    kernel_synthesize, kernel_hydrostatic = kernel_functions(ts.synthesis_kernel)
    synthesize = kernel_synthesize if synthesize is None else synthesize
    hydrostatic = kernel_hydrostatic if hydrostatic is None else hydrostatic
    chain = StokesChain(synthesize, instrument, mu=ts.mu, oversampling=ts.wavelength_oversampling, device=device,
                        quadrature=ts.spectral_quadrature)
    return instrument, models, chain, hydrostatic


def _kernel_name(prof: TrainsetProfile, synthesize: Any) -> str:
    if synthesize is None:
        return prof.trainset.synthesis_kernel
    name = getattr(synthesize, "__qualname__", None) or type(synthesize).__qualname__
    return f"custom: {getattr(synthesize, '__module__', '?')}.{name}"


def _shard_range(prof: TrainsetProfile, k: int) -> tuple[int, int]:
    first = k * prof.trainset.shard_size
    return first, min(prof.trainset.shard_size, prof.trainset.n_patches - first)


@dataclasses.dataclass(frozen=True)
class _ShardJob:
    """What a Dask task needs to make a shard (pickled to the workers with each task)."""

    token: str  # unique to the run: the workers' cache key
    out_dir: str
    profile: dict[str, Any]  # TrainsetProfile.to_dict()
    digest: str
    reference: dict[str, float]  # {"ic_quiet_sun", "z_offset_km"}: computed once, by the client
    root: str  # the data folder, as the client resolved it
    device: str
    threads: int  # torch threads in each task
    code: dict[str, Any]
    synthesize: Any = None
    instrument: Any = None
    hydrostatic: Any = None


def _worker_context(job: _ShardJob):
    """``(profile, models, chain)`` rebuilt in a worker from the job; refuses a worker that disagrees."""
    from helioforge.inversion.config import TrainsetProfile as _Profile

    out = Path(job.out_dir)
    mine = _code_version()
    for key in ("helioforge", "git_commit", "source_sha256"):
        if key in mine and key in job.code and mine[key] != job.code[key]:
            raise TrainsetError(out, f"this Dask worker ({socket.gethostname()}, pid {os.getpid()}) runs other "
                                     f"helioforge code than the client ({key} {mine[key]} vs {job.code[key]}: another "
                                     f"installation, or a source file changed since one of them started)",
                                "run the same helioforge on the client and every worker (restart the workers after "
                                "changing the code)")
    prof = _Profile.from_dict(job.profile)
    if _set_digest(prof) != job.digest:
        raise TrainsetError(out, f"the Dask worker computes digest {_set_digest(prof)} for the profile, the client "
                                 f"{job.digest}", "run the same helioforge on the client and every worker")
    _, models, chain, hydrostatic = _synthesis_chain(prof, synthesize=job.synthesize, instrument=job.instrument,
                                                     hydrostatic=job.hydrostatic, root=job.root, device=job.device)
    return prof, models, chain, hydrostatic


def _shard_task(job: _ShardJob, k: int) -> dict[str, Any]:
    """Make shard ``k`` in a Dask worker (one task): the same :func:`_write_shard` as the serial path.

    Returns ``{"entry": the manifest's shard entry, "seconds", "host", "pid", "peak_rss_mb"}``.
    """
    from helioforge.inversion.cluster import _fault_hook, tune_worker_malloc, worker_cached, worker_peak_rss_mb

    t0 = time.perf_counter()
    tune_worker_malloc()
    if torch.get_num_threads() != job.threads:
        torch.set_num_threads(job.threads)
    prof, models, chain, hydrostatic = worker_cached(job.token, lambda: _worker_context(job))
    first, n = _shard_range(prof, k)
    label = _shard_name(k).removesuffix(".zarr")

    def make(i: int):
        if i == first + n - 1:  # the test hook strikes with the shard half written
            _fault_hook(label)
        return make_patch(i, prof, models, chain, job.reference, hydrostatic)

    entry = _write_shard(Path(job.out_dir) / _shard_name(k), range(first, first + n), make, job.digest, lambda: None)
    return {"entry": entry, "seconds": time.perf_counter() - t0, "host": socket.gethostname(), "pid": os.getpid(),
            "peak_rss_mb": worker_peak_rss_mb()}


def _failure(prof: TrainsetProfile, k: int, error: BaseException | None, retries: int) -> dict[str, Any]:
    first, n = _shard_range(prof, k)
    seed = prof.trainset.seed
    text = f"{type(error).__name__}: {error}" if error is not None else "unknown error"
    return {"shard": k, "file": _shard_name(k), "first_patch": first, "n": n, "patches": f"{first}–{first + n - 1}",
            "seed": seed, "rng": f"numpy.random.default_rng([{seed}, i]) for i = {first}…{first + n - 1}",
            "error": " ".join(text.split())[:2000], "retries": retries}


def make_trainset(
    out_dir: str | Path,
    profile: TrainsetProfile | str = "cpu",
    *,
    synthesize: SynthesizeFn | None = None,
    instrument: Any = None,
    hydrostatic: Callable | None = None,
    root: str | Path | None = None,
    progress: bool = True,
    verify_existing: bool = True,
    max_shards: int | None = None,
    device: str = "cpu",
    reference_from: str | Path | None = None,
    scheduler: Any = None,
    n_workers: int | None = None,
    retries: int = 2,
    threads_per_worker: int = 1,
) -> dict[str, Any]:
    """Make (or resume) a training set of Stokes maps and target maps in ``out_dir``.

    The folder's lock (:func:`helioforge.locking.workdir_lock`) is held throughout: a second
    run on the same folder raises :class:`~helioforge.errors.FolderInUse`.

    Without ``scheduler`` the shards are made one after the other in this process. With one,
    each missing shard is one task on a Dask cluster (:mod:`helioforge.inversion.cluster`):
    the workers rebuild the models and the synthesis chain once per process, make the shard
    with the same code and write it under a temporary name renamed when complete; this process
    computes the quiet-Sun reference once, updates ``manifest.json`` as the shards complete and
    shows the progress. A shard is the same, bit for bit, whichever way it is made (patch i is
    drawn from ``default_rng([seed, i])``; the manifest's SHA-256 per shard agree). The
    training-set and data folders must be on a file system every worker sees at the same path.

    Parameters
    ----------
    out_dir : destination folder (created).
    profile : a :class:`~helioforge.inversion.config.TrainsetProfile` or its name.
    synthesize : the synthesis (default: the one of the profile's ``trainset.synthesis_kernel``,
        :func:`~helioforge.inversion.forward.kernel_functions`); see
        :class:`~helioforge.inversion.forward.StokesChain`. On a cluster it must be picklable.
    instrument : the instrument (default :class:`helioforge.inversion.instrument.HinodeSP`).
    hydrostatic : hydrostatic-equilibrium function (default: the synthesis kernel's,
        :func:`~helioforge.inversion.forward.kernel_functions`; for ``torch`` the LTE module's).
    root : data folder for the SIR models and instrument files (default :func:`data_root`).
    progress : show a progress bar (tqdm on a terminal, log lines elsewhere).
    verify_existing : recompute the checksum of each complete shard found before keeping it
        (default); a shard that no longer matches (a chunk deleted, garbled or edited) is
        discarded, taken off the manifest and made again. ``False`` trusts the shards' own
        completion marks (faster for a large set known to be intact).
    max_shards : stop after this many new shards (``None``: all).
    device : where the synthesis runs (``"cpu"`` or ``"cuda"``).
    reference_from : another training-set folder whose quiet-Sun reference (I_c and z offset,
        :func:`quiet_sun_reference_of`) this set uses instead of making its own: a held-out set
        made with other settings is then normalised as the training set. ``None``: the set's
        own reference map (:func:`quiet_sun_reference`; drawn from ``qs_reference_seed``, so
        sets that differ only in ``seed`` share it); a resumed set keeps the reference of its
        manifest.
    scheduler : ``None`` or ``"none"`` (serial, the default), ``"local"`` (a
        :class:`distributed.LocalCluster` of ``n_workers`` single-threaded worker processes,
        closed at the end), ``"tcp://HOST:PORT"`` (a running Dask scheduler) or a
        :class:`distributed.Client`.
    n_workers : worker processes of ``scheduler="local"`` (default one per usable core).
    retries : further attempts of a shard whose task raised (≥ 0, default 2). A worker that
        dies is replaced and its shard made elsewhere (Dask's ``allowed-failures``, default 3).
    threads_per_worker : torch threads of each task on the cluster (and threads of each local
        worker); 1 suits one worker process per core.

    Returns
    -------
    The manifest (also written to ``out_dir/manifest.json``; ``complete`` is ``True`` once
    every shard exists). Besides the set's settings and shards it records the ``code``
    (helioforge version, git commit and whether the checkout had changes, when it is one),
    the ``synthesis_kernel``, the ``scheduler`` of the latest run (``kind`` serial, local,
    external or client, ``address``, ``n_workers``, ``threads_per_worker``), ``failed`` (the
    shards whose tasks failed in the latest run), ``timing`` and ``runs`` (one entry per run).

    Raises
    ------
    ShardsFailed : on a cluster, shards still failing after ``retries`` (a
        :class:`TrainsetError`): the message names each shard, its patches and seeds and the
        error, and the command that makes only the missing shards; the other shards are made
        and in the manifest.
    TrainsetError : ``out_dir`` holds a set made with other settings or with another quiet-Sun
        reference than ``reference_from``'s (both sets named), an unreadable manifest, or
        ``reference_from`` is not a training set.
    InputError : a bad ``scheduler``, ``n_workers``, ``retries`` or ``threads_per_worker``
        (before anything is written), no scheduler at the address, or workers that cannot see
        the folders.
    FolderInUse : another process is making a set in ``out_dir``.
    FileNotFoundError, helioforge.data.sir.SIRReadError : a model file is missing or bad (named).
    """
    from helioforge.inversion.cluster import dask_client, parse_scheduler

    prof = get_trainset_profile(profile) if isinstance(profile, str) else profile
    spec = parse_scheduler(scheduler)
    if retries is None or not isinstance(retries, int) or retries < 0:
        raise InputError(f"--retries must be an integer ≥ 0, got {retries!r}")
    if not isinstance(threads_per_worker, int) or threads_per_worker < 1:
        raise InputError(f"threads_per_worker must be an integer ≥ 1, got {threads_per_worker!r}")
    if n_workers is not None:
        if not isinstance(n_workers, int) or n_workers < 1:
            raise InputError(f"--workers must be an integer ≥ 1, got {n_workers!r}")
        if spec != "local":
            raise InputError("--workers applies to --scheduler local only"
                             + (" (a running cluster has its own workers)" if spec is not None else ""))
    with contextlib.ExitStack() as stack:
        opened = None  # a running cluster is reached first: a wrong address is refused before the folder is touched
        if spec is not None and not (isinstance(spec, str) and spec == "local"):
            opened = stack.enter_context(dask_client(spec, None, threads_per_worker))

        def open_cluster():
            return opened or stack.enter_context(dask_client(spec, n_workers, threads_per_worker))

        with workdir_lock(out_dir):
            return _make_trainset(Path(out_dir), prof, synthesize=synthesize, instrument=instrument,
                                  hydrostatic=hydrostatic, root=root, progress=progress,
                                  verify_existing=verify_existing, max_shards=max_shards, device=device,
                                  reference_from=reference_from, scheduler=spec,
                                  open_cluster=open_cluster if spec is not None else None, retries=retries,
                                  threads_per_worker=threads_per_worker)


def _make_trainset(out: Path, prof: TrainsetProfile, *, synthesize, instrument, hydrostatic, root, progress: bool,
                   verify_existing: bool, max_shards: int | None, device: str,
                   reference_from: str | Path | None = None, scheduler: Any = None,
                   open_cluster: Callable[[], tuple[Any, dict[str, Any]]] | None = None,
                   retries: int = 2, threads_per_worker: int = 1) -> dict[str, Any]:
    ts = prof.trainset
    given = None
    if reference_from is not None:  # read before anything is made: a bad folder is refused at once
        given = quiet_sun_reference_of(read_manifest(reference_from), Path(reference_from))
        given["source"] = f"taken from the training set {Path(reference_from)} ({given['source']})"
    out.mkdir(parents=True, exist_ok=True)
    digest = _set_digest(prof)
    old = None
    if (out / MANIFEST).is_file():
        old = read_manifest(out)
        if old.get("digest") != digest:
            # a set is finished with the synthesis kernel it was started with (sets made before
            # the fused kernel, with the torch one, are resumed as they were made)
            other = "torch" if ts.synthesis_kernel == "fused" else "fused"
            alt = dataclasses.replace(prof, trainset=dataclasses.replace(ts, synthesis_kernel=other))
            if old.get("digest") == _set_digest(alt):
                logger.info("%s: made with the %s synthesis kernel; it is resumed with that kernel", out, other)
                prof, ts, digest = alt, alt.trainset, _set_digest(alt)
            else:
                raise TrainsetError(out / MANIFEST, f"made with other settings (digest {old.get('digest')} ≠ {digest}); "
                                                    "use a new folder")
        if given is not None:
            require_same_reference(given, quiet_sun_reference_of(old, out), Path(reference_from), out,
                                   "use a new folder for the set with the shared reference")
    # the shards already there (verified against their checksums): what is left to make
    n_sh = ts.n_shards()
    entries: list[dict[str, Any] | None] = [None] * n_sh
    done = 0
    for k in range(n_sh):
        first, n = _shard_range(prof, k)
        e = _existing_shard(out / _shard_name(k), digest, first, n)
        if e is not None and verify_existing:
            why = shard_problem(out / _shard_name(k), e["sha256"])
            if why is not None:
                logger.warning("%s: %s; it is made again", out / _shard_name(k), why)
                e = None
        if e is not None:
            entries[k] = e
            done += n
    skipped = sum(e is not None for e in entries)
    if skipped:
        logger.info("%s: %d complete shard(s) found and kept", out, skipped)
    todo = [k for k in range(n_sh) if entries[k] is None]
    if max_shards is not None:
        todo = todo[:max_shards]
    # the cluster starts (its workers import while this process makes the reference) only when there is work
    cluster = open_cluster() if open_cluster is not None and todo else None

    root = Path(root) if root is not None else data_root()
    user_synthesize, user_instrument, user_hydrostatic = synthesize, instrument, hydrostatic
    instrument, models, chain, hydrostatic = _synthesis_chain(prof, synthesize=synthesize, instrument=instrument,
                                                              hydrostatic=hydrostatic, root=root, device=device)
    t0 = time.perf_counter()
    if given is not None:
        qs_ref = given
    elif old is not None:  # a resumed set keeps the reference its shards were normalised with
        qs_ref = quiet_sun_reference_of(old, out)
    else:
        made = quiet_sun_reference(prof, models, chain, hydrostatic)
        qs_ref = quiet_sun_reference_of({"stokes": {"ic_quiet_sun_cgs": made["ic_quiet_sun"]},
                                         "targets": {"z_offset_km": made["z_offset_km"]}}, out)
        qs_ref["source"] = (f"median continuum and mean z(log tau=0) of a {ts.qs_reference_size}^2 quiet-Sun map "
                            f"(default_rng([{ts.qs_reference_seed}, 2**32]))")
    reference = {"ic_quiet_sun": qs_ref["ic_quiet_sun_cgs"], "z_offset_km": qs_ref["z_offset_km"]}
    logger.info("quiet-Sun reference %s: I_c = %.4e, z(log τ=0) = %.1f km (%s; %.1f s)", qs_ref["id"],
                reference["ic_quiet_sun"], reference["z_offset_km"], qs_ref["source"], time.perf_counter() - t0)

    def make(i: int):
        return make_patch(i, prof, models, chain, reference, hydrostatic)

    code = _code_version()
    run: dict[str, Any] = {"started": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "code": code, "scheduler": {"kind": "serial", "torch_threads": torch.get_num_threads()}}
    if cluster is not None:
        run["scheduler"] = dict(cluster[1], torch_threads=threads_per_worker, retries=retries)
    elif scheduler is not None:
        run["scheduler"] = {"kind": "unused (nothing to make)", "requested": _scheduler_option(scheduler)}
    manifest: dict[str, Any] = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "software": _software(),
        "code": code,
        "created": (old or {}).get("created") or run["started"],
        "profile_name": prof.name,
        "profile": prof.to_dict(),
        "digest": digest,
        "seed": ts.seed,
        "n_patches": ts.n_patches,
        "patch_size": ts.patch_size,
        "shard_size": ts.shard_size,
        "n_shards": ts.n_shards(),
        "pixel_arcsec": ts.hinode_pixel_arcsec,
        "model_pixel_arcsec": ts.model_pixel_arcsec,
        "synthesis_kernel": _kernel_name(prof, user_synthesize),
        "scheduler": (old or {}).get("scheduler") or run["scheduler"],
        "stokes": {
            "array": "stokes",
            "shape": [4, len(instrument.wavelengths), ts.patch_size, ts.patch_size],
            "dtype": "float32",
            "stokes_order": ["I", "Q", "U", "V"],
            "units": "quiet-Sun continuum intensity (median of the reference map at the first SP wavelength)",
            "ic_quiet_sun_cgs": reference["ic_quiet_sun"],
            "ic_units": "erg s-1 cm-2 sr-1 Hz-1",
            "noise": "none: noise-free; add Gaussian noise of noise_sigma online in training (paper §2 step 5)",
            "noise_sigma": ts.noise_sigma,
            "wavelengths_air_A": [float(w) for w in instrument.wavelengths],
            "synthesis_wavelengths": {"n": int(len(chain.wavelengths)), "first_A": float(chain.wavelengths[0]),
                                      "last_A": float(chain.wavelengths[-1]), "quadrature": chain.quadrature},
            "mu": ts.mu,
            "degradation": "LTE synthesis, Hinode PSF at the model pixel, rebin to 0.16 arcsec, SP spectral profile",
        },
        "targets": {
            "array": "targets",
            "shape": [7 * len(ts.target_log_tau), ts.patch_size, ts.patch_size],
            "dtype": "float32",
            "quantities": list(QUANTITIES),
            "log_tau": list(ts.target_log_tau),
            "names": target_names(ts.target_log_tau),
            "order": "quantity-major: index = len(log_tau) * q + k",
            "units": TARGET_UNITS,
            "z_offset_km": reference["z_offset_km"],
            "rebin": ts.rebin(),
        },
        "quiet_sun_reference": qs_ref,
        "kinds": list(KINDS),
        "models": models.names,
        "shards": [],
        "failed": [],
        "complete": False,
        "runs": list((old or {}).get("runs") or [])[-(_MAX_RUNS - 1):] + [run],
    }
    failed: list[dict[str, Any]] = []
    stats = {"made": 0, "shards": 0, "peak_rss_mb": None, "workers": set()}

    def flush(seconds: float) -> None:
        manifest["shards"] = [e for e in entries if e is not None]
        totals = {kname: sum(e["kinds"][kname] for e in manifest["shards"]) for kname in KINDS}
        manifest["counts"] = {"patches": sum(e["n"] for e in manifest["shards"]), "shards": len(manifest["shards"]),
                              "kinds": totals}
        manifest["complete"] = all(e is not None for e in entries)
        manifest["failed"] = sorted(failed, key=lambda f: f["shard"])
        if stats["shards"] or "kind" not in manifest["scheduler"]:
            manifest["scheduler"] = run["scheduler"]
        made = stats["made"]
        run.update({"shards_made": stats["shards"], "patches_made": made, "seconds": round(seconds, 3),
                    "failed_shards": [f["shard"] for f in manifest["failed"]]})
        if stats["workers"]:
            run["workers_used"] = len(stats["workers"])
        if stats["peak_rss_mb"] is not None:
            run["worker_peak_rss_mb"] = round(stats["peak_rss_mb"], 1)
        if made:
            manifest["timing"] = {"seconds_per_patch": seconds / made, "patches_timed": made, "seconds": seconds,
                                  "patches_per_s": made / seconds if seconds > 0 else None,
                                  "scheduler": run["scheduler"]["kind"]}
        write_json(out / MANIFEST, manifest)

    flush(0.0)
    bar = _progress(ts.n_patches, done, progress)
    t_start = time.perf_counter()
    try:
        if scheduler is None:
            for k in todo:
                first, n = _shard_range(prof, k)

                def tick():
                    stats["made"] += 1
                    bar.update(1)

                entries[k] = _write_shard(out / _shard_name(k), range(first, first + n), make, digest, tick)
                stats["shards"] += 1
                flush(time.perf_counter() - t_start)
        elif cluster is not None:
            _run_on_cluster(out, prof, todo, entries, failed, stats, bar, flush, t_start, cluster[0], retries=retries,
                            threads_per_worker=threads_per_worker, digest=digest, reference=reference, root=root,
                            device=device, code=code, synthesize=user_synthesize, instrument=user_instrument,
                            hydrostatic=user_hydrostatic)
    finally:
        bar.close()
    seconds = time.perf_counter() - t_start
    if stats["made"]:
        logger.info("%d patches in %.1f s (%.2f s/patch)", stats["made"], seconds, seconds / stats["made"])
    if failed:
        cmd = make_trainset_command(out, manifest, scheduler=_scheduler_option(scheduler))
        words = "; ".join(f"{f['file']} (patches {f['patches']}, default_rng([{f['seed']}, i])): {f['error'][:300]}"
                          for f in manifest["failed"])
        raise ShardsFailed(out / MANIFEST, f"{len(failed)} of {len(todo)} shard(s) failed after {retries} "
                                           f"retr{'y' if retries == 1 else 'ies'}, the others are made: {words}",
                           f"fix the cause, then run `{cmd}` to make only the missing shards (the manifest lists "
                           f"the failures under \"failed\")", failed=manifest["failed"], manifest=manifest)
    return manifest


def _scheduler_option(scheduler: Any) -> str | None:
    """The ``--scheduler`` value that reaches the same cluster again."""
    if scheduler is None or isinstance(scheduler, str):
        return scheduler
    return getattr(getattr(scheduler, "scheduler", None), "address", None)


def _run_on_cluster(out: Path, prof: TrainsetProfile, todo: list[int], entries: list, failed: list, stats: dict,
                    bar, flush: Callable[[float], None], t_start: float, client: Any, *, retries: int,
                    threads_per_worker: int, digest: str, reference: dict[str, float], root: Path, device: str,
                    code: dict[str, Any], synthesize: Any, instrument: Any, hydrostatic: Any) -> None:
    """The missing shards ``todo`` as Dask tasks; ``entries``, ``failed`` and the manifest follow."""
    from helioforge.inversion.cluster import check_workers_see, run_tasks

    check_workers_see(client, read=[root], write=[out])
    logger.info("%d shard(s) on the Dask cluster %s", len(todo), client.scheduler.address)
    token = uuid.uuid4().hex
    job = _ShardJob(token=token, out_dir=str(out.resolve()), profile=prof.to_dict(), digest=digest,
                    reference=dict(reference), root=str(Path(root).resolve()), device=device, threads=threads_per_worker,
                    code=code, synthesize=synthesize, instrument=instrument, hydrostatic=hydrostatic)
    labels = {_shard_name(k).removesuffix(".zarr"): k for k in todo}
    tasks = {label: (job, k) for label, k in labels.items()}
    for outcome in run_tasks(client, _shard_task, tasks, retries=retries, key_prefix=f"trainset-{token[:8]}"):
        k = labels[outcome.label]
        if outcome.ok:
            res = outcome.result
            entries[k] = res["entry"]
            stats["made"] += res["entry"]["n"]
            stats["shards"] += 1
            stats["workers"].add((res["host"], res["pid"]))
            if res.get("peak_rss_mb") is not None:
                stats["peak_rss_mb"] = max(stats["peak_rss_mb"] or 0.0, res["peak_rss_mb"])
            bar.set_postfix(shards=stats["shards"], failed=len(failed))
            bar.update(res["entry"]["n"])
        else:
            f = _failure(prof, k, outcome.error, retries)
            failed.append(f)
            bar.set_postfix(shards=stats["shards"], failed=len(failed))
            logger.error("%s: shard %s (patches %s, %s) failed after %d retries: %s", out, f["file"], f["patches"],
                         f["rng"], retries, f["error"])
        flush(time.perf_counter() - t_start)


# --------------------------------------------------------------------------- reading
class TrainsetDataset(torch.utils.data.Dataset):
    """Lazy reader of a training set made by :func:`make_trainset` (a torch ``Dataset``).

    Item i is ``(stokes, targets)``: float32 tensors (4, 112, H, W) in quiet-Sun continuum units
    and (49, H, W) in :data:`TARGET_UNITS`. Shards are opened on first use in each process
    (safe with ``DataLoader`` workers).

    Parameters
    ----------
    root : the training-set folder.
    noise_sigma : Gaussian noise added to the Stokes maps at every read (paper §2 step 5;
        the manifest's ``stokes.noise_sigma`` is the paper's 10⁻³); 0 reads them noise-free.
    generator : ``torch.Generator`` for the noise (default: torch's global generator).
    allow_incomplete : read the complete shards of an unfinished set instead of raising.

    Raises
    ------
    TrainsetError : missing manifest, incomplete set (unless allowed), or a shard listed but
        missing.
    """

    def __init__(self, root: str | Path, noise_sigma: float = 0.0, generator: torch.Generator | None = None,
                 allow_incomplete: bool = False) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        cmd = make_trainset_command(self.root, self.manifest)
        if not self.manifest.get("complete") and not allow_incomplete:
            raise TrainsetError(self.root / MANIFEST, "the training set is incomplete", f"run `{cmd}` to finish it")
        self.shards = list(self.manifest["shards"])
        for e in self.shards:
            if not (self.root / e["file"]).is_dir():
                raise TrainsetError(self.root / e["file"], "shard listed in the manifest is missing",
                                    f"run `{cmd}` to make it again")
        self.noise_sigma = float(noise_sigma)
        self.generator = generator
        self._offsets = np.cumsum([0] + [e["n"] for e in self.shards])
        self._open: dict[int, Any] = {}
        self._pid = None
        self.target_names = list(self.manifest["targets"]["names"])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getstate__(self) -> dict[str, Any]:  # open zarr groups stay in their process
        state = dict(self.__dict__)
        state["_open"], state["_pid"] = {}, None
        return state

    def _group(self, k: int):
        import zarr

        if self._pid != os.getpid():
            self._open, self._pid = {}, os.getpid()
        if k not in self._open:
            self._open[k] = zarr.open_group(str(self.root / self.shards[k]["file"]), mode="r")
        return self._open[k]

    def locate(self, index: int) -> tuple[int, int]:
        """Shard number and index inside the shard of item ``index``.

        Parameters
        ----------
        index : int
            Item number; negative values count from the end.

        Returns
        -------
        tuple of int
            ``(shard number, index inside the shard)``.

        Raises
        ------
        IndexError
            For an index out of range.
        """
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} patches")
        k = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return k, int(index - self._offsets[k])

    def kind(self, index: int) -> str:
        """Patch kind of item ``index``.

        Parameters
        ----------
        index : int
            Item number; negative values count from the end.

        Returns
        -------
        str
            ``quiet``, ``plage`` or ``spot``.

        Raises
        ------
        IndexError
            For an index out of range.
        """
        k, j = self.locate(index)
        return KINDS[int(self._group(k)["kind"][j])]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, j = self.locate(int(index))
        with reading_shard(self.root, self.shards[k]["file"], self.manifest):
            g = self._group(k)
            stokes = torch.from_numpy(np.asarray(g["stokes"][j], dtype=np.float32))
            targets = torch.from_numpy(np.asarray(g["targets"][j], dtype=np.float32))
        if self.noise_sigma > 0:
            stokes = stokes + self.noise_sigma * torch.randn(stokes.shape, generator=self.generator)
        return stokes, targets


# --------------------------------------------------------------------------- ranges
def sicon_ranges(path: str | Path | None = None, target_log_tau: Iterable[float] = (0, -0.5, -1, -1.5, -2, -2.5, -3)):
    """SICON's target normalisation (min, max of each of the 49 outputs) in our units.

    ``encdec_normalization.npz`` (arrays ``minimum`` and ``maximum``, (49,)) holds the ranges
    over SICON's MURaM training snapshots in SICON's units: T [K], vz [cm s⁻¹, + = down], z
    [cm], log P [cgs], B_Q, B_U, B_V [G]; vz and z are converted to km s⁻¹ and km.

    Returns
    -------
    ``(minimum, maximum)`` float64 arrays (49,) in :data:`TARGET_UNITS`.

    Raises
    ------
    FileNotFoundError : no such file. ValueError : arrays missing or not of 49 values.
    """
    path = Path(path) if path is not None else data_root() / "stokes" / "instrument" / "encdec_normalization.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: SICON normalisation file not found")
    with np.load(path) as d:
        if "minimum" not in d or "maximum" not in d:
            raise ValueError(f"{path}: expected arrays 'minimum' and 'maximum', found {list(d.keys())}")
        lo, hi = np.asarray(d["minimum"], np.float64), np.asarray(d["maximum"], np.float64)
    nt = len(list(target_log_tau))
    if lo.shape != (7 * nt,) or hi.shape != (7 * nt,):
        raise ValueError(f"{path}: expected (49,) arrays, got {lo.shape} and {hi.shape}")
    scale = np.repeat([_SICON_TO_OURS[q] for q in QUANTITIES], nt)
    return lo * scale, hi * scale


def target_ranges(
    root: str | Path,
    out: str | Path | None = None,
    sicon_path: str | Path | None = None,
) -> "pd.DataFrame":
    """Minimum and maximum of each of the 49 targets over a training set, against SICON's.

    Parameters
    ----------
    root : training-set folder (complete or not: every listed shard is read).
    out : folder for ``target_ranges.csv`` and ``target_ranges.json`` (default ``root``).
    sicon_path : SICON's ``encdec_normalization.npz`` (default in ``data_root()``); when it is
        missing the SICON columns are NaN.

    Returns
    -------
    pandas DataFrame, one row per target: ``name, quantity, log_tau, unit, min, max, mean,
    sicon_min, sicon_max, inside_sicon`` (our range within SICON's) and ``sicon_coverage``
    (share of SICON's interval that ours overlaps).
    """
    import pandas as pd
    import zarr

    man = read_manifest(root)
    lts = man["targets"]["log_tau"]
    names = man["targets"]["names"]
    nt = len(names)
    lo = np.full(nt, np.inf)
    hi = np.full(nt, -np.inf)
    tot = np.zeros(nt)
    count = 0
    for e in man["shards"]:
        with reading_shard(root, e["file"], man):
            t = zarr.open_group(str(Path(root) / e["file"]), mode="r")["targets"]
            for s in range(0, t.shape[0], 64):
                x = np.asarray(t[s : s + 64], dtype=np.float64)
                lo = np.minimum(lo, x.min(axis=(0, 2, 3)))
                hi = np.maximum(hi, x.max(axis=(0, 2, 3)))
                tot += x.sum(axis=(0, 2, 3))
                count += x.shape[0] * x.shape[2] * x.shape[3]
    try:
        s_lo, s_hi = sicon_ranges(sicon_path, lts)
    except (FileNotFoundError, ValueError) as exc:
        logger.warning("no SICON ranges to compare with: %s", exc)
        s_lo = s_hi = np.full(nt, np.nan)
    rows = []
    for i, name in enumerate(names):
        q = QUANTITIES[i // len(lts)]
        width = s_hi[i] - s_lo[i]
        overlap = max(0.0, min(hi[i], s_hi[i]) - max(lo[i], s_lo[i]))
        rows.append({
            "name": name, "quantity": q, "log_tau": lts[i % len(lts)], "unit": TARGET_UNITS[q].split(",")[0],
            "min": lo[i], "max": hi[i], "mean": tot[i] / max(count, 1),
            "sicon_min": s_lo[i], "sicon_max": s_hi[i],
            "inside_sicon": bool(lo[i] >= s_lo[i] and hi[i] <= s_hi[i]),
            "sicon_coverage": overlap / width if width > 0 else float("nan"),
        })
    df = pd.DataFrame(rows)
    dest = Path(out) if out is not None else Path(root)
    write_text(dest / "target_ranges.csv", df.to_csv(index=False))
    write_json(dest / "target_ranges.json", {"training_set": str(root), "n_values_per_target": count,
                                             "rows": df.to_dict(orient="records")})
    return df

