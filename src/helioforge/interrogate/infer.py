"""The infer stage of the interrogator: what a user calls on a trained work folder.

* :class:`Interrogator` — the trained models of a work folder: generate magnetograms, move them
  along the SVM latent directions (plain or conditioned), write them to FITS with a CEA world
  coordinate system, and search the real corpus for the nearest patches (Chatterjee et al. 2025,
  "Interpretable Generation" and "Querying Generated Image to Find Matches in Real Data").
* :func:`magnetogram_params` — the physical parameters of one magnetogram (a SHARP FITS file, a
  ``sunpy.map.Map`` or an array) on the paper's N×N image or in physical units.
* :func:`write_generated` — the FITS (+ PNG) of generated images.
"""

from __future__ import annotations

import datetime as _dt
import math
import sys
from pathlib import Path
from typing import Any, Literal, Sequence

import matplotlib.pyplot as plt
import numpy as np
from astropy.io import fits

from helioforge import reporting
from helioforge.data.fits import finite_or_none
from helioforge.data.preprocess import preprocess_br
from helioforge.data.sharp import RSUN_REF_M, harp_region_mask, read_sharp
from helioforge.errors import InputError, ProductError, check_finite
from helioforge.interrogate.calibrate import PHYSICAL_UNITS, SHARP_CDELT_DEG, Calibration, ImageScale, parse_physical_move
from helioforge.interrogate.config import ParamConfig, Profile
from helioforge.interrogate.data import Corpus
from helioforge.interrogate.directions import LatentDirections, conditional_direction
from helioforge.interrogate.evaluate import image_params
from helioforge.interrogate.gan import Generator, generate, load_generator
from helioforge.interrogate.pipeline import Workspace, require_product
from helioforge.interrogate.project import Projection, project_image
from helioforge.interrogate.retrieval import Match, RetrievalIndex
from helioforge.interrogate.simsiam import embed, load_simsiam
from helioforge.io import atomic_path, fits_hdul
from helioforge.physics.params import as_value, compute_params, physical_params, schrijver_r

__all__ = ["Interrogator", "magnetogram_params", "write_generated", "generated_fits", "patch_side_px", "MAX_EPS", "move_records", "NotCalibrated", "SHARP_CDELT_DEG", "parse_moves", "read_latent"]


# ----------------------------------------------------------------------------- inputs
def _is_map(obj: Any) -> bool:
    """Whether ``obj`` is a ``sunpy.map`` map (without importing sunpy when it is not loaded)."""
    if "sunpy.map" not in sys.modules:
        return False
    from sunpy.map import GenericMap

    return isinstance(obj, GenericMap)


def _map_field(m: Any) -> np.ndarray:
    """A sunpy map's data in gauss (its ``unit`` converted when it has one: Mx/cm², G, T)."""
    data = np.asarray(m.data, dtype=np.float64)
    unit = getattr(m, "unit", None)
    return data if unit is None else np.asarray(as_value(data * unit, "G", "map data"), dtype=np.float64)


def _map_pixel_mm(m: Any) -> float | None:
    """Pixel side in Mm of a CEA (heliographic, degrees per pixel) sunpy map; ``None`` otherwise."""
    ctype = str(m.meta.get("ctype1", "")).upper()
    if not ctype.endswith("-CEA"):
        return None
    cdelt = float(as_value(m.scale.axis1, "deg/pix", "map scale"))
    rsun = float(m.meta.get("rsun_ref") or RSUN_REF_M)
    return abs(cdelt) * math.pi / 180.0 * rsun / 1e6


