"""What the studio's web page asks for, as plain Python: the page and its HTTP layer
(:mod:`helioforge.studio.app`) only wrap :class:`StudioService`.

A view is described by a :class:`View`: a base latent vector (a seed, or a real magnetogram
projected into the latent space), physical changes along the SVM directions (ΔTUF, ΔR in Mx,
ΔPSEP in Mm, polarity in ε) and the directions held fixed. :meth:`StudioService.render` turns
it into the generated magnetogram (a PNG with a diverging colour map at ±clip_gauss), its
parameters, what each move achieved and the top-k real matches.

Uploads are parsed in memory (:func:`helioforge.data.sharp.read_sharp` with ``content``) and
kept, with their projections, in a bounded in-memory store under random tokens: nothing a
user sends is written to disk, and no request names a file; corpus patches are served by
their row number in the work folder's index only.
"""

from __future__ import annotations

import base64
import copy
import functools
import gzip
import io
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from PIL import Image

from helioforge.data.fits import FitsReadError, safe_get
from helioforge.data.sharp import read_sharp
from helioforge.errors import HelioforgeError, InputError
from helioforge.interrogate.calibrate import PHYSICAL_UNITS, ImageScale
from helioforge.interrogate.evaluate import image_params
from helioforge.data.preprocess import preprocess_br
from helioforge.interrogate.infer import (Interrogator, NotCalibrated, generated_fits, magnetogram_params, move_records,
                                          patch_side_px)
from helioforge.interrogate.project import project_image
from helioforge.interrogate.retrieval import Match

__all__ = ["StudioService", "View", "StudioError", "NotFound", "Busy", "magnetogram_png", "DIRECTION_NAMES"]

log = logging.getLogger(__name__)

#: The studio's directions, in slider order.
DIRECTION_NAMES = ("tuf", "psep", "r", "polarity")

_TOKEN = re.compile(r"^[0-9a-f]{16}$")
#: Header keys shown in a match's larger view (when its file is readable).
HEADER_KEYS = ("HARPNUM", "NOAA_AR", "NOAA_ARS", "T_REC", "CDELT1", "CRLN_OBS", "CRLT_OBS", "LAT_FWT", "LON_FWT",
               "USFLUX", "MEANGAM", "TOTUSJH", "R_VALUE", "AREA_ACR", "BUNIT", "TELESCOP", "INSTRUME", "T_OBS")


class StudioError(HelioforgeError):
    """A request the studio cannot serve (bad values, unknown token); HTTP 400/422."""


class NotFound(StudioError):
    """An unknown token or corpus row; HTTP 404."""


class Busy(StudioError):
    """A projection is already running; HTTP 429 (try again in a few seconds)."""


@dataclass
class View:
    """One state of the page.

    seed : seed of the base latent vector (ignored when ``start`` is given).
    start : token of a projected upload whose z is the base (``None``: the seed's z).
    moves : direction name → change: Mx for tuf and r, Mm for psep, ε for polarity (ε for
        every direction when the work folder has no calibration).
    hold : directions held fixed (conditioning).
    k : number of real matches (0: none).
    refine : correction rounds of the physical moves (:meth:`Interrogator.steer`).
    """

    seed: int = 0
    start: str | None = None
    moves: dict[str, float] = field(default_factory=dict)
    hold: list[str] = field(default_factory=list)
    k: int = 5
    refine: int = 3


