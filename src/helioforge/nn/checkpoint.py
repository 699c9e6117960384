"""Weights and training checkpoints without pickle.

* :func:`save_weights` / :func:`load_weights`: a model's ``state_dict`` as ``<name>.safetensors``
  plus a JSON sidecar ``<name>.json`` with its configuration and provenance.
* :class:`SafetensorsCheckpointIO`: a Lightning ``CheckpointIO`` plugin that writes the full
  training state (weights, optimiser moments, loop counters, callback state) as one
  safetensors file: tensors as tensors, everything else as a JSON skeleton in the file's
  metadata. Resuming (``ckpt_path="last"``) therefore never unpickles anything.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import CheckpointIO
from safetensors import safe_open
from safetensors.torch import save_file

from helioforge import __version__
from helioforge.errors import ProductError
from helioforge.io import atomic_path, write_json

__all__ = ["save_weights", "load_weights", "build_from_weights", "read_json_product", "SafetensorsCheckpointIO", "pack",
           "unpack"]


def save_weights(path_stem: str | os.PathLike, module: torch.nn.Module, config: dict[str, Any]) -> Path:
    """Save ``module.state_dict()`` to ``<stem>.safetensors`` and ``config`` to ``<stem>.json``.

    Both files are written atomically; the JSON also records the helioforge version and the
    module class (keys ``helioforge`` and ``class``; a key of ``config`` with the same name wins).

    Parameters
    ----------
    path_stem : str or os.PathLike
        Path without suffix (any suffix is replaced).
    module : torch.nn.Module
        The network; its tensors are copied to the CPU.
    config : dict
        JSON-able settings that rebuild the network (read back by :func:`load_weights`).

    Returns
    -------
    Path
        The ``.safetensors`` path.

    Raises
    ------
    TypeError
        ``config`` is not JSON-serialisable.
    OSError
        A file cannot be written.
    """
    stem = Path(path_stem)
    weights = stem.with_suffix(".safetensors")
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "helioforge": __version__})
    write_json(stem.with_suffix(".json"), {"class": type(module).__name__, "helioforge": __version__, **config})
    return weights


def read_json_product(path: str | os.PathLike, what: str = "file", remedy: str | None = None) -> Any:
    """Parse a JSON product.

    Parameters
    ----------
    path : str or os.PathLike
        The JSON file.
    what : str
        What to call it in the message (e.g. ``"model settings"``).
    remedy : str, optional
        End of the message (default: rerun the step with ``--force``).

    Returns
    -------
    any
        The parsed JSON value (not necessarily a dict).

    Raises
    ------
    ProductError
        The file is missing, unreadable or not JSON (truncated, garbled, empty); the message
        names the file and ends with ``remedy``.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ProductError(path, f"unreadable {what} ({type(exc).__name__}: {exc})", remedy) from None


