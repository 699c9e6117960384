"""Reader and writer for SIR model atmospheres (``*.mod``).

Format (SIR, Ruiz Cobo & del Toro Iniesta 1992, ApJ 398, 375; SIR user manual):

* line 1: three numbers ``vmac fill stray``: macroturbulent velocity [km s⁻¹], filling
  factor, stray-light fraction [%];
* then one row per depth point, whitespace-separated, **deepest first** (log τ₅₀₀ strictly
  decreasing downwards in the file)::

      log_tau  T[K]  Pe[dyn cm⁻²]  vmic[cm s⁻¹]  B[G]  vlos[cm s⁻¹]  gamma[deg]  phi[deg]
      z[km]  Pg[dyn cm⁻²]  rho[g cm⁻³]

  (one line per depth point in the file)

  ``vlos`` is positive for a redshift (motion away from the observer), ``gamma`` is the
  inclination of B to the line of sight and ``phi`` its azimuth.

Older SIR models have only the first 8 columns. For those, ``z``, ``Pg`` and ``rho`` are set
to **NaN** (not zeros, which would be valid-looking numbers): :attr:`SIRModel.has_geometry`
is then ``False`` and :func:`write_sir` writes 8 columns again. A mixture of 8- and 11-column
rows in one file is an error.

:func:`write_sir` uses SIR's own fixed-column layout (as in ``hsra11.mod``)::

    %8.4f %8.1f %12.5E %10.3E %11.4E %11.4E %11.4E %11.4E %11.4E %11.4E %11.4E

so a file printed with at most that many digits (every model of the SIR/Hazel distribution
in ``data_root()/stokes/atmospheres``) is read back to exactly the same float64 values. The
header is written with Python's shortest round-trip float representation.

Every problem is a :class:`SIRReadError` (a :class:`~helioforge.data.fits.FitsReadError`,
hence a ``ValueError``) whose message names the file, the line and the problem;
:func:`read_sir_folder` turns them into :class:`~helioforge.data.fits.Skipped` entries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from helioforge.config import data_root
from helioforge.data.fits import FitsReadError, Skipped
from helioforge.errors import InputError
from helioforge.io import atomic_path

__all__ = [
    "SIRReadError",
    "SIRPlausibilityError",
    "PLAUSIBLE_RANGES",
    "plausibility_problem",
    "SIRModel",
    "read_sir",
    "write_sir",
    "read_sir_folder",
    "model_path",
    "atmospheres_dir",
    "MODEL_ALIASES",
    "COLUMNS",
]

logger = logging.getLogger(__name__)

#: Column names of a SIR model row, in file order (the last three are optional).
COLUMNS = ("log_tau", "T", "Pe", "vmic", "B", "vlos", "inclination", "azimuth", "z", "Pg", "rho")

#: Required (first 8) columns.
_REQUIRED = COLUMNS[:8]
#: Optional geometric/thermodynamic columns (11-column files).
_GEOMETRY = COLUMNS[8:]

#: Fixed-column row layout written by SIR (Fortran ``f8.4,f9.1,1pe13.5,...``).
_ROW_FORMATS = ("%8.4f", "%8.1f", "%12.5E", "%10.3E") + ("%11.4E",) * 7

#: Friendly names → model file stems in ``stokes/atmospheres``.
MODEL_ALIASES = {
    "quiet": "hsra11",  # Harvard-Smithsonian Reference Atmosphere (Gingerich et al. 1971)
    "hsra": "hsra11",
    "falc": "FALC11",  # Fontenla, Avrett & Loeser (1993) model C, average quiet Sun
    "umbra": "emaltby11",  # Maltby et al. (1986) umbral core model E
    "umbra_m": "mmaltby11",  # Maltby et al. (1986) umbral core model M (cooler)
    "penumbra": "penumjti11",  # del Toro Iniesta, Tarbell & Ruiz Cobo (1994) penumbra
    "plage": "solanpl11",  # Solanki (1986) plage flux-tube model
    "network": "solannt11",  # Solanki (1986) network flux-tube model
}


class SIRReadError(FitsReadError):
    """A SIR model file (or model) that cannot be used; ``str(err)`` is ``"<path>: <problem>"``.

    Subclass of :class:`helioforge.data.fits.FitsReadError` (so of ``ValueError``) so batch
    readers catch it with the other file errors. Attributes ``path`` and ``problem``.
    """


class SIRPlausibilityError(SIRReadError, InputError):
    """A SIR model whose values cannot be those of a solar atmosphere (e.g. T = 1e30 K).

    Both a :class:`SIRReadError` (batch readers skip it like any bad file) and an
    :class:`~helioforge.errors.InputError`; ``str(err)`` is ``"<path>: line N: <problem>"``.
    """


#: Plausible ranges of the SIR columns, (low, high, unit, what it is checked against): every
#: model of the SIR/Hazel distribution lies well inside (T 2,800–92,000 K, |B| ≤ 3.7 kG,
#: |v_LOS| ≤ 25 km/s, v_mic ≤ 25 km/s, P_e ≤ 1.1·10⁴, P_g ≤ 10⁶ dyn cm⁻²).
PLAUSIBLE_RANGES = {
    "T": (1.0e3, 1.0e5, "K"),
    "B": (-1.0e4, 1.0e4, "G"),
    "vlos": (-1.0e7, 1.0e7, "cm/s"),
    "vmic": (0.0, 1.0e7, "cm/s"),
    "Pe": (0.0, 1.0e8, "dyn/cm2"),
    "Pg": (0.0, 1.0e10, "dyn/cm2"),
}


def plausibility_problem(model: "SIRModel") -> tuple[int, str] | None:
    """First value of ``model`` outside :data:`PLAUSIBLE_RANGES`.

    Non-finite values are skipped (an absent column, such as a NaN Pg, is never flagged).

    Parameters
    ----------
    model : SIRModel
        The model atmosphere read.

    Returns
    -------
    tuple or None
        ``(row index, problem)`` (row 0 = deepest) with the problem in words; ``None`` when all
        values are plausible.
    """
    for col, (lo, hi, unit) in PLAUSIBLE_RANGES.items():
        v = getattr(model, col)
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(np.isfinite(v) & ((v < lo) | (v > hi)))
        if bad.size:
            i = int(bad[0])
            return i, (f"{col} = {v[i]:.6g} {unit} is outside the plausible range {lo:,.6g} to {hi:,.6g} {unit} "
                       "of a solar atmosphere")
    return None


@dataclass(eq=False)
class SIRModel:
    """One depth-stratified SIR model atmosphere (Ruiz Cobo & del Toro Iniesta 1992).

    All arrays are float64, shape (n,), ordered as in the file: index 0 is the deepest point
    (largest log τ), log τ strictly decreasing with index.

    Attributes
    ----------
    log_tau : log10 of the continuum optical depth at 500 nm.
    T : temperature, K (> 0).
    Pe : electron pressure, dyn cm⁻² (> 0).
    vmic : microturbulent velocity, cm s⁻¹.
    B : magnetic field strength, G.
    vlos : line-of-sight velocity, cm s⁻¹, positive = redshift (away from the observer).
    inclination : inclination of B to the line of sight (γ), deg.
    azimuth : azimuth of B (φ), deg.
    z : geometric height, km (NaN when the file has 8 columns).
    Pg : gas pressure, dyn cm⁻² (NaN when absent).
    rho : mass density, g cm⁻³ (NaN when absent).
    vmac : macroturbulent velocity, km s⁻¹ (header).
    fill : filling factor (header).
    stray : stray-light fraction, % (header).
    name : model name (file stem when read from a file).
    source_path : the file read, or ``None``.

    Equality is identity (``eq=False``: arrays have no single truth value); compare
    :meth:`as_array` instead.

    Raises
    ------
    ValueError : from ``__post_init__`` (via :meth:`validate`) on unequal lengths, fewer than
        2 points, non-finite values, T ≤ 0, Pe ≤ 0, log τ not strictly decreasing, or z/Pg/rho
        partly NaN.
    """

    log_tau: np.ndarray
    T: np.ndarray
    Pe: np.ndarray
    vmic: np.ndarray
    B: np.ndarray
    vlos: np.ndarray
    inclination: np.ndarray
    azimuth: np.ndarray
    z: np.ndarray | None = None
    Pg: np.ndarray | None = None
    rho: np.ndarray | None = None
    vmac: float = 0.0
    fill: float = 1.0
    stray: float = 0.0
    name: str = ""
    source_path: Path | None = None

    def __post_init__(self) -> None:
        n = np.asarray(self.log_tau).shape[0] if np.ndim(self.log_tau) == 1 else -1
        for col in COLUMNS:
            val = getattr(self, col)
            if val is None and col in _GEOMETRY:
                val = np.full(max(n, 0), np.nan)
            setattr(self, col, np.array(val, dtype=np.float64))
        self.vmac = float(self.vmac)
        self.fill = float(self.fill)
        self.stray = float(self.stray)
        if self.source_path is not None:
            self.source_path = Path(self.source_path)
        self.validate()

    # ------------------------------------------------------------------ checks
    def first_problem(self) -> tuple[int | None, str] | None:
        """First inconsistency found, as ``(row index or None, problem)``; ``None`` if valid."""
        for col in COLUMNS:
            if getattr(self, col).ndim != 1:
                return None, f"column {col} must be 1-D, got shape {getattr(self, col).shape}"
        n = self.log_tau.shape[0]
        for col in COLUMNS:
            if getattr(self, col).shape[0] != n:
                return None, f"column {col} has {getattr(self, col).shape[0]} points, log_tau has {n}"
        if n < 2:
            return None, f"a model needs at least 2 depth points, got {n}"
        for name in ("vmac", "fill", "stray"):
            if not np.isfinite(getattr(self, name)):
                return None, f"header value {name} is not finite"
        for col in _REQUIRED:
            bad = np.flatnonzero(~np.isfinite(getattr(self, col)))
            if bad.size:
                return int(bad[0]), f"{col} is not finite ({getattr(self, col)[bad[0]]})"
        present = [np.isfinite(getattr(self, c)) for c in _GEOMETRY]
        allnan = all((~p).all() for p in present)
        if not allnan:
            for col, p in zip(_GEOMETRY, present):
                if not p.all():
                    i = int(np.flatnonzero(~p)[0])
                    return i, f"{col} is not finite ({getattr(self, col)[i]}) while other rows have it"
        for col in ("T", "Pe"):
            bad = np.flatnonzero(getattr(self, col) <= 0)
            if bad.size:
                return int(bad[0]), f"{col} must be > 0, got {getattr(self, col)[bad[0]]:g}"
        bad = np.flatnonzero(np.diff(self.log_tau) >= 0)
        if bad.size:
            i = int(bad[0]) + 1
            return i, (
                f"log_tau must decrease strictly from the first (deepest) row: "
                f"{self.log_tau[i]:g} follows {self.log_tau[i - 1]:g}"
            )
        return None

    def validate(self) -> None:
        """Check the model; raise ``ValueError`` naming the row and problem (see class doc)."""
        found = self.first_problem()
        if found is not None:
            row, problem = found
            where = f"row {row} (0 = deepest): " if row is not None else ""
            label = f"SIR model {self.name!r}: " if self.name else "SIR model: "
            raise ValueError(label + where + problem)

    # ------------------------------------------------------------------ helpers
    @property
    def n_depth(self) -> int:
        """Number of depth points n."""
        return int(self.log_tau.shape[0])

    @property
    def has_geometry(self) -> bool:
        """``True`` when z, Pg and rho are present (an 11-column model)."""
        return bool(np.isfinite(self.z).all())

    def as_array(self) -> np.ndarray:
        """The rows as a float64 array (n, 11) in :data:`COLUMNS` order (NaN where absent)."""
        return np.stack([getattr(self, c) for c in COLUMNS], axis=1)


def _parse_float(token: str) -> float:
    # Fortran D exponents (1.0D+03) appear in some SIR files.
    return float(token.replace("D", "E").replace("d", "e"))


def read_sir(path: str | Path) -> SIRModel:
    """Read a SIR model atmosphere file (``.mod``).

    Parameters
    ----------
    path : the file.

    Returns
    -------
    SIRModel with ``name`` = file stem and ``source_path`` = ``path``; arrays (n,) in file
    order (deepest first). 8-column files give NaN z/Pg/rho.

    Raises
    ------
    FileNotFoundError : the file does not exist.
    SIRReadError : empty file, a header without 3 numbers, a row that is not 8 or 11 numbers
        (or differs from the first row's count), a non-numeric token, or an invalid model
        (non-finite, T ≤ 0, Pe ≤ 0, log τ not strictly decreasing); the message names the
        file and the line number (1-based).
    SIRPlausibilityError : (a SIRReadError and an InputError) a value outside
        :data:`PLAUSIBLE_RANGES`, e.g. T outside 1,000–100,000 K; names the file, the line
        and the quantity.

    Source: SIR user manual (Ruiz Cobo & del Toro Iniesta 1992).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: SIR model file not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SIRReadError(path, f"cannot read as text: {exc}") from exc
    lines = [(i + 1, ln) for i, ln in enumerate(text.splitlines()) if ln.strip()]
    if not lines:
        raise SIRReadError(path, "empty file (expected a 'vmac fill stray' header and model rows)")
    head_no, head = lines[0]
    toks = head.split()
    if len(toks) != 3:
        raise SIRReadError(path, f"line {head_no}: header must hold 3 numbers 'vmac fill stray', got {len(toks)}")
    try:
        vmac, fill, stray = (_parse_float(t) for t in toks)
    except ValueError as exc:
        raise SIRReadError(path, f"line {head_no}: non-numeric header value ({exc})") from None
    rows: list[list[float]] = []
    line_nos: list[int] = []
    ncol = None
    for no, ln in lines[1:]:
        toks = ln.split()
        if len(toks) not in (8, 11):
            raise SIRReadError(path, f"line {no}: expected 8 or 11 columns ({' '.join(COLUMNS)}), got {len(toks)}")
        if ncol is None:
            ncol = len(toks)
        elif len(toks) != ncol:
            raise SIRReadError(path, f"line {no}: {len(toks)} columns where the first row has {ncol}")
        try:
            rows.append([_parse_float(t) for t in toks])
        except ValueError as exc:
            raise SIRReadError(path, f"line {no}: non-numeric value ({exc})") from None
        line_nos.append(no)
    if len(rows) < 2:
        raise SIRReadError(path, f"only {len(rows)} model row(s); a model needs at least 2")
    data = np.asarray(rows, dtype=np.float64)
    cols = {c: data[:, k] for k, c in enumerate(COLUMNS[: data.shape[1]])}
    try:
        model = SIRModel(**cols, vmac=vmac, fill=fill, stray=stray, name=path.stem, source_path=path)
    except ValueError:
        # Re-run the checks without raising to get the row → line number mapping.
        probe = object.__new__(SIRModel)
        for c in COLUMNS:
            setattr(probe, c, cols.get(c, np.full(data.shape[0], np.nan)))
        probe.vmac, probe.fill, probe.stray = vmac, fill, stray
        found = probe.first_problem() or (None, "invalid model")
        row, problem = found
        where = f"line {line_nos[row]}: " if row is not None else ""
        raise SIRReadError(path, where + problem) from None
    implausible = plausibility_problem(model)
    if implausible is not None:
        row, problem = implausible
        raise SIRPlausibilityError(path, f"line {line_nos[row]}: {problem}")
    return model


def _format_header(model: SIRModel) -> str:
    return "  " + "  ".join(repr(float(v)) for v in (model.vmac, model.fill, model.stray))


def write_sir(path: str | Path, model: SIRModel) -> Path:
    """Write ``model`` as a SIR ``.mod`` file, atomically (temporary name, then rename).

    Layout: header ``vmac fill stray`` then one row per depth point in SIR's fixed columns
    (see the module docstring); 11 columns when :attr:`SIRModel.has_geometry`, else 8.

    Parameters
    ----------
    path : destination file (parent folders are created).
    model : the model (validated again before writing).

    Returns
    -------
    The destination path.

    Raises
    ------
    ValueError : the model is invalid (see :meth:`SIRModel.validate`).
    """
    model.validate()
    ncol = 11 if model.has_geometry else 8
    fmt = " ".join(_ROW_FORMATS[:ncol])
    arr = model.as_array()[:, :ncol]
    body = "\n".join(fmt % tuple(row) for row in arr)
    with atomic_path(path) as tmp:
        tmp.write_text(_format_header(model) + "\n" + body + "\n")
    return Path(path)


def read_sir_folder(folder: str | Path, pattern: str = "*.mod") -> tuple[list[SIRModel], list[Skipped]]:
    """Read every SIR model matching ``pattern`` in ``folder`` (sorted by name), skipping bad ones.

    Returns
    -------
    ``(models, skipped)``: each unreadable file becomes ``Skipped(path, problem)`` and a
    logger warning; reading goes on.

    Raises
    ------
    FileNotFoundError : ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: SIR model folder not found")
    models: list[SIRModel] = []
    skipped: list[Skipped] = []
    for f in sorted(folder.glob(pattern)):
        try:
            models.append(read_sir(f))
        except SIRReadError as exc:
            logger.warning("skipping %s", exc)
            skipped.append(Skipped(f, exc.problem))
    return models, skipped


def atmospheres_dir(root: str | Path | None = None) -> Path:
    """Folder of the SIR model atmospheres.

    Parameters
    ----------
    root : str or Path, optional
        Data root; default :func:`data_root`.

    Returns
    -------
    Path
        ``<root>/stokes/atmospheres`` (not checked to exist).
    """
    return Path(root if root is not None else data_root()) / "stokes" / "atmospheres"


def model_path(name: str, root: str | Path | None = None) -> Path:
    """Resolve a model name to its ``.mod`` file in :func:`atmospheres_dir`.

    ``name`` is a file stem such as ``"hsra11"``, ``"FALC11"``, ``"emaltby11"`` (Maltby et al.
    1986 umbra E), ``"mmaltby11"`` (umbra M), ``"penumjti11"`` (penumbra), ``"solanpl11"``
    (plage), with or without ``.mod``, matched case-insensitively, or an alias from
    :data:`MODEL_ALIASES` (``"umbra"``, ``"penumbra"``, ``"plage"``, ...). An existing path is
    returned as is.

    Raises
    ------
    FileNotFoundError : no such model; the message lists the available names.
    """
    p = Path(name)
    if p.suffix == ".mod" and p.is_file():
        return p
    folder = atmospheres_dir(root)
    stem = name[:-4] if name.lower().endswith(".mod") else name
    stem = MODEL_ALIASES.get(stem.lower(), stem)
    if folder.is_dir():
        available = {f.stem.lower(): f for f in folder.glob("*.mod")}
        if stem.lower() in available:
            return available[stem.lower()]
        names = ", ".join(sorted(f.stem for f in available.values()))
        raise FileNotFoundError(
            f"{folder}: no SIR model named {name!r}; available: {names}; aliases: {', '.join(MODEL_ALIASES)}"
        )
    raise FileNotFoundError(f"{folder}: SIR atmospheres folder not found (looking for {name!r})")