def _colormap_lut() -> np.ndarray:
    """(256, 3) uint8 RGB of the diverging colour map (RdBu reversed: red positive, blue negative)."""
    cmap = matplotlib.colormaps["RdBu_r"]
    return (cmap(np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


_LUT = _colormap_lut()


def magnetogram_png(image: np.ndarray, upscale: int = 1) -> bytes:
    """PNG bytes of an (N, N) image in clip units ([-1, 1] ↦ the colour map; row 0 at the bottom,
    as ``origin='lower'``), each pixel repeated ``upscale`` times per side.

    Raises
    ------
    ValueError : not a 2-D array.
    """
    a = np.asarray(image, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"magnetogram_png needs a 2-D image, got shape {a.shape}")
    idx = np.clip(np.round((np.nan_to_num(a) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    rgb = _LUT[idx[::-1]]
    if upscale > 1:
        rgb = rgb.repeat(upscale, axis=0).repeat(upscale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe floats (NaN and inf → None)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, (float, np.floating)):
            v = float(v)
            out[k] = v if np.isfinite(v) else None
        elif isinstance(v, np.integer):
            out[k] = int(v)
        else:
            out[k] = v
    return out


class StudioService:
    """The studio's models and state for one work folder.

    Parameters
    ----------
    workdir : the interrogator work folder (``make demo`` fills ``runs/demo``).
    max_uploads : uploads (and their projections) kept in memory; the oldest go first.
    max_unpacked_bytes : largest gzip-compressed upload once unpacked (a bound on zip bombs).
    max_pixels : largest image an upload may declare (tile-compressed FITS can declare
        gigapixels in a few kB; SHARP patches are below 2 Mpx).

    Attributes
    ----------
    interrogator : the loaded :class:`~helioforge.interrogate.infer.Interrogator`, or ``None``
        when the folder has no finished models; ``problem`` then says why and ``command`` what
        makes them.
    """

    def __init__(self, workdir: str | Path, max_uploads: int = 32, max_unpacked_bytes: int = 40_000_000,
                 max_pixels: int = 4096 * 4096):
        self.workdir = Path(workdir)
        self.max_uploads = max_uploads
        self.max_unpacked_bytes = max_unpacked_bytes
        self.max_pixels = max_pixels
        self.lock = threading.Lock()  # one model call at a time: requests come from a thread pool
        # projections (seconds each) run one at a time on their own copy of the generator, so
        # that views keep answering meanwhile; a second projection is refused (Busy)
        self._project_lock = threading.Lock()
        self._project_generator = None
        self._store_lock = threading.Lock()  # the upload store is changed from several threads
        self._uploads: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.command = f"helioforge interrogate --profile cpu -w {self.workdir}   (or: make demo, for runs/demo)"
        self.interrogator: Interrogator | None = None
        self.problem: str | None = None
        try:
            self.interrogator = Interrogator.from_workspace(self.workdir)
        except (FileNotFoundError, ValueError, HelioforgeError) as exc:
            self.problem = str(exc)
            log.warning("studio: no models in %s: %s", self.workdir, exc)
        self._thumbs: dict[tuple[int, int], bytes] = {}
        self._details: dict[int, dict[str, Any]] = {}

    def warm_up(self) -> float:
        """Render one view so that the first slider move does not pay for the first model call
        (about 0.6 s on a 2-core CPU: compilation and allocation). Returns the seconds it took
        (0 without models)."""
        if self.interrogator is None:
            return 0.0
        t = time.perf_counter()
        self.render(View(seed=0, k=1))
        return time.perf_counter() - t

    # ----------------------------------------------------------------- status
    @property
    def ready(self) -> bool:
        """Whether the work folder's models are loaded."""
        return self.interrogator is not None

    def _require(self) -> Interrogator:
        if self.interrogator is None:
            raise StudioError(f"no trained models in {self.workdir}: {self.problem}. Make them with: {self.command}")
        return self.interrogator

    def _slider_unit(self, name: str) -> str | None:
        """A direction's slider unit: its physical unit when calibrated with a slope
        distinguishable from 0 (nothing held), else ``None`` (the slider moves ε)."""
        itg = self._require()
        unit = PHYSICAL_UNITS.get(name.upper()) if itg.calibration is not None else None
        if unit is None or itg.directions is None or not itg.directions.has(name):
            return None
        return unit if itg.calibration.get(name).significant else None

    def status(self) -> dict[str, Any]:
        """What the page needs to draw itself: readiness (with the message and the command when
        not ready), the image scale, and per direction its unit, calibration and slider range."""
        if self.interrogator is None:
            return {"ready": False, "workdir": str(self.workdir), "message": f"No trained models in {self.workdir}.",
                    "problem": self.problem, "command": self.command}
        itg = self.interrogator
        scale = ImageScale.of(itg.profile)
        cal = itg.calibration
        dirs = []
        for name in DIRECTION_NAMES:
            fitted = itg.directions is not None and itg.directions.has(name)
            key = name.upper() if name != "polarity" else "polarity"
            unit = self._slider_unit(name)
            d: dict[str, Any] = {"name": name, "label": key, "fitted": bool(fitted), "unit": unit or "ε"}
            if unit is not None:
                fit = cal.get(key)
                d.update(per_eps=fit.slope, r2=fit.r2, eps_valid=fit.eps_valid, max=fit.valid_change,
                         step=fit.valid_change / 50)
            else:
                eps_max = itg.profile.calibration.eps_max
                d.update(per_eps=None, r2=None, eps_valid=eps_max, max=eps_max, step=eps_max / 50)
            dirs.append(_clean(d))
        return {"ready": True, "workdir": str(self.workdir), "profile": itg.profile.name,
                "image_size": itg.profile.data.image_size, "clip_gauss": itg.profile.data.clip_gauss,
                "pixel_mm": scale.pixel_mm, "scale": scale.describe(), "calibrated": cal is not None,
                "calibration_problem": None if cal is not None else itg.calibration_problem,
                "directions": dirs, "corpus_size": len(itg.index) if itg.index is not None else 0,
                "latent_dim": itg.generator.latent_dim}

    # ----------------------------------------------------------------- views
    def _holds(self, view: View) -> list[str]:
        holds = list(dict.fromkeys(str(h).lower() for h in view.hold))
        bad = [h for h in holds if h not in DIRECTION_NAMES]
        if bad:
            raise StudioError(f"unknown direction(s) to hold: {', '.join(map(repr, bad))}; have {', '.join(DIRECTION_NAMES)}")
        return holds

    def _moves(self, view: View) -> list[str]:
        holds = self._holds(view)
        out = []
        for name, value in view.moves.items():
            name = str(name).lower()
            if name not in DIRECTION_NAMES:
                raise StudioError(f"unknown direction {name!r}; have {', '.join(DIRECTION_NAMES)}")
            v = float(value)
            if not np.isfinite(v):
                raise StudioError(f"the change of {name} must be a finite number")
            if v == 0.0 or name in holds:
                continue
            unit = self._slider_unit(name)
            out.append(f"{name}={v!r}{unit or ''}")
        return out

    def _base(self, view: View) -> tuple[np.ndarray, float | None]:
        """The base z (1, latent_dim) and the native side of the patch it stands for (``None``:
        the profile's scale; a projected upload: the upload's own)."""
        itg = self._require()
        if view.start:
            rec = self._upload(view.start)
            if "z" not in rec:
                raise StudioError("this upload has not been projected yet (press “project” first)")
            return rec["z"][None], rec["native_side_px"]
        seed = int(view.seed)
        if not 0 <= seed < 2**32:
            raise StudioError(f"seed must be in [0, 2^32), got {seed}")
        return itg.latent(seed), None

    def _steer(self, view: View) -> tuple[np.ndarray, list[dict[str, Any]], float | None]:
        itg = self._require()
        z, side = self._base(view)
        try:
            zm, recs = itg.steer(z, self._moves(view), keep=self._holds(view), refine=max(0, min(int(view.refine), 5)),
                                 native_side_px=side)
        except NotCalibrated as exc:  # the slider is in units, but not with these holds: say what to do on the page
            f, nm = exc.fit, exc.fit.name
            raise StudioError(f"Δ{nm} cannot be asked for in {f.unit} while {f.keep} is held: along that direction {nm} "
                              f"changes by {f.slope:.3g} {f.unit} per ε, an amount not distinguishable from 0 (95 % "
                              f"interval {f.slope_ci[0]:.3g} to {f.slope_ci[1]:.3g}). Release {f.keep} or reset Δ{nm}.") from None
        except InputError as exc:
            raise StudioError(str(exc)) from None
        return zm, recs, side

    def render(self, view: View) -> dict[str, Any]:
        """The generated magnetogram of ``view``, its parameters, the moves and the matches.

        Returns
        -------
        dict : ``image`` (PNG data URL, N×N), ``params`` (paper units and ``TUF_Mx``, ``TPF_Mx``,
            ``TNF_Mx``, ``R_Mx``, ``PSEP_Mm``), ``moves`` (per move: requested, unit, ε,
            achieved, outside the calibrated range), ``matches`` (:meth:`match_record` each),
            ``timing_ms``.

        Raises
        ------
        StudioError : no models, bad values, an unknown or unprojected start token.
        """
        itg = self._require()
        t0 = time.perf_counter()
        with self.lock:
            z, recs, side = self._steer(view)
            img = itg.images_from_latent(z)
            t1 = time.perf_counter()
            scale = ImageScale.of(itg.profile, side)
            p = scale.measure(img, itg.profile)
            matches = itg.search_images(img, int(view.k))[0] if view.k > 0 else []
        t2 = time.perf_counter()
        params = {k: float(v[0]) for k, v in p.items()}
        moves = [_clean({"name": r["name"], "unit": r["unit"] or "ε", "requested": r["requested"], "eps": float(r["eps"][0]),
                         "achieved": None if r.get("achieved") is None else float(r["achieved"][0]),
                         "achieved_unit": r["unit"] or r.get("unit_achieved"),
                         "outside_valid": bool(r["outside_valid"][0])}) for r in recs]
        return {"image": _data_url(magnetogram_png(img[0, 0])), "params": _clean(params), "moves": moves,
                "pixel_mm": scale.pixel_mm, "scale": scale.describe(),
                "matches": [self.match_record(m) for m in matches],
                "timing_ms": {"generate": round(1e3 * (t1 - t0), 1), "params_and_search": round(1e3 * (t2 - t1), 1)}}

    def fits_bytes(self, view: View) -> bytes:
        """The view's image as a FITS file (the layout of ``helioforge generate``: CEA WCS,
        parameters in Mx / Mm, requested and achieved moves, provenance).

        Parameters
        ----------
        view : the view.

        Returns
        -------
        bytes : the FITS file.

        Raises
        ------
        StudioError : as :meth:`render`.
        """
        itg = self._require()
        with self.lock:
            z, recs, side = self._steer(view)
            settings: dict[str, Any] = {"seed": view.seed if not view.start else "projected upload",
                                        "keep": ",".join(view.hold), "studio": "helioforge studio", **move_records(recs)[0]}
            if view.start:
                settings["projected_from"] = self._upload(view.start)["name"]
            hdul, _, _ = generated_fits(itg, z, settings, native_side_px=side)
        buf = io.BytesIO()
        hdul.writeto(buf)
        return buf.getvalue()

    def png_bytes(self, view: View) -> bytes:
        """The view's image as a figure PNG: the magnetogram in G with a ±clip_gauss colour bar,
        axes in Mm and the parameters in the title.

        Parameters
        ----------
        view : the view.

        Returns
        -------
        bytes : the PNG file.

        Raises
        ------
        StudioError : as :meth:`render`.
        """
        from matplotlib.figure import Figure  # no pyplot: this runs in pool threads

        itg = self._require()
        with self.lock:
            z, _, side = self._steer(view)
            img = itg.images_from_latent(z)[0, 0]
        scale = ImageScale.of(itg.profile, side)
        clip = itg.profile.data.clip_gauss
        p = scale.measure(img[None, None], itg.profile)
        width_mm = scale.pixel_mm * img.shape[0]
        fig = Figure(figsize=(5.2, 4.4))
        ax = fig.add_subplot()
        im = ax.imshow(img * clip, cmap="RdBu_r", vmin=-clip, vmax=clip, origin="lower", extent=(0, width_mm, 0, width_mm))
        ax.set_xlabel("x (Mm)")
        ax.set_ylabel("y (Mm)")
        ax.set_title(f"TUF {p['TUF_Mx'][0]:.3g} Mx  R {p['R_Mx'][0]:.3g} Mx  PSEP {p['PSEP_Mm'][0]:.3g} Mm", fontsize=9)
        fig.colorbar(im, ax=ax, label="Br (G)")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        return buf.getvalue()

    # ----------------------------------------------------------------- the real corpus
    def match_record(self, m: Match) -> dict[str, Any]:
        """A match as the page shows it.

        Parameters
        ----------
        m : a match of the index.

        Returns
        -------
        dict : row (its id), rank, cosine score, HARP, NOAA AR, T_REC, source, the patch's
            parameters (paper units), its header USFLUX (Mx) and the thumbnail's URL.
        """
        itg = self._require()
        row = itg.index.table[m.row]
        p = {k: v[m.row:m.row + 1] for k, v in self._corpus_params.items()}
        noaa = int(row["NOAA_AR"]) if "NOAA_AR" in row.colnames else -1
        usflux = float(row["USFLUX"]) if "USFLUX" in row.colnames else float("nan")
        return _clean({"row": int(m.row), "rank": m.rank, "score": m.score, "HARPNUM": m.HARPNUM,
                       "NOAA_AR": noaa if noaa > 0 else None, "T_REC": m.T_REC,
                       "source": str(row["source"]) if "source" in row.colnames else "",
                       "TUF": float(p["TUF"][0]), "PSEP": float(p["PSEP"][0]), "R": float(p["R"][0]),
                       "USFLUX": usflux, "thumb": f"/api/corpus/{int(m.row)}/image.png"})

    @functools.cached_property
    def _corpus_params(self) -> dict[str, np.ndarray]:
        """Parameters (paper units) of every corpus patch, computed once (not per match and move)."""
        itg = self._require()
        return image_params(itg.corpus.images, itg.profile)

    def _row(self, row: int) -> int:
        itg = self._require()
        n = len(itg.corpus.images)
        if not 0 <= int(row) < n:
            raise NotFound(f"no corpus patch {row}: the index holds rows 0 to {n - 1}")
        return int(row)

    def corpus_png(self, row: int, upscale: int = 1) -> bytes:
        """PNG of a corpus patch (the preprocessed N×N image, as indexed).

        Parameters
        ----------
        row : its row in the index. upscale : pixel repetition per side.

        Returns
        -------
        bytes : the PNG.

        Raises
        ------
        NotFound : no such row.
        """
        row = self._row(row)
        key = (row, upscale)
        if key not in self._thumbs:
            self._thumbs[key] = magnetogram_png(self.interrogator.corpus.images[row, 0], upscale)
        return self._thumbs[key]

    def corpus_detail(self, row: int) -> dict[str, Any]:
        """A corpus patch's table row and, when its file is found in the profile's data folders,
        the header keys of :data:`HEADER_KEYS`. The file is located from the index's own table,
        never from the request.

        Parameters
        ----------
        row : its row in the index.

        Returns
        -------
        dict : ``row``, ``table``, ``header`` and the URL of the larger ``image``.

        Raises
        ------
        NotFound : no such row.
        """
        itg = self._require()
        row = self._row(row)
        if row in self._details:
            return self._details[row]
        t = itg.corpus.table[row]
        rec = {c: (t[c].item() if hasattr(t[c], "item") else t[c]) for c in t.colnames}
        header: dict[str, Any] = {}
        name = str(rec.get("file", ""))
        folders = [*itg.profile.data.sharp_paths(), itg.profile.data.fulldisk_path()]
        path = next((f / name for f in folders if name and (f / name).is_file()), None)
        if path is not None:
            try:
                from helioforge.data.fits import read_image_hdu

                _, hdr, _ = read_image_hdu(path)
                header = {k: safe_get(hdr, k) for k in HEADER_KEYS if k in hdr}
            except FitsReadError as exc:
                header = {"problem": exc.problem}
            except OSError as exc:
                header = {"problem": type(exc).__name__}
        out = {"row": row, "table": _clean(rec), "header": _clean(header), "image": f"/api/corpus/{row}/image.png?size=large"}
        self._details[row] = out
        return out

    # ----------------------------------------------------------------- uploads
    def _upload(self, token: str) -> dict[str, Any]:
        if not isinstance(token, str) or not _TOKEN.match(token):
            raise NotFound("unknown or expired upload (upload the file again)")
        with self._store_lock:
            if token not in self._uploads:
                raise NotFound("unknown or expired upload (upload the file again)")
            self._uploads.move_to_end(token)
            return self._uploads[token]

    def upload(self, content: bytes, name: str = "upload.fits", k: int = 5) -> dict[str, Any]:
        """Read an uploaded SHARP Br FITS in memory; its parameters and top-k matches.

        Returns
        -------
        dict : ``token`` (for :meth:`project` and views), ``name``, ``image`` (PNG data URL of the
            preprocessed patch), ``params`` (physical, over |Br| > threshold) and ``matches``.

        Raises
        ------
        StudioError : not a FITS file, not a 2-D field in gauss, no finite pixel, too small ...
            (the reader's message, naming the upload).
        """
        itg = self._require()
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(str(name)).name)[:120] or "upload.fits"
        if content[:2] == b"\x1f\x8b":  # .fits.gz, as JSOC serves SHARP files: unpack, bounded
            with gzip.GzipFile(fileobj=io.BytesIO(content)) as gz:
                try:
                    content = gz.read(self.max_unpacked_bytes + 1)
                except (OSError, EOFError) as exc:
                    raise StudioError(f"{safe}: not a readable gzip file ({exc})") from None
            if len(content) > self.max_unpacked_bytes:
                raise StudioError(f"{safe}: unpacks to more than {self.max_unpacked_bytes / 1e6:.0f} MB")
        try:
            patch = read_sharp(Path(safe), with_companions=False, content=content, max_pixels=self.max_pixels)
            phys = magnetogram_params(patch.Br, units="physical", pixel_size=patch.pixel_size_mm,
                                      threshold=itg.profile.params.threshold_gauss)
        except (FitsReadError, InputError, ValueError, ArithmeticError) as exc:
            raise StudioError(str(exc)) from None
        img = preprocess_br(patch.Br, itg.profile.data.image_size, itg.profile.data.clip_gauss)
        with self.lock:
            matches = itg.search_images(img[None, None], int(k))[0] if k > 0 else []
        token = secrets.token_hex(8)
        side = patch_side_px(patch.Br.shape, patch.cdelt1_deg)
        with self._store_lock:  # only the N×N image is kept, not the field
            self._uploads[token] = {"name": safe, "image": img, "native_side_px": side, "harpnum": patch.harpnum,
                                    "t_rec": patch.t_rec}
            while len(self._uploads) > self.max_uploads:
                self._uploads.popitem(last=False)
        params = {k_: phys[k_] for k_ in ("TUF", "TPF", "TNF", "PSEP", "R", "tilt", "leading_sign", "USFLUX", "R_schrijver")}
        return {"token": token, "name": safe, "HARPNUM": patch.harpnum, "T_REC": patch.t_rec,
                "image": _data_url(magnetogram_png(img)), "params": _clean(params),
                "matches": [self.match_record(m) for m in matches]}

    def project(self, token: str) -> dict[str, Any]:
        """Project an upload into the latent space; its z becomes a base for views (``start``).

        Returns
        -------
        dict : ``start`` (the token), ``errors`` of the fit and of the yardsticks, ``seconds``.
        """
        itg = self._require()
        rec = self._upload(token)
        t = time.perf_counter()
        if "projection" not in rec:
            if not self._project_lock.acquire(blocking=False):
                raise Busy("a projection is running (about 15 s on a 2-core CPU); try again when it is done")
            try:
                if self._project_generator is None:
                    self._project_generator = copy.deepcopy(itg.generator)
                pr = project_image(self._project_generator, rec["image"], itg.profile)
            finally:
                self._project_lock.release()
            rec["projection"] = {"errors": _clean(pr.errors), "random_start": _clean(pr.random_start),
                                 "zero_image": _clean(pr.zero_image), "image": _data_url(magnetogram_png(pr.image))}
            rec["z"] = pr.z
        self._upload(token)  # still there (not evicted while projecting)
        scale = ImageScale.of(itg.profile, rec["native_side_px"])
        return {"start": token, "name": rec["name"], **rec["projection"], "seconds": round(time.perf_counter() - t, 2),
                "scale": scale.describe()}