def load_weights(path_stem: str | os.PathLike, remedy: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read what :func:`save_weights` wrote: ``(state_dict, config)``.

    Raises
    ------
    FileNotFoundError : a missing file (named).
    ProductError : a truncated or garbled safetensors file, an unreadable JSON sidecar, or
        non-finite (NaN/inf) weights; the message ends with ``remedy`` (default: rerun the step
        with ``--force``).
    """
    stem = Path(path_stem)
    weights, sidecar = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    for p in (weights, sidecar):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: model file not found")
    state: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(weights), framework="pt") as f:
            for key in f.keys():
                state[key] = f.get_tensor(key)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for bad files
        raise ProductError(weights, f"unreadable weights ({type(exc).__name__}: {exc})", remedy) from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ProductError(weights, f"non-finite (NaN or inf) weights in {len(bad)} tensor(s), e.g. {bad[0]}; "
                           "the training diverged or the file was damaged", remedy)
    config = read_json_product(sidecar, "model settings", remedy)
    if not isinstance(config, dict):
        raise ProductError(sidecar, "unreadable model settings (not a JSON object)", remedy)
    return state, config


def build_from_weights(path_stem: str | os.PathLike, factory, device: str | torch.device = "cpu",
                       remedy: str | None = None):
    """Load :func:`save_weights` files into ``factory(config)``, a module built from the JSON settings.

    Parameters
    ----------
    path_stem : str or os.PathLike
        Path of the pair without suffix.
    factory : callable
        ``factory(config) -> torch.nn.Module``.
    device : str or torch.device
        Where the module goes.
    remedy : str, optional
        End of the error messages (default: rerun the step with ``--force``).

    Returns
    -------
    (torch.nn.Module, dict)
        The module, in eval mode on ``device``, and the JSON config.

    Raises
    ------
    FileNotFoundError
        A missing file (see :func:`load_weights`).
    ProductError
        An unreadable or non-finite weights file or JSON sidecar (:func:`load_weights`); settings
        the factory rejects (``KeyError``, ``TypeError``, ``ValueError``, ``AttributeError``); or
        weights that do not match them (``load_state_dict`` shape or key mismatch). The message
        names the file and ends with ``remedy``.
    """
    state, cfg = load_weights(path_stem, remedy)
    stem = Path(path_stem)
    try:
        module = factory(cfg)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProductError(stem.with_suffix(".json"), f"not the settings of this kind of network "
                           f"({type(exc).__name__}: {exc})", remedy) from None
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        detail = "; ".join(line.strip() for line in str(exc).splitlines()[1:3] if line.strip()) or str(exc)
        raise ProductError(stem.with_suffix(".safetensors"), f"weights do not match their settings in "
                           f"{stem.with_suffix('.json').name} ({detail[:300]})", remedy) from None
    return module.eval().to(device), cfg


def pack(obj: Any, tensors: dict[str, torch.Tensor], path: str = "t") -> Any:
    """Split a nested checkpoint into a JSON-able skeleton and a flat dict of tensors.

    Parameters
    ----------
    obj : any
        The checkpoint (nested dicts, lists, tuples, tensors, scalars ...).
    tensors : dict
        Filled in place with ``{key: tensor}`` (detached CPU copies); keys are
        ``"<path>#<index>"``.
    path : str
        Key prefix of the current position (used by the recursion).

    Returns
    -------
    any
        The JSON-able skeleton: tensors become ``{"__tensor__": key}``, string-keyed dicts
        ``{"__map__": ...}``, other dicts ``{"__pairs__": ...}``, tuples ``{"__tuple__": ...}``,
        non-finite floats ``{"__float__": repr}``, path-likes strings and any other object
        ``{"__repr__": repr(obj)}``.
    """
    if isinstance(obj, torch.Tensor):
        key = f"{path}#{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {"__map__": {k: pack(v, tensors, f"{path}.{k}") for k, v in obj.items()}}
        return {"__pairs__": [[pack(k, tensors, path), pack(v, tensors, f"{path}.{i}")] for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"__tuple__": [pack(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [pack(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return {"__repr__": repr(obj)}


def unpack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`pack` (objects stored by ``repr`` come back as that string).

    Parameters
    ----------
    obj : any
        A skeleton made by :func:`pack` (after a JSON round trip).
    tensors : dict
        The ``{key: tensor}`` dict filled by :func:`pack`.

    Returns
    -------
    any
        The nested checkpoint.

    Raises
    ------
    ValueError
        An unknown tag, or a tagged dict that does not hold exactly one entry.
    KeyError
        A tensor key missing from ``tensors``.
    """
    if isinstance(obj, list):
        return [unpack(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    (tag, value), = obj.items()
    if tag == "__tensor__":
        return tensors[value]
    if tag == "__map__":
        return {k: unpack(v, tensors) for k, v in value.items()}
    if tag == "__pairs__":
        return {unpack(k, tensors): unpack(v, tensors) for k, v in value}
    if tag == "__tuple__":
        return tuple(unpack(v, tensors) for v in value)
    if tag == "__float__":
        return float(value)
    if tag == "__repr__":
        return value
    raise ValueError(f"unknown checkpoint tag {tag!r}")


class SafetensorsCheckpointIO(CheckpointIO):
    """Lightning checkpoint plugin storing the training state as safetensors + JSON metadata."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        """Write Lightning's checkpoint dict to ``path`` as one safetensors file, atomically.

        Parameters
        ----------
        checkpoint : dict
            Lightning's training state; tensors are stored as tensors, the rest as the JSON
            skeleton of :func:`pack` in the ``skeleton`` metadata entry.
        path : str or os.PathLike
            Destination file.
        storage_options : any
            Ignored (Lightning's interface).
        """
        tensors: dict[str, torch.Tensor] = {}
        skeleton = pack(checkpoint, tensors)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"skeleton": json.dumps(skeleton), "helioforge": __version__})

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Read a checkpoint written by :meth:`save_checkpoint`.

        Parameters
        ----------
        path : str or os.PathLike
            The checkpoint file.
        map_location : str, torch.device, callable or None
            Device of the tensors; ``None`` or a callable means the CPU.
        weights_only : bool, optional
            Ignored (nothing is unpickled in any case).

        Returns
        -------
        dict
            The training state, as given to :meth:`save_checkpoint`.

        Raises
        ------
        FileNotFoundError
            No such file.
        ProductError
            A safetensors file without the helioforge skeleton, or a truncated or garbled file
            (a ``ValueError``; the message suggests deleting it or rerunning with ``--force``).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: checkpoint not found")
        device = "cpu" if map_location is None or callable(map_location) else str(map_location)
        remedy = "delete it to restart that training from scratch, or rerun with --force"
        try:
            with safe_open(str(path), framework="pt", device=device) as f:
                meta = f.metadata() or {}
                if "skeleton" not in meta:
                    raise ProductError(path, "not a helioforge training checkpoint (no skeleton metadata)", remedy)
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            return unpack(json.loads(meta["skeleton"]), tensors)
        except ProductError:
            raise
        except Exception as exc:  # noqa: BLE001 - truncated/garbled file or skeleton
            raise ProductError(path, f"unreadable training checkpoint ({type(exc).__name__}: {exc})", remedy) from None

    def remove_checkpoint(self, path: str | os.PathLike) -> None:
        """Delete a checkpoint file (missing files are ignored).

        Parameters
        ----------
        path : str or os.PathLike
            The checkpoint file.
        """
        Path(path).unlink(missing_ok=True)