def magnetogram_params(
    source: str | Path | np.ndarray | Any,
    units: Literal["paper", "physical"] = "paper",
    size: int = 128,
    threshold: float | Any = 150.0,
    pixel_size: float | Any | None = None,
) -> dict[str, Any]:
    """Physical parameters (TUF, TPF, TNF, PSEP, R, tilt, leading polarity) of one magnetogram.

    Parameters
    ----------
    source : a SHARP Br FITS path, a ``sunpy.map.Map`` (data in G or Mx/cm²), or a 2-D array
        (or ``Quantity``) of the radial field in gauss.
    units : ``"paper"``: the N×N preprocessed image (B / 1000 G clipped to [-1, 1], fluxes in
        kG·px, PSEP in px; Chatterjee et al. 2025). ``"physical"``: the native-resolution patch
        in Mx and Mm (:func:`helioforge.physics.params.physical_params`) over the HARP region
        (bitmap ≥ 33, as SHARP's ``USFLUX``; without a bitmap the strong-field pixels
        ``|Br| > threshold``), plus Schrijver's R over the whole patch.
    size : N for ``units="paper"`` (paper: 128).
    threshold : polarity threshold, G, or a ``Quantity`` (``150 * u.G``); finite and ≥ 0.
    pixel_size : native pixel side for ``units="physical"`` when ``source`` is an array (Mm, or
        a length ``Quantity``); a FITS file or a CEA map give their own.

    Returns
    -------
    dict : ``file`` (the path, ``None`` for arrays and maps), the seven parameters as floats
        (``leading_sign`` an int), ``units`` (in words), ``warnings`` (header repairs of the
        reader); with ``units="physical"`` also ``region`` (how the HARP region was found),
        ``USFLUX`` and ``R_VALUE`` (header, ``None`` when absent) and ``R_schrijver``
        (log10 Mx, ``None`` without a polarity inversion line).

    Raises
    ------
    FileNotFoundError, helioforge.data.fits.FitsReadError : an unreadable file.
    InputError : a bad threshold, size or unit, or physical units for an array without
        ``pixel_size`` (or a map that is not CEA).

    Examples
    --------
    Parameters of a magnetogram given as an array in gauss (a bipole: TUF in kG·px on the 32×32
    image, PSEP in pixels, the positive polarity leading):

    >>> import numpy as np
    >>> import astropy.units as u
    >>> y, x = np.mgrid[0:64, 0:64]
    >>> bipole = 800 * (np.exp(-((x - 40) ** 2 + (y - 32) ** 2) / 20) - np.exp(-((x - 24) ** 2 + (y - 32) ** 2) / 20))
    >>> p = magnetogram_params(bipole, size=32, threshold=150 * u.G)
    >>> round(p["PSEP"], 2), p["leading_sign"], p["units"]
    (8.0, 1, 'kG px, px (32x32), deg')
    >>> q = magnetogram_params(bipole * u.G, units="physical", pixel_size=0.364 * u.Mm)
    >>> f"{q['TUF']:.3e} Mx", round(q["PSEP"], 2)
    ('1.065e+20 Mx', 5.83)
    """
    if units not in ("paper", "physical"):
        raise InputError(f"units must be 'paper' or 'physical', got {units!r}")
    try:
        threshold = float(as_value(threshold, "G", "threshold"))
    except ValueError as exc:
        raise InputError(str(exc)) from None
    check_finite("threshold", threshold, minimum=0.0)
    pcfg = ParamConfig(threshold_gauss=threshold)  # the kernels of R (paper N×N image, native Mm)
    physical = units == "physical"
    name, patch, warnings = None, None, []
    usflux = r_value = None
    if isinstance(source, (str, Path)):
        patch = read_sharp(source, with_companions=physical)
        name, Br, px, warnings = str(source), patch.Br, patch.pixel_size_mm, list(patch.warnings)
        usflux, r_value = patch.usflux, patch.r_value
    elif _is_map(source):
        Br, px = _map_field(source), _map_pixel_mm(source)
        usflux, r_value = finite_or_none(source.meta.get("usflux")), finite_or_none(source.meta.get("r_value"))
    else:
        try:
            Br = np.asarray(as_value(source, "G", "source"), dtype=np.float64)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        px = None
    if pixel_size is not None:
        px = float(as_value(pixel_size, "Mm", "pixel_size"))
    if np.ndim(Br) != 2:
        raise InputError(f"a magnetogram must be 2-D, got shape {np.shape(Br)}")
    if not physical:
        img = preprocess_br(Br, size)
        t = compute_params(img[None, None], threshold=threshold / 1000.0, dilation_px=pcfg.dilation_px(size))
        p = {k: float(v[0]) for k, v in t.items()}
    else:
        if px is None:
            raise InputError("physical units need the pixel size: pass pixel_size (Mm) for an array or a non-CEA map")
        if patch is not None:
            mask, region = harp_region_mask(patch, threshold)
        else:
            mask, region = np.abs(np.nan_to_num(Br)) > threshold, f"strong field |Br| > {threshold:g} G"
        p = physical_params(Br, px, threshold_gauss=threshold, r_kernel_mm=pcfg.r_kernel_mm, mask=mask)
    rec: dict[str, Any] = {"file": name, **{k: float(p[k]) for k in ("TUF", "TPF", "TNF", "PSEP", "R", "tilt")},
                           "leading_sign": int(p["leading_sign"]),
                           "units": "Mx, Mm, deg" if physical else f"kG px, px ({size}x{size}), deg"}
    if physical:
        rec["region"] = region
        rec["USFLUX"] = usflux
        # Schrijver's R over the whole patch, as SHARP computes R_VALUE (log10 Mx; -inf: no PIL)
        r = schrijver_r(Br, px, threshold)
        rec["R_schrijver"] = float(r["R_schrijver"]) if np.isfinite(r["R_schrijver"]) else None
        rec["R_VALUE"] = r_value
    rec["warnings"] = warnings
    return rec


def split_moves(specs: Sequence[str]) -> list[tuple[str, str]]:
    """``["tuf=+2e22Mx", "r=-1"]`` → ``[("tuf", "+2e22Mx"), ("r", "-1")]`` (values unparsed).

    Raises
    ------
    InputError : a spec without ``=``.
    """
    out = []
    for m in specs:
        if "=" not in m:
            raise InputError(f"--move expects NAME=EPS or NAME=VALUE+UNIT (e.g. tuf=+2 or tuf=+2e22Mx), got {m!r}")
        name, val = m.split("=", 1)
        out.append((name.strip(), val.strip()))
    return out


def parse_moves(specs: Sequence[str]) -> list[tuple[str, float]]:
    """``["tuf=+2", "r=-1"]`` → ``[("tuf", 2.0), ("r", -1.0)]`` (shifts ε, no units).

    Raises
    ------
    InputError : a spec without ``=``, a shift that is not a finite number.

    Examples
    --------
    >>> parse_moves(["tuf=+2", "r = -1.5"])
    [('tuf', 2.0), ('r', -1.5)]
    """
    moves = []
    for name, val in split_moves(specs):
        try:
            eps = float(val)
        except ValueError:
            raise InputError(f"--move {name}={val}: {val!r} is not a number") from None
        if not math.isfinite(eps):
            raise InputError(f"--move {name}={val}: the shift must be a finite number")
        moves.append((name, eps))
    return moves


