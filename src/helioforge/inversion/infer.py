"""Inverting Hinode SP maps with trained SICON networks: the inference API
(Asensio Ramos & Díaz Baso 2019, A&A 626, A102, §4).

:class:`SiconInverter` applies trained weights to Stokes maps of any size (reflection padding,
tiles, physical units); :func:`invert_map` is the whole job under ``helioforge invert``:
read → calibrate the wavelength axis, resample to the standard grid and normalise to the quiet
Sun (:func:`load_map`, :mod:`helioforge.inversion.preprocess`) → match the trained pixel →
network → physical units → :class:`~helioforge.inversion.atmos_cube.AtmosCube` with
(B_x, B_y, B_z) and world coordinates (helioprojective, from the map's pointing and scan step:
:func:`sp_wcs`), written by :func:`~helioforge.inversion.atmos_cube.write_atmos_cube`.

"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from helioforge import __version__
from helioforge.data import hinode_sp
from helioforge.errors import HelioforgeError, InputError, ProductError
from helioforge.inversion import preprocess
from helioforge.inversion.atmos_cube import AtmosCube
from helioforge.inversion.config import SiconModelConfig
from helioforge.inversion.model import (DEFAULT_PIXEL_ARCSEC, TargetScaler, build_network, check_trained,
                                        network_inputs, pad_for_network, retrain_command)
from helioforge.inversion.targets import field_vector, split_targets, target_names
from helioforge.nn.checkpoint import load_weights
from helioforge.nn.sicon import check_stokes
from helioforge.nn.training import inference_device
from helioforge.physics.sicon_targets import TARGET_LOG_TAU, TARGET_UNITS

__all__ = ["SiconInverter", "invert_stokes", "masked_pixels", "fill_masked", "load_map", "sp_wcs", "invert_map"]

log = logging.getLogger(__name__)

_NO_OFFSET = ("encoder-decoder weights without a fixed log-amplitude offset (preprocessing.log_amplitude_offset): "
              "trained before issue 13, when the log-amplitude channels had each map's own mean subtracted (per "
              "training patch, but per whole map at inversion), so their inputs differ between training and "
              "inversion; they are refused")


class SiconInverter:
    """A trained SICON network applied to Stokes maps of any size (paper §4).

    Build with :meth:`from_weights` (trained weights) or :meth:`untrained` (random weights).
    :meth:`invert` preprocesses each map as in training (the encoder–decoder's log amplitudes
    minus the training set's fixed offset of the sidecar, never a statistic of the map itself),
    reflection-pads it to what the network accepts, runs it in tiles (with overlapping margins)
    when it is large, without gradients and in eval mode, crops, and converts the
    output to physical units with the stored :class:`~helioforge.inversion.model.TargetScaler`.

    Attributes
    ----------
    net : the network (eval mode) on ``device``.
    config : the JSON sidecar of the weights.
    scaler : the target scaling.
    network : ``encdec`` or ``concat``.
    target_names, target_units, log_tau, n_wavelengths : from the sidecar.
    log_amplitude_offset : the encoder–decoder's fixed log-amplitude offset (Q, U, V, dex), or
        ``None`` for the concatenate network.
    pixel_arcsec : pixel of the training maps (sidecar ``stokes.pixel_arcsec``; weights that
        predate it: :data:`~helioforge.inversion.model.DEFAULT_PIXEL_ARCSEC`, the paper's 0.16″).

    Raises
    ------
    ValueError : encoder–decoder weights whose sidecar has no ``log_amplitude_offset``
        (trained before issue 13 with per-map means: they must be retrained).

    Examples
    --------
    Trained weights come from :func:`~helioforge.inversion.train.train_sicon`
    (``SiconInverter.from_weights("runs/inversion/train_encdec/sicon_encdec")``); here a tiny
    untrained network shows the shapes. Any map size works:

    >>> import numpy as np
    >>> inv = SiconInverter.untrained("concat", width=2)
    >>> stokes = np.ones((4, 112, 5, 6), dtype=np.float32)  # I, Q, U, V in quiet-Sun units
    >>> targets = inv.invert(stokes)                          # 7 quantities x 7 log tau
    >>> targets.shape, targets.dtype, inv.target_names[0], inv.target_units["T"]
    ((49, 5, 6), dtype('float32'), 'T@logtau=0', 'K')
    >>> from helioforge.inversion.targets import split_targets
    >>> split_targets(targets).shape                          # (quantity, log tau, y, x)
    (7, 7, 5, 6)
    """

    def __init__(self, net: torch.nn.Module, config: dict[str, Any], device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.config = config
        self.scaler = TargetScaler.from_dict(config["scaler"])
        self.network = config["network"]
        self.model_cfg = config["model"]
        self.target_names = list(config["targets"]["names"])
        self.target_units = dict(config["targets"]["units"])
        self.log_tau = list(config["targets"]["log_tau"])
        self.n_wavelengths = int(config["stokes"]["n_wavelengths"])
        pre = config.get("preprocessing") or {}
        self.log_amplitude_offset = pre.get("log_amplitude_offset")
        if self.network == "encdec" and self.log_amplitude_offset is None:
            raise ValueError(_NO_OFFSET)
        if self.log_amplitude_offset is not None:
            self.log_amplitude_offset = [float(v) for v in self.log_amplitude_offset]
            if len(self.log_amplitude_offset) != 3 or not np.all(np.isfinite(self.log_amplitude_offset)):
                raise ValueError(f"log_amplitude_offset must be 3 finite numbers, got {self.log_amplitude_offset}")
        self.model_cfg = {**self.model_cfg, "log_amplitude_offset": self.log_amplitude_offset}
        self.pixel_arcsec = float(config["stokes"].get("pixel_arcsec") or DEFAULT_PIXEL_ARCSEC)

    @classmethod
    def untrained(cls, network: str = "concat", width: int = 4, n_wavelengths: int = 112,
                  device: str | torch.device = "cpu") -> "SiconInverter":
        """A network with fresh random weights (torch's current seed) and unit target scaling:
        for examples, tests and timing, not for science.

        Parameters
        ----------
        network : ``encdec`` or ``concat``. width : channels of the first block.
        n_wavelengths : nλ of the input maps (112 on the SP grid).

        Raises
        ------
        ValueError : an unknown network or a width < 1
            (:class:`~helioforge.inversion.config.SiconModelConfig`).
        """
        model = dataclasses.asdict(SiconModelConfig(network=network, width=width))
        names = target_names(TARGET_LOG_TAU)
        config = {
            "network": network, "model": model,
            "preprocessing": {"log_amplitude_offset": [0.0, 0.0, 0.0] if network == "encdec" else None},
            "scaler": TargetScaler(np.zeros(len(names)), np.ones(len(names)), tuple(names), "untrained").to_dict(),
            "targets": {"names": names, "units": dict(TARGET_UNITS), "log_tau": list(TARGET_LOG_TAU)},
            "stokes": {"n_wavelengths": int(n_wavelengths)},
        }
        return cls(build_network(model, n_wavelengths), config, device)

    @classmethod
    def from_weights(cls, stem: str | Path, device: str | torch.device | None = None) -> "SiconInverter":
        """Load what :func:`~helioforge.inversion.train.train_sicon` saved (``stem.safetensors`` + ``stem.json``).

        Encoder–decoder weights whose sidecar lacks the fixed log-amplitude offset (trained
        before issue 13) are refused with a :class:`~helioforge.errors.ProductError` naming
        the sidecar and the command that retrains them: no fallback, since the per-map mean
        they were trained with cannot be reproduced on a whole map.

        Parameters
        ----------
        stem : str or Path
            Path of the weights without suffix (e.g. ``…/train_encdec/sicon_encdec``).
        device : str or torch.device, optional
            ``None`` picks a GPU when present, else the CPU.

        Returns
        -------
        SiconInverter
            The network with its sidecar settings (scaler, preprocessing, targets), in eval mode on ``device``.

        Raises
        ------
        FileNotFoundError
            Naming a missing weights or sidecar file.
        ProductError
            (a ``ValueError``) naming the file and the command that retrains it when the weights are
            unfinished (training interrupted or still running, :func:`~helioforge.inversion.model.check_trained`),
            changed since they were written, unreadable (truncated, garbled), non-finite (NaN/inf), or do
            not match the settings of the sidecar (another architecture), or when the sidecar is
            unreadable, not that of a SICON network, or an encoder–decoder's without the offset.
        """
        stem = Path(stem)
        weights, sidecar = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
        for p in (weights, sidecar):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: model file not found")
        check_trained(stem)
        network = stem.name.removeprefix("sicon_") or "encdec"
        remedy = f"retrain it with `{retrain_command(stem, network, force=True)}`"
        try:
            config = json.loads(sidecar.read_text())
            if not isinstance(config, dict):
                raise ValueError(f"a JSON {type(config).__name__}, not an object")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ProductError(sidecar, f"unreadable model settings ({type(exc).__name__}: {exc})", remedy) from None
        missing = [k for k in ("network", "model", "scaler", "targets", "stokes") if k not in config]
        if missing:
            raise ProductError(sidecar, f"not a SICON model (missing {missing})", remedy)
        if config.get("network") == "encdec" and (config.get("preprocessing") or {}).get("log_amplitude_offset") is None:
            raise ProductError(sidecar, _NO_OFFSET, remedy)
        try:
            state, _ = load_weights(stem)
        except ProductError as exc:  # the reader's diagnosis, with the command that remakes SICON weights
            raise ProductError(exc.path, exc.problem, remedy) from None
        except HelioforgeError:
            raise
        except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds for a damaged file
            raise ProductError(weights, f"unreadable weights ({type(exc).__name__}: {exc})", remedy) from None
        for key, t in state.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ProductError(weights, f"non-finite weights (NaN or inf) in {key}: the network would give NaN maps",
                                   remedy)
        try:
            net = build_network(config["model"], int(config["stokes"]["n_wavelengths"]))
            net.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001 - size mismatch (RuntimeError), bad settings (KeyError, ValueError…)
            detail = str(exc).strip().splitlines()
            detail = "; ".join(d.strip() for d in detail[:3]) + (" …" if len(detail) > 3 else "")
            raise ProductError(sidecar, f"its settings do not match the weights in {weights.name} "
                                        f"({type(exc).__name__}: {detail})", remedy) from None
        try:
            return cls(net, config, device if device is not None else inference_device("auto"))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ProductError(sidecar, f"damaged model settings ({type(exc).__name__}: {exc})", remedy) from None

    def _tiles(self, H: int, W: int, tile: int, margin: int) -> list[tuple[slice, slice, slice, slice]]:
        """Per tile: (input rows, input cols, rows and cols of its core within the tile, rows and cols of
        that core in the map)."""
        mult = int(getattr(self.net, "size_multiple", 1))
        tile = max(-(-tile // mult) * mult, int(getattr(self.net, "min_size", 1)))
        margin = -(-margin // mult) * mult
        if tile <= 2 * margin:
            raise ValueError(f"tile {tile} must exceed twice the margin {margin}")
        th, tw = min(tile, H), min(tile, W)

        def axis(n: int, t: int) -> list[tuple[int, int, int]]:
            if n <= t:
                return [(0, 0, n)]
            core = t - 2 * margin
            out = []
            for s in range(0, n, core):
                e = min(s + core, n)
                t0 = max(0, min(s - margin, n - t))
                out.append((t0, s, e))
            return out

        jobs = []
        for r0, rs, re in axis(H, th):
            for c0, cs, ce in axis(W, tw):
                jobs.append((slice(r0, r0 + th), slice(c0, c0 + tw), slice(rs - r0, re - r0), slice(cs - c0, ce - c0),
                             slice(rs, re), slice(cs, ce)))
        return jobs

    @torch.no_grad()
    def invert(self, stokes, *, batch_size: int = 8, tile: int = 512, margin: int | None = None,
               amplitude_floor: float | None = None):
        """Infer the 49 target maps from Stokes maps.

        Parameters
        ----------
        stokes : array or tensor (4, nλ, H, W) or (B, 4, nλ, H, W), I, Q, U, V in units of the
            quiet-Sun continuum (paper §4), on the training set's wavelength grid (112 SP
            points); any H, W ≥ 1.
        batch_size : tiles per network call.
        tile : tile side (rounded up to the network's multiple) for maps larger than it.
        margin : overlap discarded at inner tile edges (default 32 pixels for the
            encoder–decoder, 8 for the concatenate network, whose 9×9 receptive field makes
            tiling exact).
        amplitude_floor : override the trained Q, U, V amplitude floor (encoder–decoder; the
            paper's footnote 4 uses ≈ 0.1 on real data). The log-amplitude offset stays the
            trained one (:attr:`log_amplitude_offset`), so the inputs then differ from the
            training inputs wherever the amplitude lies between the two floors.

        Returns
        -------
        float32 targets (49, H, W) or (B, 49, H, W) in physical units (``target_units``),
        quantity-major; a numpy array for numpy input, else a CPU tensor.

        Raises
        ------
        ValueError : not 4 Stokes parameters, another number of wavelengths, wrong number of
            dimensions, an empty map, or NaN/inf values.
        """
        as_numpy = not isinstance(stokes, torch.Tensor)
        x = torch.as_tensor(np.asarray(stokes) if as_numpy else stokes)
        single = x.ndim == 4
        x = check_stokes(x, self.n_wavelengths).to(torch.float32)
        margin = (32 if self.network == "encdec" else 8) if margin is None else int(margin)
        B, _, _, H, W = x.shape
        out = torch.empty((B, self.scaler.n_channels, H, W), dtype=torch.float32)
        for b in range(B):
            inp = network_inputs(x[b:b + 1].to(self.device), self.model_cfg, amplitude_floor)
            inp, (rows, cols) = pad_for_network(inp, self.net)
            Hp, Wp = inp.shape[-2:]
            pred = torch.empty((self.scaler.n_channels, Hp, Wp), dtype=torch.float32, device=self.device)
            jobs = self._tiles(Hp, Wp, tile, margin)
            for j in range(0, len(jobs), max(1, batch_size)):
                chunk = jobs[j:j + batch_size]
                y = self.net(torch.cat([inp[0, :, r, c][None] for r, c, *_ in chunk]))
                for yy, (_, _, tr, tc, orow, ocol) in zip(y, chunk):
                    pred[:, orow, ocol] = yy[:, tr, tc]
            out[b] = self.scaler.decode(pred[:, rows, cols]).cpu()
        out = out[0] if single else out
        return out.numpy() if as_numpy else out


def invert_stokes(stokes: np.ndarray, network, device: str | None = None) -> tuple[np.ndarray, float]:
    """Network inversion of normalised Stokes maps.

    Parameters
    ----------
    stokes : np.ndarray (4, 112, ny, nx) or (N, 4, 112, ny, nx), quiet-Sun continuum units.
    network : a :class:`SiconInverter`, or the stem of its weights (``…/sicon_encdec``:
        ``.safetensors`` + ``.json``), loaded here.

    Returns
    -------
    (cube data (…, 7, 7, ny, nx) in physical units, seconds spent in the network)
    """
    inv = network if isinstance(network, SiconInverter) else SiconInverter.from_weights(network, device=device)
    t0 = time.perf_counter()
    out = inv.invert(torch.as_tensor(np.asarray(stokes, dtype=np.float32)))
    seconds = time.perf_counter() - t0
    return split_targets(out), seconds


def _ascii(text: str) -> str:
    """``text`` with non-ASCII characters backslash-escaped (FITS header values are ASCII)."""
    return str(text).encode("ascii", "backslashreplace").decode()


def masked_pixels(stokes: np.ndarray, wavelength: np.ndarray | None = None) -> np.ndarray:
    """Pixels of Stokes maps that cannot be inverted.

    A pixel is bad for a non-finite value anywhere in its profiles, or a continuum that is not
    positive (Stokes I over the blue continuum window of ``wavelength``; the first point when no
    axis is given).

    Parameters
    ----------
    stokes : np.ndarray
        (4, nλ, ny, nx) Stokes maps (counts or quiet-Sun continuum units).
    wavelength : np.ndarray, optional
        (nλ,) air wavelengths, Å.

    Returns
    -------
    np.ndarray
        (ny, nx) bool, True = cannot be inverted.
    """
    stokes = np.asarray(stokes)
    bad = ~np.isfinite(stokes).all(axis=(0, 1))
    ic = hinode_sp.continuum_from_stokes(stokes, wavelength) if wavelength is not None else stokes[0, 0]
    with np.errstate(invalid="ignore"):
        bad |= ~(np.asarray(ic) > 0)
    return bad


def fill_masked(stokes: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Replace the ``bad`` pixels of ``stokes`` by the median profile of the others.

    So that a convolutional network sees no NaN; the outputs at those pixels are discarded.

    Parameters
    ----------
    stokes : np.ndarray
        (4, nλ, ny, nx) Stokes maps.
    bad : np.ndarray
        (ny, nx) bool, from :func:`masked_pixels`.

    Returns
    -------
    np.ndarray
        A float32 copy with the bad pixels filled; ``stokes`` itself (not a copy, dtype kept) when no
        pixel is bad. All pixels bad gives NaN profiles (median of nothing).
    """
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
    (:func:`helioforge.inversion.preprocess.calibrate_wavelength`: their mean Doppler velocity is set
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
            sp, cal = preprocess.calibrate_wavelength(sp, mask=quiet_mask, qs_velocity_kms=qs_velocity_kms)
        except (hinode_sp.SPReadError, ValueError) as exc:
            raise InputError(str(exc)) from None
        log.info("%s: wavelength axis calibrated on the quiet-Sun Fe I line cores: they were at %+.2f km/s "
                 "(6301.5: %+.2f, 6302.5: %+.2f), shift %+.1f mA at 6302 A (%d quiet pixels)", path,
                 cal["velocity_kms"], *cal["line_velocities_kms"], cal["shift_mA"], cal["n_quiet"])
    sp = preprocess.to_standard_grid(sp)
    try:
        sp, ic = preprocess.normalise_quiet_sun(sp, mask=quiet_mask)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None
    return sp, skipped, float(ic), time.perf_counter() - t0


def sp_wcs(sp, pixel_arcsec: tuple[float, float]) -> dict[str, Any]:
    """World coordinates of an SP map's pixel grid: helioprojective (``HPLN-TAN``, ``HPLT-TAN``)
    FITS cards for the spatial axes of a cube (FITS axis 1 = x, the slit-scan direction; axis
    2 = y, along the slit).

    Parameters
    ----------
    sp : :class:`~helioforge.data.hinode_sp.SPMap` whose ``header`` holds ``xcen``, ``ycen``
        [arcsec] (``XCEN``/``YCEN``: the map centre) and ``date_obs``.
    pixel_arcsec : (x, y) pixel of the map [arcsec]: the scan step and the pixel along the slit
        (after :func:`~helioforge.inversion.preprocess.match_pixel_scale`, the trained pixel).

    Returns
    -------
    dict of FITS cards (:data:`~helioforge.inversion.atmos_cube.WCS_KEYS`): ``CRPIX`` at the map
    centre, ``CRVAL`` = (XCEN, YCEN) [arcsec], ``CDELT`` = ``pixel_arcsec``, ``DATE-OBS``, and the
    observer (Earth at ``DATE-OBS``, ``HGLN_OBS``/``HGLT_OBS`` [deg], ``DSUN_OBS`` [m]; Hinode
    orbits the Earth). A map without XCEN/YCEN is placed at disk centre (CRVAL 0, 0; the
    SICON networks assume μ = 1); one without a date gets no ``DATE-OBS`` or observer.
    The spacecraft roll is not applied (SP level-1 maps are taken with x along solar E–W).
    """
    h = sp.header or {}
    ny, nx = sp.stokes.shape[-2:]
    cards: dict[str, Any] = {
        "CTYPE1": "HPLN-TAN", "CTYPE2": "HPLT-TAN", "CUNIT1": "arcsec", "CUNIT2": "arcsec",
        "CRPIX1": (nx + 1) / 2.0, "CRPIX2": (ny + 1) / 2.0,
        "CRVAL1": float(h.get("xcen") or 0.0), "CRVAL2": float(h.get("ycen") or 0.0),
        "CDELT1": float(pixel_arcsec[0]), "CDELT2": float(pixel_arcsec[1]),
    }
    date = h.get("date_obs")
    if date:
        from astropy.time import Time
        from sunpy.coordinates import get_earth

        t = Time(str(date).replace("_", " ").rstrip("Z"))
        earth = get_earth(t)
        cards.update({"DATE-OBS": t.isot, "HGLN_OBS": float(earth.lon.to_value("deg")),
                      "HGLT_OBS": float(earth.lat.to_value("deg")), "DSUN_OBS": float(earth.radius.to_value("m"))})
    return cards


def invert_map(path: str | Path, stem: str | Path, branch: int = 0, device: str | None = None,
               quiet_mask: np.ndarray | None = None,
               pixel_scale: tuple[float, float] | None = None, calibrate: bool = True,
               qs_velocity_kms: float = 0.0) -> tuple[AtmosCube, dict[str, Any]]:
    """Invert a Hinode SP map file (or folder of per-slit files) into an atmosphere cube.

    The map's pixel (``XSCALE``, ``YSCALE``) is checked against the pixel the networks were
    trained at (sidecar ``stokes.pixel_arcsec``, 0.16″): an axis that differs by more than 2 %
    is **resampled** to it with a warning naming the file
    (:func:`helioforge.inversion.preprocess.match_pixel_scale`), and the cube is then on the trained
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

    The cube carries world coordinates (``cube.wcs``, :func:`sp_wcs`): helioprojective axes
    from the map's pointing (XCEN, YCEN), its pixel after the pixel-scale check and its date, so
    that ``sunpy.map.Map`` opens a surface of the written cube with correct axes
    (:meth:`~helioforge.inversion.atmos_cube.AtmosCube.to_map`); header card
    ``HF pointing_known`` is false for a map without XCEN/YCEN (then placed at disk centre).

    Returns
    -------
    (AtmosCube, info) where info holds the normalised Stokes map (at the trained pixel),
    wavelength calibration (``wavelength_calibration``) and shift, I_c used, skipped files, the pixel-scale check (``pixel_scale``: see
    :func:`~helioforge.inversion.preprocess.match_pixel_scale`), the mask of the masked pixels
    (``mask``, ``n_masked``) and timings.

    Raises
    ------
    helioforge.data.hinode.HinodeReadError
        For an unreadable map, or one with the wrong number of wavelengths or Stokes parameters.
    helioforge.errors.InputError
        For an implausible map (see :func:`load_map`).
    helioforge.errors.ProductError
        For weights that are unfinished, damaged or inconsistent
        (:meth:`SiconInverter.from_weights`).
    ValueError
        For ``branch`` not 0 or 1.
    """
    if branch not in (0, 1):
        raise ValueError(f"branch must be 0 or 1, got {branch}")
    inverter = SiconInverter.from_weights(stem, device=device)  # damaged weights: refused before any reading
    sp, skipped, ic, t_read = load_map(path, quiet_mask, calibrate=calibrate, qs_velocity_kms=qs_velocity_kms)
    cal = sp.header.get("wavelength_calibration") or {}
    sp, pix = preprocess.match_pixel_scale(sp, inverter.pixel_arcsec, pixel_scale=pixel_scale)
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
    wcs = sp_wcs(sp, (params["pixel_scale_x"], params["pixel_scale_y"]))
    params["pointing_known"] = sp.header.get("xcen") is not None and sp.header.get("ycen") is not None
    return AtmosCube(data=data, bxyz=bxyz, branch=branch, params=params, wcs=wcs), info
