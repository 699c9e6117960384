"""The SICON model (Asensio Ramos & Díaz Baso 2019, A&A 626, A102, §3): building a network
from its settings, its inputs, the scaling of its targets, and the weights product of a work
folder (where the weights live, whether their training finished, the command that remakes them).

Used by training (:mod:`helioforge.inversion.train`) and inference
(:mod:`helioforge.inversion.infer`) alike, so that both preprocess and scale identically.

Training folder
    ``<workdir>/train_<network>/`` (:func:`helioforge.inversion.pipeline.training_dir`) holds
    the checkpoints, logs, the settings of the run (:data:`SETTINGS_FILE`) and the final weights
    ``sicon_<network>.safetensors`` + ``.json`` (:data:`SICON_STEM`), recorded in its
    ``state.json`` once written.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from helioforge.config import data_root
from helioforge.errors import ProductError
from helioforge.inversion.config import NETWORKS, SiconModelConfig
from helioforge.inversion.dataset import TrainsetError, make_trainset_command, read_manifest, reading_shard, sicon_ranges
from helioforge.nn.sicon import (
    CONCAT_STOKES_SCALE,
    CONTINUUM_QUANTITIES,
    N_DEPTHS,
    N_STOKES,
    Concatenate,
    EncoderDecoder,
    concat_inputs,
    encdec_inputs,
)
from helioforge.nn.training import last_checkpoint
from helioforge.workspace import StepState

__all__ = [
    "SICON_STEM",
    "SETTINGS_FILE",
    "INPUT_VERSION",
    "DEFAULT_PIXEL_ARCSEC",
    "TargetScaler",
    "model_dict",
    "build_network",
    "network_inputs",
    "pad_for_network",
    "train_command",
    "retrain_command",
    "check_trained",
]

#: Weights are saved as ``workdir/sicon_<network>.safetensors`` + ``.json``.
SICON_STEM = "sicon_{network}"
#: The settings of the run a training folder's checkpoint belongs to.
SETTINGS_FILE = "sicon_settings.json"
#: Version of the network inputs, part of the training digest: 2 = the encoder–decoder's log
#: amplitudes minus a fixed offset of the training set (issue 13), 1 = minus the per-map mean.
INPUT_VERSION = 2
#: Pixel of the training maps assumed for weights whose sidecar does not record it (paper §2:
#: "rebinned to the Hinode pixel size of 0.16''").
DEFAULT_PIXEL_ARCSEC = 0.16


# --------------------------------------------------------------------------- target scaling
@dataclass
class TargetScaler:
    """Min–max scaling of the 49 targets to [0, 1] (paper §3.1: "all physical conditions are
    linearly transformed to the interval [0, 1] using the minimum and maximum values").

    Attributes
    ----------
    minimum, maximum : float64 arrays (n,), physical units of each target channel.
    names : target names (``"T@logtau=0"`` …), optional.
    source : where the statistics come from (``"trainset <path>"``, ``"sicon <path>"``).

    A channel with ``maximum == minimum`` (e.g. a field-free training set) is scaled by 1, so
    encode and decode stay inverse.
    """

    minimum: np.ndarray
    maximum: np.ndarray
    names: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        self.minimum = np.asarray(self.minimum, dtype=np.float64).reshape(-1)
        self.maximum = np.asarray(self.maximum, dtype=np.float64).reshape(-1)
        self.names = tuple(self.names)
        if self.minimum.shape != self.maximum.shape:
            raise ValueError(f"minimum and maximum differ in length: {self.minimum.shape} vs {self.maximum.shape}")
        if not (np.all(np.isfinite(self.minimum)) and np.all(np.isfinite(self.maximum))):
            raise ValueError("TargetScaler: minimum and maximum must be finite")
        if np.any(self.maximum < self.minimum):
            raise ValueError("TargetScaler: maximum below minimum for channel(s) "
                             f"{np.flatnonzero(self.maximum < self.minimum).tolist()}")
        if self.names and len(self.names) != self.minimum.size:
            raise ValueError(f"{len(self.names)} names for {self.minimum.size} channels")

    @property
    def n_channels(self) -> int:
        """Number of target channels."""
        return int(self.minimum.size)

    @property
    def span(self) -> np.ndarray:
        """maximum − minimum, with 1 where they are equal."""
        d = self.maximum - self.minimum
        return np.where(d > 0, d, 1.0)

    def _apply(self, x, forward: bool):
        shape = getattr(x, "shape", ())
        if len(shape) < 3 or shape[-3] != self.n_channels:
            raise ValueError(f"expected targets (..., {self.n_channels}, H, W), got shape {tuple(shape)}")
        lo, sp = self.minimum[:, None, None], self.span[:, None, None]
        if isinstance(x, np.ndarray):
            lo, sp = lo.astype(x.dtype, copy=False), sp.astype(x.dtype, copy=False)
            return (x - lo) / sp if forward else x * sp + lo
        lo_t = torch.as_tensor(lo, dtype=x.dtype, device=x.device)
        sp_t = torch.as_tensor(sp, dtype=x.dtype, device=x.device)
        return (x - lo_t) / sp_t if forward else x * sp_t + lo_t

    def encode(self, targets):
        """Physical units → [0, 1]: (t − min) / (max − min) along axis −3.

        Parameters
        ----------
        targets : tensor or array (..., n, H, W).

        Returns the same type and dtype. Raises ``ValueError`` for another channel count.
        """
        return self._apply(targets, True)

    def decode(self, normalised):
        """[0, 1] → physical units (inverse of :meth:`encode`): t = x · :attr:`span` + min along axis −3.

        Parameters
        ----------
        normalised : np.ndarray or torch.Tensor
            (..., n, H, W) normalised targets.

        Returns
        -------
        np.ndarray or torch.Tensor
            Same type, dtype and shape, in :data:`TARGET_UNITS`.

        Raises
        ------
        ValueError
            When axis −3 does not hold the scaler's n channels.
        """
        return self._apply(normalised, False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dictionary (lists of floats)."""
        return {"minimum": self.minimum.tolist(), "maximum": self.maximum.tolist(), "names": list(self.names),
                "source": self.source}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TargetScaler":
        """Inverse of :meth:`to_dict`.

        Parameters
        ----------
        d : dict
            ``minimum`` and ``maximum`` (lists of floats), optional ``names`` and ``source``.

        Returns
        -------
        TargetScaler

        Raises
        ------
        KeyError
            Naming a missing ``minimum`` or ``maximum``.
        ValueError
            For ranges of different lengths, non-finite, or with maximum below minimum.
        """
        for k in ("minimum", "maximum"):
            if k not in d:
                raise KeyError(f"TargetScaler dictionary lacks {k!r}")
        return cls(np.asarray(d["minimum"]), np.asarray(d["maximum"]), tuple(d.get("names", ())), d.get("source", ""))

    @classmethod
    def from_trainset(cls, root: str | Path, chunk: int = 256) -> "TargetScaler":
        """Minimum and maximum of every target channel over all shards of a training set.

        Parameters
        ----------
        root : str or Path
            The training-set folder (with ``manifest.json``).
        chunk : int, optional
            Patches read at a time.

        Returns
        -------
        TargetScaler
            (n_targets,) float64 ranges in :data:`TARGET_UNITS`, with the manifest's target names.

        Raises
        ------
        TrainsetError
            For a folder without a (readable) manifest, a missing or damaged shard, or no target value.
        """
        import zarr

        root = Path(root)
        man = read_manifest(root)
        names = tuple(man["targets"]["names"])
        lo = np.full(len(names), np.inf)
        hi = np.full(len(names), -np.inf)
        for e in man["shards"]:
            path = root / e["file"]
            if not path.is_dir():
                raise TrainsetError(path, "shard listed in the manifest is missing",
                                    f"run `{make_trainset_command(root, man)}` to make it again")
            with reading_shard(root, e["file"], man):
                t = zarr.open_group(str(path), mode="r")["targets"]
                for s in range(0, t.shape[0], chunk):
                    x = np.asarray(t[s:s + chunk], dtype=np.float64)
                    lo = np.minimum(lo, x.min(axis=(0, 2, 3)))
                    hi = np.maximum(hi, x.max(axis=(0, 2, 3)))
        if not np.all(np.isfinite(lo)):
            raise TrainsetError(root, "no target values found (empty training set?)")
        return cls(lo, hi, names, f"trainset {root}")

    @classmethod
    def from_sicon(cls, path: str | Path | None = None, names: Sequence[str] = ()) -> "TargetScaler":
        """SICON's fixed ranges, converted to our units.

        From ``encdec_normalization.npz`` via :func:`helioforge.inversion.dataset.sicon_ranges`.

        Parameters
        ----------
        path : str or Path, optional
            The ``.npz`` file; default ``<data_root>/stokes/instrument/encdec_normalization.npz``.
        names : sequence of str, optional
            Target names to record.

        Returns
        -------
        TargetScaler
            (49,) float64 ranges in :data:`TARGET_UNITS`.

        Raises
        ------
        FileNotFoundError
            No such file.
        ValueError
            Arrays ``minimum``/``maximum`` missing or not of 49 values.
        """
        lo, hi = sicon_ranges(path)
        where = path if path is not None else data_root() / "stokes" / "instrument" / "encdec_normalization.npz"
        return cls(lo, hi, tuple(names), f"sicon {where}")



# --------------------------------------------------------------------------- network and inputs
def model_dict(model: SiconModelConfig | dict[str, Any]) -> dict[str, Any]:
    """The network settings as a plain dict.

    Parameters
    ----------
    model : SiconModelConfig or dict
        A :class:`~helioforge.inversion.config.SiconModelConfig` or a sidecar's ``model`` entry.

    Returns
    -------
    dict
        A new dict (``dataclasses.asdict`` or a shallow copy).
    """
    return dataclasses.asdict(model) if dataclasses.is_dataclass(model) else dict(model)


def build_network(model: SiconModelConfig | dict[str, Any], n_wavelengths: int = 112) -> torch.nn.Module:
    """The network of a :class:`~helioforge.inversion.config.SiconModelConfig` (or its dict) for nλ wavelengths.

    Paper 003 §3.1 (encoder–decoder) and §3.2 (concatenate).

    Parameters
    ----------
    model : SiconModelConfig or dict
        Needs ``network`` (``encdec`` or ``concat``) and ``width``; ``continuum_quantities``
        optional (encoder–decoder).
    n_wavelengths : int, optional
        nλ (112 for Hinode SP).

    Returns
    -------
    torch.nn.Module
        An :class:`~helioforge.nn.sicon.EncoderDecoder` (4 nλ + 3 → 49 channels) or a
        :class:`~helioforge.nn.sicon.Concatenate` (4 nλ → 49).

    Raises
    ------
    ValueError
        For an unknown network name.
    KeyError
        For settings without ``network`` or ``width``.
    """
    m = model_dict(model)
    if m["network"] == "encdec":
        return EncoderDecoder(N_STOKES * n_wavelengths + 3, 7 * N_DEPTHS, int(m["width"]),
                              tuple(m.get("continuum_quantities", CONTINUUM_QUANTITIES)))
    if m["network"] == "concat":
        return Concatenate(N_STOKES * n_wavelengths, 7, N_DEPTHS, int(m["width"]))
    raise ValueError(f"unknown network {m['network']!r}; choose one of {list(NETWORKS)}")


def network_inputs(stokes: torch.Tensor, model: SiconModelConfig | dict[str, Any],
                   amplitude_floor: float | None = None,
                   log_amplitude_offset: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
    """Preprocess Stokes maps (B, 4, nλ, H, W) for the network of ``model``
    (:func:`~helioforge.nn.sicon.encdec_inputs` or :func:`~helioforge.nn.sicon.concat_inputs`).

    Parameters
    ----------
    stokes : (B, 4, nλ, H, W), quiet-Sun continuum units.
    model : :class:`~helioforge.inversion.config.SiconModelConfig` or its dict (a sidecar's ``model`` entry).
    amplitude_floor : overrides the configured Q, U, V amplitude floor (encoder–decoder only).
    log_amplitude_offset : the training set's fixed log-amplitude offset (Q, U, V, dex;
        :func:`~helioforge.inversion.train.log_amplitude_offset`); default ``model["log_amplitude_offset"]`` (set by
        :class:`~helioforge.inversion.infer.SiconInverter` from the sidecar). The same offset in training and inversion
        makes a pixel's input independent of the size and content of the map (issue 13).

    Raises
    ------
    ValueError : an encoder–decoder without an offset (neither given nor in ``model``), and
        the errors of :func:`~helioforge.nn.sicon.encdec_inputs`.
    """
    m = model_dict(model)
    if m["network"] == "encdec":
        floor = float(m["amplitude_floor"] if amplitude_floor is None else amplitude_floor)
        offset = m.get("log_amplitude_offset") if log_amplitude_offset is None else log_amplitude_offset
        if offset is None:
            raise ValueError("encoder-decoder inputs need the training set's fixed log-amplitude offset "
                             "(log_amplitude_offset; stored in the weights' sidecar under preprocessing)")
        return encdec_inputs(stokes, floor, bool(m.get("amplitude_relative_to_continuum", True)), offset)
    return concat_inputs(stokes, tuple(m.get("concat_stokes_scale", CONCAT_STOKES_SCALE)))



def _reflect_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Reflection padding of (B, C, H, W) by any amount (repeated reflections; replicate for a
    1-pixel axis)."""
    while top or bottom or left or right:
        H, W = x.shape[-2:]
        if H == 1 and (top or bottom):
            x = F.pad(x, (0, 0, top, bottom), mode="replicate")
            top = bottom = 0
            continue
        if W == 1 and (left or right):
            x = F.pad(x, (left, right, 0, 0), mode="replicate")
            left = right = 0
            continue
        t, b, l, r = min(top, H - 1), min(bottom, H - 1), min(left, W - 1), min(right, W - 1)
        x = F.pad(x, (l, r, t, b), mode="reflect")
        top, bottom, left, right = top - t, bottom - b, left - l, right - r
    return x


def pad_for_network(x: torch.Tensor, net: torch.nn.Module) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """Reflection-pad network inputs to the size ``net`` accepts, the map centred.

    The padded H, W are multiples of ``net.size_multiple`` and ≥ ``net.min_size`` (1 when the
    network lacks them); axes of 1 pixel are replicated.

    Parameters
    ----------
    x : torch.Tensor
        (B, C, H, W) network inputs.
    net : torch.nn.Module
        The network.

    Returns
    -------
    tuple
        ``(padded, (rows, cols))``: padded (B, C, H', W') and the slices that crop the output back
        to H × W.
    """
    H, W = x.shape[-2:]
    mult, least = int(getattr(net, "size_multiple", 1)), int(getattr(net, "min_size", 1))

    def target(n: int) -> int:
        return max(least, -(-n // mult) * mult)

    Ht, Wt = target(H), target(W)
    top, left = (Ht - H) // 2, (Wt - W) // 2
    if (Ht, Wt) != (H, W):
        x = _reflect_pad(x, top, Ht - H - top, left, Wt - W - left)
    return x, (slice(top, top + H), slice(left, left + W))


# --------------------------------------------------------------------------- the weights product
def train_command(workdir: str | Path, network: str, trainset: str | Path | None = None, profile: str | None = None,
                  force: bool = False) -> str:
    """The ``helioforge inversion train`` command that (re)makes the weights of ``network``.

    Parameters
    ----------
    workdir : str or Path
        The training folder (``…/train_<network>``: ``-w`` is its parent) or the work folder.
    network : str
        ``encdec`` or ``concat``.
    trainset : str or Path, optional
        The training set (``-t``); the placeholder ``TRAINSET`` when not given.
    profile : str, optional
        SICON profile name (``-p``).
    force : bool, optional
        Append ``--force``.

    Returns
    -------
    str
        The shell command, paths quoted with :func:`shlex.quote`.
    """
    workdir = Path(workdir)
    w = workdir.parent if workdir.name == f"train_{network}" else workdir
    cmd = (f"helioforge inversion train -t {shlex.quote(str(trainset)) if trainset else 'TRAINSET'} "
           f"-w {shlex.quote(str(w))} -n {network}")
    if profile:
        cmd += f" -p {shlex.quote(str(profile))}"
    return cmd + (" --force" if force else "")


def retrain_command(stem: str | Path, network: str, force: bool = False) -> str:
    """The training command of the weights ``stem``.

    With the training set and profile its folder's ``sicon_settings.json`` records
    (placeholders when unreadable, or ``TRAINSET``/``WORKDIR`` for weights outside a
    ``train_<network>`` folder).

    Parameters
    ----------
    stem : str or Path
        Path of the weights without suffix.
    network : str
        ``encdec`` or ``concat``.
    force : bool, optional
        Append ``--force``.

    Returns
    -------
    str
        The shell command.
    """
    stem = Path(stem)
    if stem.parent.name != f"train_{network}":  # weights copied out of their training folder
        return f"helioforge inversion train -t TRAINSET -w WORKDIR -n {network}" + (" --force" if force else "")
    trainset = profile = None
    try:
        d = json.loads((stem.parent / SETTINGS_FILE).read_text())
        trainset, profile = d.get("trainset"), (d.get("profile") or {}).get("name")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        pass
    return train_command(stem.parent, network, trainset, profile, force=force)


def check_trained(stem: str | Path) -> None:
    """Refuse the weights ``stem`` of a training folder unless their training finished.

    A folder made by :func:`~helioforge.inversion.train.train_sicon` (it has ``state.json`` or a training checkpoint) must
    record the weights as finished, with their SHA-256 unchanged; weights elsewhere (a copy
    without the training folder) are taken as they are.

    Raises
    ------
    ProductError : unfinished (interrupted or still running: the command resumes it), or the
        files changed since they were written.
    """
    stem = Path(stem)
    folder = stem.parent
    if not ((folder / "state.json").is_file() or last_checkpoint(folder) is not None):
        return
    network = stem.name.removeprefix("sicon_") or "encdec"
    cmd = retrain_command(stem, network)
    state = StepState(folder, create=False)
    try:
        state.require(stem.name, None, stem.with_suffix(".safetensors"), stem.with_suffix(".json"), rebuild=cmd)
    except ProductError as exc:
        if exc.path != state.state_file:
            raise
        raise ProductError(exc.path, exc.problem, f"delete it and run `{cmd}` (it resumes from the checkpoint and "
                                                  "records the weights again)") from None