def read_latent(path: str | Path, with_scale: bool = False) -> np.ndarray | tuple[np.ndarray, float | None]:
    """The latent vectors (n, latent_dim) of a FITS file written by ``helioforge generate`` or
    ``helioforge project`` (its ``LATENT`` table), float64; with ``with_scale`` also the native
    patch side it records (``HF NATIVE_SIDE_PX``; ``None`` when absent), so that edits keep the
    projected patch's physical scale.

    Raises
    ------
    FileNotFoundError : no such file. InputError : not a FITS file, or no ``LATENT`` table.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with fits.open(path) as hdul:
            if "LATENT" not in hdul:
                raise InputError(f"{path}: no LATENT table (write one with `helioforge project` or `helioforge generate`)")
            z = np.atleast_2d(np.asarray(hdul["LATENT"].data["z"], dtype=np.float64))
            side = hdul[0].header.get("HIERARCH HF NATIVE_SIDE_PX")
    except OSError as exc:
        raise InputError(f"{path}: not a readable FITS file ({exc})") from None
    if not with_scale:
        return z
    return z, (float(side) if isinstance(side, (int, float)) and math.isfinite(side) and side > 0 else None)


# ----------------------------------------------------------------------------- writing generated images
def _cea_header(n: int, native_side_px: float) -> fits.Header:
    """CEA world coordinates of an N×N generated image standing for a SHARP-like patch of
    ``native_side_px`` native 0.03° pixels (centre at Carrington 0°, 0°; no real pointing)."""
    cdelt = SHARP_CDELT_DEG * float(native_side_px) / n
    hdr = fits.Header()
    hdr["WCSNAME"] = ("Carrington Heliographic", "as SHARP CEA patches")
    for ax, kind in ((1, "CRLN-CEA"), (2, "CRLT-CEA")):
        hdr[f"CTYPE{ax}"] = (kind, "cylindrical equal area")
        hdr[f"CUNIT{ax}"] = ("deg", "")
        hdr[f"CDELT{ax}"] = (cdelt, f"deg/px: {SHARP_CDELT_DEG} x {native_side_px:g} / {n}")
        hdr[f"CRPIX{ax}"] = ((n + 1) / 2.0, "image centre")
        hdr[f"CRVAL{ax}"] = (0.0, "generated: no real position")
    hdr["RSUN_REF"] = (RSUN_REF_M, "m, as JSOC")
    hdr["DATE-OBS"] = (_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
                       "time of generation (no observation)")
    hdr["HGLN_OBS"], hdr["HGLT_OBS"] = (0.0, "deg, nominal observer"), (0.0, "deg, nominal observer")
    hdr["DSUN_OBS"] = (1.495978707e11, "m, nominal observer at 1 au")
    return hdr


def generated_fits(itg: "Interrogator", z: np.ndarray, settings: dict[str, Any], native_side_px: float | None = None,
                   columns: dict[str, np.ndarray] | None = None, images: np.ndarray | None = None,
                   ) -> tuple[fits.HDUList, np.ndarray, list[dict]]:
    """The FITS file of G(z) in memory (the layout :func:`write_generated` documents).

    Parameters
    ----------
    itg : the interrogator. z : (n, latent_dim) latent vectors.
    settings : cards recorded in the header (``HIERARCH HF``), e.g. seed and moves.
    native_side_px : native SHARP pixels across the patch (default: the profile's scale,
        :meth:`~helioforge.interrogate.calibrate.ImageScale.of`).
    columns : further per-image columns of the ``PARAMS`` table (e.g. requested and achieved moves).
    images : G(z) when already computed.

    Returns
    -------
    (hdul, images, rows) : the HDU list, the images (n, 1, N, N) and the parameters of each
    image (paper units and ``TUF_Mx``, ``TPF_Mx``, ``TNF_Mx``, ``R_Mx``, ``PSEP_Mm``).
    """
    z = np.atleast_2d(np.asarray(z, dtype=np.float32))
    images = generate(itg.generator, z) if images is None else images
    scale = ImageScale.of(itg.profile, native_side_px)
    p = scale.measure(images, itg.profile)
    p.update({k: np.asarray(v, dtype=np.float64) for k, v in (columns or {}).items()})
    rows = [{"image": i, **{k: float(v[i]) for k, v in p.items()}} for i in range(len(z))]
    n_px = itg.profile.data.image_size
    hdr = _cea_header(n_px, scale.native_side_px)
    hdr["BUNIT"] = ("kG" if itg.profile.data.clip_gauss == 1000 else f"{itg.profile.data.clip_gauss:g} G", "Br / clip field")
    params = {**settings, "image_size": n_px, "profile": itg.profile.name, "native_side_px": scale.native_side_px,
              "pixel_mm": scale.pixel_mm}
    params.update({k: float(v[0]) for k, v in p.items()})
    table = fits.BinTableHDU.from_columns([fits.Column(name=k, format="D", array=np.asarray(v, float)) for k, v in p.items()], name="PARAMS")
    data = images[:, 0] if len(z) > 1 else images[0, 0]
    hdul = fits_hdul(data, model="helioforge GAN generator", params=params, header=hdr,
                     extra_hdus=[fits.BinTableHDU.from_columns([fits.Column(name="z", format=f"{z.shape[1]}E", array=z)],
                                                               name="LATENT"), table])
    return hdul, images, rows


def write_generated(itg: "Interrogator", z: np.ndarray, output: str | Path, settings: dict[str, Any],
                    native_side_px: float | None = None, columns: dict[str, np.ndarray] | None = None,
                    ) -> tuple[Path, Path, list[dict]]:
    """Generate G(z) for z (n, latent_dim) and write ``output`` (FITS) and ``output.png``.

    The FITS primary HDU holds the images (n, N, N) (or (N, N) for n = 1) in units of
    ``clip_gauss`` (BUNIT ``kG`` for the default 1000 G) with one ``HIERARCH HF`` card per
    parameter of the first image and the provenance cards of :func:`helioforge.io.write_fits`;
    a table ``LATENT`` holds z (column ``z``, one row per image) and a table ``PARAMS`` the
    parameters of every image, in the paper's image units and in Mx / Mm (tables, not images:
    ``sunpy.map.Map`` reads every image HDU as a map, and the file holds one map).
    The header carries a CEA world coordinate system (``CRLN-CEA``/``CRLT-CEA`` in degrees,
    ``DATE-OBS``, a nominal observer) so that ``sunpy.map.Map(output)`` opens a single image
    with its axes: a pixel is the SHARP 0.03° × ``native_side_px`` / N, where
    ``native_side_px`` (default the profile's ``data.tile_px``, the native side of the
    corpus's fixed-size tiles) is the native patch side the N×N image stands for.

    Returns
    -------
    (fits_path, png_path, rows) : ``rows`` holds the parameters of each image.
    """
    hdul, images, rows = generated_fits(itg, z, settings, native_side_px, columns)
    output = Path(output)
    with atomic_path(output) as tmp:
        hdul.writeto(tmp, overwrite=True)
    png = output.with_suffix(".png")
    n = len(images)
    ncol = min(n, 8)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.2 * ncol, 2.4 * nrow), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, ax in enumerate(axes.ravel()[:n]):
        r = rows[i]
        ax.imshow(images[i, 0], cmap="gray", vmin=-1, vmax=1, origin="lower")
        ax.set_title(f"TUF {r['TUF']:.0f}  R {r['R']:.0f}\nPSEP {r['PSEP']:.1f}  lead {int(r['leading_sign']):+d}", fontsize=7)
    reporting.save_figure(fig, png, dpi=110)
    return output, png, rows


def patch_side_px(shape: tuple[int, ...], cdelt_deg: float = SHARP_CDELT_DEG) -> float:
    """Side, in 0.03° SHARP pixels, of the square of the same area as a patch of ``shape``
    pixels of ``cdelt_deg``: the scale of its N×N preprocessed image (resized anisotropically,
    so fluxes are exact and lengths are the geometric mean of the two axes).

    Parameters
    ----------
    shape : the patch's shape (…, ny, nx).
    cdelt_deg : its pixel, heliographic degrees.

    Returns
    -------
    float : √(ny·nx) × cdelt_deg / 0.03.

    Examples
    --------
    >>> round(patch_side_px((434, 1006)), 1)
    660.8
    """
    ny, nx = shape[-2:]
    return float(math.sqrt(ny * nx) * cdelt_deg / SHARP_CDELT_DEG)


class NotCalibrated(InputError):
    """A move in units along a direction whose calibrated slope is not distinguishable from 0;
    ``fit`` is that :class:`~helioforge.interrogate.calibrate.DirectionFit`."""

    def __init__(self, message: str, fit: Any):
        super().__init__(message)
        self.fit = fit


def move_records(recs: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Header cards and ``PARAMS`` columns of the moves :meth:`Interrogator.steer` returns.

    Parameters
    ----------
    recs : the records of :meth:`Interrogator.steer`.

    Returns
    -------
    (cards, columns) : per move ``<NAME>_requested``, ``<NAME>_eps``, ``<NAME>_achieved`` and,
        for a calibrated move, ``<NAME>_per_eps`` (the first image's values, for the header);
        ``eps_<NAME>``, ``d<NAME>_achieved`` and ``outside_<NAME>`` per image (for the table).
    """
    cards: dict[str, Any] = {}
    columns: dict[str, np.ndarray] = {}
    for r in recs:
        nm = r["name"].upper()
        cards[f"{nm}_requested"] = f"{r['requested']:+.4g} {r['unit'] or 'eps'}"
        cards[f"{nm}_eps"] = float(r["eps"][0])
        columns[f"eps_{nm}"] = r["eps"]
        if r.get("achieved") is not None:
            cards[f"{nm}_achieved"] = f"{float(r['achieved'][0]):+.4g} {r['unit'] or r.get('unit_achieved', '')}"
            columns[f"d{nm}_achieved"] = r["achieved"]
        if r["per_eps"] is not None:
            cards[f"{nm}_per_eps"] = f"{r['per_eps']:.4g} {r['unit']} (R2 {r['r2']:.2f}, |eps|<={r['eps_valid']:g})"
            columns[f"outside_{nm}"] = r["outside_valid"].astype(np.float64)
    return cards, columns


#: Largest |ε| a move may take: the generator learned from z ~ N(0, I), whose coordinates lie
#: within ±4 and whose length is ≈ √d (10 for d = 100); far beyond, images are not solar.
MAX_EPS = 20.0

#: Parameter measured for each direction name (polarity: no physical change to report).
_PARAM_OF = {"tuf": "TUF", "psep": "PSEP", "r": "R"}


# ----------------------------------------------------------------------------- the user's API
class Interrogator:
    """Trained models of a work folder, ready to generate, steer and search.

    Built by :meth:`from_workspace`; ``generator``, ``directions``, ``simsiam``, ``index`` and
    ``corpus`` are loaded once. Queries may be latent vectors, preprocessed images, native
    magnetograms (arrays in gauss, ``Quantity``, ``sunpy.map.Map``) or FITS files.

    Parameters
    ----------
    profile : the work folder's profile. generator : the trained generator.
    directions : the SVM latent directions (``None`` when not fitted or stale).
    simsiam, index, corpus : the embedding model, the FAISS index and the real corpus
        (``None`` when loaded for generation only).
    """

    def __init__(self, profile: Profile, generator: Generator, directions: LatentDirections | None,
                 simsiam, index: RetrievalIndex | None, corpus: Corpus | None = None):
        self.profile = profile
        self.generator = generator
        self.directions = directions
        self.simsiam = simsiam
        self.index = index
        self.corpus = corpus
        #: why ``directions`` is None (not fitted, stale ...), for the message of a move
        self.directions_problem: str | None = None
        #: the directions in physical units (``None`` until ``helioforge directions calibrate``)
        self.calibration: Calibration | None = None
        self.calibration_problem: str | None = "no physical calibration yet (run `helioforge directions calibrate`)"

    @classmethod
    def from_workspace(cls, root: str | Path, with_index: bool = True) -> "Interrogator":
        """Load what a previous ``interrogate`` (or the train steps) wrote in ``root``; with
        ``with_index=False`` only the generator and directions (enough to generate).
        Every product is checked first (:func:`~helioforge.interrogate.pipeline.require_product`):
        a half-trained generator, an index of another corpus or a file changed since it was
        written is refused. Directions that were never fitted give ``directions=None``.
        Read-only: the folder is not created.

        Raises
        ------
        FileNotFoundError : no such work folder, or no profile in it (nothing was finished).
        ProductError : a product is unfinished, stale, changed or unreadable (names the file
            and the command that rebuilds it).
        """
        ws = Workspace(Path(root), create=False)
        if not ws.root.is_dir():
            raise FileNotFoundError(f"{ws.root}: no such work folder")
        profile = ws.load_profile()
        require_product(profile, ws, "gan")
        generator = load_generator(ws.generator)
        directions, why_none = None, "no latent directions yet (run `helioforge directions fit`)"
        if ws.state().get("directions") is not None or ws.directions.exists():
            try:
                require_product(profile, ws, "directions")
                directions = LatentDirections.load(ws.directions)
            except ProductError as exc:  # generation without moves still works; moves say why not
                why_none = str(exc)
        if with_index:
            for step in ("corpus", "simsiam", "index"):
                require_product(profile, ws, step)
            simsiam, _ = load_simsiam(ws.simsiam)
            itg = cls(profile, generator, directions, simsiam, RetrievalIndex.load(ws.index_dir), Corpus.load(ws.corpus))
        else:
            itg = cls(profile, generator, directions, None, None)
        itg.directions_problem = why_none
        if directions is not None and (ws.state().get("calibration") is not None or ws.calibration.exists()):
            try:
                require_product(profile, ws, "calibration")
                itg.calibration = Calibration.load(ws.calibration)
            except ProductError as exc:  # moves in ε still work; physical moves say why not
                itg.calibration_problem = str(exc)
        return itg

    # --------------------------------------------------------------- generate and steer
    def latent(self, seed: int = 0, n: int = 1) -> np.ndarray:
        """``n`` base latent vectors (n, latent_dim), float64, drawn from N(0, I) with ``seed``.

        Parameters
        ----------
        seed : int
            Seed of :func:`numpy.random.default_rng`; the same seed gives the same vectors.
        n : int
            Number of vectors.

        Returns
        -------
        np.ndarray of float64, shape (n, latent_dim)
        """
        return np.random.default_rng(seed).standard_normal((n, self.generator.latent_dim))

    def move(self, z: np.ndarray, moves: Sequence[tuple[str, float]] | Sequence[str],
             keep: Sequence[str] | str = ()) -> np.ndarray:
        """z + Σ ε n̂: move latent vectors along the SVM directions (paper Fig. 5).

        Parameters
        ----------
        z : (n, latent_dim) latent vectors.
        moves : ``(name, ε)`` pairs or ``"name=ε"`` strings (:func:`parse_moves`); names are
            case-insensitive ``tuf``, ``psep``, ``r``, ``polarity``.
        keep : directions held fixed (conditional manipulation: each n̂ is made orthogonal to
            them, after Shen et al. 2019), a sequence or a comma-separated string.

        Raises
        ------
        InputError : a malformed move, no (or stale) directions in the work folder, or an
            unknown or unfitted direction name.
        """
        moves = parse_moves(moves) if all(isinstance(m, str) for m in moves) else list(moves)
        keeps = self._keeps(keep, bool(moves))
        for name, eps in moves:
            z = z + eps * self._direction(name, keeps)
        return z

    def _keeps(self, keep: Sequence[str] | str, moving: bool) -> list[str]:
        """The held directions as a list; an error when there is something to do and no directions."""
        keeps = list(dict.fromkeys(k.strip().lower() for k in (keep.split(",") if isinstance(keep, str) else keep) if k.strip()))
        if (moving or keeps) and self.directions is None:
            raise InputError(self.directions_problem or "no latent directions yet (run `helioforge directions fit`)")
        return keeps

    def _direction(self, name: str, keeps: Sequence[str]) -> np.ndarray:
        """n̂ of ``name`` conditioned on ``keeps`` (:func:`conditional_direction`); InputError naming the problem."""
        try:
            return conditional_direction(self.directions.get(name), [self.directions.get(k) for k in keeps])
        except (KeyError, ValueError) as e:
            raise InputError(str(e).strip("'\"")) from None

    def steer(self, z: np.ndarray, moves: Sequence[str] | Sequence[tuple[str, str]], keep: Sequence[str] | str = (),
              refine: int = 3, native_side_px: float | None = None) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Move z along the directions by physical amounts (``tuf=+2e22Mx``, ``psep=-3Mm``) or
        by ε (``r=+1``), with ``keep`` held; measure what each image achieved.

        A move with a unit becomes ε = Δ / (calibrated change per ε) of the direction as
        conditioned on ``keep`` (:class:`~helioforge.interrogate.calibrate.Calibration`),
        rescaled to ``native_side_px`` when the base stands for a patch of another size (a
        projected SHARP patch). With ``refine`` > 0, each image's ε values are corrected that many
        times, so that the achieved changes approach the requested ones where the response is not
        linear or differs between images: each round is a secant step per image and move through
        its last two (ε, achieved) points, from (0, 0), falling back to the calibrated slope where
        the secant is flat or of the wrong sign. Each image keeps the round (all its moves
        together, as measured together) with the smallest summed relative miss, so refining
        never ends further from the request than the calibrated ε.

        Parameters
        ----------
        z : (n, latent_dim) base latent vectors.
        moves : ``"name=value"`` strings or ``(name, value)`` pairs; value a number (ε) or a
            number with a unit (Mx for TUF and R, a length for PSEP).
        keep : directions held fixed (comma-separated string or sequence; repeats ignored).
        refine : correction rounds for the moves with a unit (0: the calibrated ε as it is).
        native_side_px : native SHARP pixels across the patch the images stand for (default:
            the profile's, :meth:`~helioforge.interrogate.calibrate.ImageScale.of`).

        Returns
        -------
        (z_moved, records) : one record per move: ``name``, ``unit`` (``None`` for ε),
            ``requested`` (in ``unit``, or ε), ``eps`` (n,), ``achieved`` (n,) in ``unit``
            (the change of the parameter between G(z) and G(z_moved), as measured on z_moved;
            ε moves: in the parameter's physical unit, ``None`` for polarity), ``per_eps``,
            ``r2`` and ``eps_valid`` of the calibration, and ``outside_valid`` (n,) bool.

        Raises
        ------
        InputError : a malformed move or unit, no (or stale) directions, a move with a unit
            and no (or a stale) calibration, along a direction whose calibrated slope is not
            distinguishable from 0 (95 % interval across 0), or a change that needs
            |ε| > :data:`MAX_EPS` (beyond anything the generator was trained to draw).
        """
        pairs = split_moves(moves) if all(isinstance(m, str) for m in moves) else [(str(a), str(b)) for a, b in moves]
        keeps = self._keeps(keep, bool(pairs))
        z = np.atleast_2d(np.asarray(z, dtype=np.float64))
        if not np.isfinite(z).all():
            raise InputError("the latent vectors are not finite")
        scale = ImageScale.of(self.profile, native_side_px)
        ref = ImageScale.of(self.profile)  # the scale the calibration was made at
        ratio = {"Mx": scale.flux_mx / ref.flux_mx, "Mm": scale.pixel_mm / ref.pixel_mm}
        recs: list[dict[str, Any]] = []
        for name, value in pairs:
            number, unit = parse_physical_move(name, value)
            vec = self._direction(name, keeps)
            rec: dict[str, Any] = {"name": name, "unit": unit, "requested": number, "vec": vec,
                                   "per_eps": None, "r2": None, "eps_valid": None}
            if unit is not None:
                if self.calibration is None:
                    raise InputError(f"--move {name}={value}: {self.calibration_problem}")
                fit = self.calibration.get(name, keeps)
                if not fit.significant:
                    raise NotCalibrated(f"--move {name}={value}: along {name} with {fit.keep or 'nothing'} held the calibrated "
                                        f"change per ε, {fit.slope:.3g} {fit.unit} (95 % interval {fit.slope_ci[0]:.3g} to "
                                        f"{fit.slope_ci[1]:.3g}), is not distinguishable from 0: move it in ε instead"
                                        + (f", or release {fit.keep}" if fit.keep else ""), fit)
                rec.update(per_eps=fit.slope * ratio[unit], r2=fit.r2, eps_valid=fit.eps_valid)
                rec["eps"] = np.full(len(z), number / rec["per_eps"])
            else:
                rec["eps"] = np.full(len(z), number)
            if not np.all(np.abs(rec["eps"]) <= MAX_EPS):
                raise InputError(f"--move {name}={value}: needs ε = {rec['eps'][0]:.3g}, beyond ±{MAX_EPS:g} (the latent "
                                 "vectors the generator learned from lie within a few units of 0)")
            recs.append(rec)
        if not recs:
            return z, recs

        def apply(eps: list[np.ndarray]) -> np.ndarray:
            return z + sum((e[:, None] * r["vec"][None] for e, r in zip(eps, recs)), np.zeros_like(z))

        def measure(zz: np.ndarray) -> dict[str, np.ndarray]:
            return scale.to_physical(image_params(self.images_from_latent(zz), self.profile))

        base = measure(z)
        unit_moves = [i for i, r in enumerate(recs) if r["unit"] is not None]
        rounds: list[tuple[list[np.ndarray], list[np.ndarray | None], np.ndarray]] = []
        prev = {i: (np.zeros(len(z)), np.zeros(len(z))) for i in unit_moves}
        eps = [r["eps"].copy() for r in recs]
        for round_ in range(refine + 1 if unit_moves else 1):
            moved = measure(apply(eps))
            achieved = [None if _PARAM_OF.get(r["name"].lower()) is None
                        else np.asarray(moved[_PARAM_OF[r["name"].lower()]] - base[_PARAM_OF[r["name"].lower()]], np.float64)
                        for r in recs]
            miss = np.zeros(len(z))
            for i in unit_moves:  # summed relative miss of the moves asked for in units
                miss += np.abs(np.nan_to_num(achieved[i], nan=np.inf) - recs[i]["requested"]) / max(abs(recs[i]["requested"]), 1e-300)
            rounds.append(([e.copy() for e in eps], achieved, miss))
            if round_ == refine:
                break
            for i in unit_moves:
                # secant step per image through the last two (ε, achieved) points, starting from
                # (0, 0); the calibrated slope where the secant is flat, reversed or undefined
                r, (e0, a0) = recs[i], prev[i]
                ach = np.nan_to_num(achieved[i])
                with np.errstate(divide="ignore", invalid="ignore"):
                    sec = (ach - a0) / (eps[i] - e0)
                ok = np.isfinite(sec) & (sec * r["per_eps"] > 0) & (np.abs(sec) > 0.05 * abs(r["per_eps"]))
                slope = np.where(ok, sec, r["per_eps"])
                prev[i] = (eps[i], ach)
                limit = 2.0 * r["eps_valid"]  # no single jump longer than twice the calibrated range
                eps[i] = np.clip(eps[i] + np.clip((r["requested"] - ach) / slope, -limit, limit), -MAX_EPS, MAX_EPS)
        best = np.argmin(np.stack([m for _, _, m in rounds]), axis=0)  # per image: its best round, all moves together
        pick = np.arange(len(z))
        for i, r in enumerate(recs):
            r["eps"] = np.stack([e[i] for e, _, _ in rounds])[best, pick]
            a = [ach[i] for _, ach, _ in rounds]
            r["achieved"] = None if a[0] is None else np.stack(a)[best, pick]
        zm = apply([r["eps"] for r in recs])
        for r in recs:
            r.pop("vec")
            r["outside_valid"] = (np.abs(r["eps"]) > r["eps_valid"]) if r["eps_valid"] is not None else np.zeros(len(z), bool)
            if r["unit"] is None and r.get("achieved") is not None:
                r["unit_achieved"] = PHYSICAL_UNITS[_PARAM_OF[r["name"].lower()]]
        return zm, recs

    def generate(self, output: str | Path, *, seed: int = 0, n: int = 1, move: Sequence[str] = (),
                 keep: str = "", native_side_px: float | None = None, z: np.ndarray | None = None,
                 refine: int = 3) -> tuple[Path, Path, list[dict]]:
        """Generate ``n`` magnetograms from the latent vectors of ``seed`` (or from ``z``, e.g.
        :func:`read_latent` of a projected patch), moved by ``move`` (``"name=ε"`` or
        ``"name=value+unit"`` strings, :meth:`steer`) with ``keep`` held fixed, and write them to
        ``output`` (FITS with a CEA WCS, + PNG; :func:`write_generated`). The header records,
        per move, the requested change, ε and the change achieved in the first image; the
        ``PARAMS`` table the same for every image. Returns ``(fits_path, png_path, rows)``.

        Raises
        ------
        InputError : see :meth:`steer`; a ``z`` of the wrong width.
        """
        z0 = self.latent(seed, n) if z is None else np.atleast_2d(np.asarray(z, dtype=np.float64))
        if z0.shape[1] != self.generator.latent_dim:
            raise InputError(f"latent vectors must have {self.generator.latent_dim} entries, got {z0.shape[1]}")
        zm, recs = self.steer(z0, move, keep, refine=refine, native_side_px=native_side_px)
        cards, columns = move_records(recs)
        settings = {"seed": seed if z is None else "given z", "move": ",".join(move), "keep": keep, "refine": refine, **cards}
        return write_generated(self, zm, output, settings, native_side_px=native_side_px, columns=columns)

    def project(self, source: str | Path | np.ndarray, progress: bool = False) -> Projection:
        """A real magnetogram in the latent space (:func:`~helioforge.interrogate.project.project_image`).

        Parameters
        ----------
        source : a SHARP Br FITS path, or a native-resolution Br array in gauss (SHARP pixels of
            0.03°); preprocessed as the corpus (clip, scale, resize to N×N).
        progress : show a progress bar.

        Returns
        -------
        Projection : z, G(z), the errors and the yardsticks' errors; ``native_side_px`` is the
            patch's own scale (:func:`patch_side_px`), for physical units of edits of z.

        Raises
        ------
        FileNotFoundError, FitsReadError : an unreadable file. InputError : no finite field.
        """
        cdelt = SHARP_CDELT_DEG
        if isinstance(source, (str, Path)):
            patch = read_sharp(source, with_companions=False)
            Br, cdelt = patch.Br, patch.cdelt1_deg
        else:
            Br = np.asarray(source, np.float64)
        if np.ndim(Br) != 2:
            raise InputError(f"a magnetogram must be 2-D, got shape {np.shape(Br)}")
        if not np.isfinite(Br).any():
            raise InputError(f"{source if isinstance(source, (str, Path)) else 'the array'}: no finite pixel")
        img = preprocess_br(Br, self.profile.data.image_size, self.profile.data.clip_gauss)
        pr = project_image(self.generator, img, self.profile, progress=progress)
        pr.native_side_px = patch_side_px(Br.shape, cdelt)
        return pr

    def images_from_latent(self, z: np.ndarray) -> np.ndarray:
        """G(z): latent vectors (n, latent_dim) → images (n, 1, N, N) in [-1, 1].

        Parameters
        ----------
        z : np.ndarray, shape (n, latent_dim) or (latent_dim,)
            Latent vectors.

        Returns
        -------
        np.ndarray of float32, shape (n, 1, N, N)
            Images in units of ``profile.data.clip_gauss`` (1000 G in the paper).

        Raises
        ------
        ValueError
            If the last dimension of ``z`` is not ``latent_dim`` (:func:`~helioforge.interrogate.gan.generate`).
        """
        return generate(self.generator, np.atleast_2d(z))

    # --------------------------------------------------------------- search
    def search(self, query: str | Path | np.ndarray | Any, k: int = 5) -> list[list[Match]]:
        """Top-k real matches of a magnetogram, whatever form it comes in.

        Parameters
        ----------
        query : a FITS path (:meth:`search_fits`), a ``sunpy.map.Map`` or a 2-D array or
            ``Quantity`` of the native-resolution field in gauss (:meth:`search_array`).
            Latent vectors and preprocessed images have :meth:`search_latent` and
            :meth:`search_images`.
        k : number of matches per query.

        Returns
        -------
        list (one per query image) of lists of :class:`~helioforge.interrogate.retrieval.Match`,
        best first.

        Raises
        ------
        FileNotFoundError, FitsReadError, InputError, ValueError : an unreadable or unusable query.
        """
        if isinstance(query, (str, Path)):
            return self.search_fits(query, k)
        if _is_map(query):
            return self.search_array(_map_field(query), k)
        try:
            field = np.asarray(as_value(query, "G", "query"), dtype=np.float64)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        return self.search_array(field, k)

    def search_images(self, images: np.ndarray, k: int = 5) -> list[list[Match]]:
        """Top-k real matches for preprocessed images (n, 1, N, N) in [-1, 1].

        Parameters
        ----------
        images : np.ndarray, shape (n, 1, N, N) or (N, N)
            Preprocessed images (B / ``clip_gauss``), N = ``profile.data.image_size``.
        k : int
            Matches per image (clamped to the index size).

        Returns
        -------
        list of list of Match
            One list per image, best first.

        Raises
        ------
        ValueError
            If the images are not N×N, not (n, 1, N, N) (:func:`~helioforge.interrogate.simsiam.embed`)
            or their embeddings are not finite.
        """
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 2:
            images = images[None, None]
        n = self.profile.data.image_size
        if images.shape[-2:] != (n, n):
            raise ValueError(f"query images must be {n}×{n} (preprocessed); got {images.shape[-2:]}")
        return self.index.matches(embed(self.simsiam, images), k)

    def search_latent(self, z: np.ndarray, k: int = 5) -> list[list[Match]]:
        """Top-k real matches for the images generated from latent vectors z (n, latent_dim).

        Parameters
        ----------
        z : np.ndarray, shape (n, latent_dim) or (latent_dim,)
            Latent vectors.
        k : int
            Matches per image.

        Returns
        -------
        list of list of Match
            One list per latent vector, best first.

        Raises
        ------
        ValueError
            As :meth:`images_from_latent` and :meth:`search_images`.
        """
        return self.search_images(self.images_from_latent(z), k)

    def search_array(self, Br_gauss: np.ndarray, k: int = 5) -> list[list[Match]]:
        """Top-k real matches for a native-resolution Br map in Gauss (any 2-D shape).

        The map is clipped at ±``clip_gauss``, scaled and resized to N×N
        (:func:`~helioforge.data.preprocess.preprocess_br`; NaN pixels become 0 G).

        Parameters
        ----------
        Br_gauss : np.ndarray, shape (ny, nx)
            Radial (or line-of-sight) field [G].
        k : int
            Number of matches.

        Returns
        -------
        list of list of Match
            One list (the single query) of up to k matches, best first.

        Raises
        ------
        ValueError
            If ``Br_gauss`` is not 2-D or is empty.
        """
        img = preprocess_br(Br_gauss, self.profile.data.image_size, self.profile.data.clip_gauss)
        return self.search_images(img[None, None], k)

    def search_fits(self, path: str | Path, k: int = 5) -> list[list[Match]]:
        """Top-k real matches for a FITS file: a SHARP Br patch (Gauss) or a helioforge-generated
        image or cube (``HF_MODEL`` card; values already in units of the clip field).

        Raises
        ------
        FileNotFoundError, FitsReadError : an unreadable file. InputError : a generated image
            that is empty, all zero or not finite.
        """
        path = Path(path)
        try:
            with fits.open(path) as hdul:
                if "HF_MODEL" in hdul[0].header:  # one image (N, N) or a cube (n, N, N)
                    img = np.array(hdul[0].data, dtype=np.float32)
                    if img.ndim < 2 or not np.isfinite(img).all() or not np.abs(img).max() > 0:
                        raise InputError(f"{path}: generated image is empty, all zero or not finite; nothing to search for")
                    return self.search_images(img.reshape(-1, 1, *img.shape[-2:]), k)
        except OSError:
            pass
        return self.search_array(read_sharp(path, with_companions=False).Br, k)

