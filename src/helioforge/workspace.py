"""The work-folder protocol shared by the three systems: which step's product is current.

A product is **current** only when

1. its step finished (the step is marked in ``state.json`` after the product is written, and
   un-marked before a rebuild starts, so an interrupted rebuild is never taken for a product);
2. it was made with the digest asked for now: settings, the *content* of the input files
   (:func:`content_digest`, not paths or modification times, so copying the data again does not
   force a retrain) and the upstream products (:meth:`StepState.token`);
3. its files are still the ones that were written (their SHA-256 is recorded at the mark and
   checked on load, so a file truncated, replaced or half-rewritten since is refused).

Making goes through :meth:`StepState.run_step`, the one way any stage of the three systems
reuses, resumes or rebuilds a product: reuse when current; otherwise un-mark, build (resuming a
checkpoint only when it was made with the same settings up to the length of training), record
the time, mark. Loading goes through :meth:`StepState.require`, which raises :class:`~helioforge.errors.ProductError`
with the command that rebuilds the product. Writing commands hold the folder's lock
(:meth:`StepState.lock`); read-only commands open a folder with ``create=False`` and never
create or change it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from helioforge.errors import ProductError
from helioforge.io import write_json
from helioforge.locking import workdir_lock

__all__ = ["StepState", "file_sha256", "content_digest"]


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    str
        64 hex digits.

    Raises
    ------
    OSError
        The file is missing or unreadable.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_digest(paths: Iterable[str | os.PathLike]) -> list[tuple[str, int, str]]:
    """What a product was made from, independent of where the files lie and when they were copied.

    Parameters
    ----------
    paths : iterable of str or os.PathLike
        The input files.

    Returns
    -------
    list of (str, int, str)
        ``(file name, size in bytes, SHA-256 hex)`` of each file, sorted by path. Unreadable or
        missing files are listed as ``(name, -1, "")`` (their reader reports them); never raises
        ``OSError``.
    """
    out = []
    for p in sorted(Path(x) for x in paths):
        try:
            out.append((p.name, p.stat().st_size, file_sha256(p)))
        except OSError:
            out.append((p.name, -1, ""))
    return out


@dataclass
class StepState:
    """Step bookkeeping of the work folder ``root``.

    Parameters
    ----------
    root : the work folder.
    create : create the folder now (writing commands); ``False`` for read-only use, where a
        missing folder is simply empty.
    """

    root: Path
    create: bool = field(default=True, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.create:
            self.root.mkdir(parents=True, exist_ok=True)

    state_file = property(lambda self: self.root / "state.json")

    def lock(self):
        """Context manager holding the folder's lock (:func:`helioforge.locking.workdir_lock`)."""
        return workdir_lock(self.root)

    def state(self) -> dict[str, Any]:
        """The folder's bookkeeping (``{}`` when there is none).

        Raises :class:`ProductError` for an unreadable ``state.json``.
        """
        if not self.state_file.is_file():
            return {}
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ProductError(self.state_file, f"unreadable bookkeeping ({type(exc).__name__}: {exc})",
                               "delete it and rerun the command with --force to rebuild the folder's products") from None
        if not isinstance(state, dict):
            raise ProductError(self.state_file, "unreadable bookkeeping (not a JSON object)",
                               "delete it and rerun the command with --force to rebuild the folder's products")
        return state

    def _entry(self, step: str) -> dict[str, Any] | None:
        e = self.state().get(step)
        if e is None:
            return None
        return {"digest": e, "files": {}} if isinstance(e, str) else e

    def mark(self, step: str, digest: str, *products: str | os.PathLike) -> None:
        """Record in ``state.json`` that ``step`` finished with ``digest``.

        Parameters
        ----------
        step : str
            The step's name.
        digest : str
            What the product was made from (:meth:`ProfileBase.digest <helioforge.config.ProfileBase.digest>`
            and the like).
        *products : str or os.PathLike
            The product's files; their SHA-256 is recorded (under the path relative to the
            folder, or the full path for files outside it) and checked by :meth:`is_current`.

        Raises
        ------
        OSError
            A product file is missing or unreadable, or ``state.json`` cannot be written.
        ProductError
            ``state.json`` is unreadable or not a JSON object (:meth:`state`).
        """
        files = {}
        for p in products:
            p = Path(p)
            try:
                key = p.relative_to(self.root).as_posix()
            except ValueError:
                key = str(p)
            files[key] = file_sha256(p)
        state = self.state()
        state[step] = {"digest": digest, "files": files}
        write_json(self.state_file, state)

    def unmark(self, step: str) -> None:
        """Forget that ``step``'s product is current (called before it is rebuilt).

        Parameters
        ----------
        step : str
            The step's name; nothing is written when it is not marked.

        Raises
        ------
        ProductError
            ``state.json`` is unreadable or not a JSON object (:meth:`state`).
        """
        state = self.state()
        if state.pop(step, None) is not None:
            write_json(self.state_file, state)

    def token(self, step: str) -> str:
        """What downstream digests include for ``step``, so a rebuilt upstream product makes its
        dependents stale.

        Parameters
        ----------
        step : str
            The upstream step's name.

        Returns
        -------
        str
            16 hex digits of the SHA-256 of the step's entry (digest and product hashes); ``''``
            when the step is not marked.

        Raises
        ------
        ProductError
            ``state.json`` is unreadable or not a JSON object (:meth:`state`).
        """
        e = self._entry(step)
        if e is None:
            return ""
        return hashlib.sha256(json.dumps(e, sort_keys=True).encode()).hexdigest()[:16]

    def record_time(self, step: str, seconds: float) -> None:
        """Remember how long making ``step``'s product took (shown in later reports).

        Parameters
        ----------
        step : str
            The step's name.
        seconds : float
            Wall-clock time, s; stored rounded to 0.1 s under ``training_s`` in ``state.json``.

        Raises
        ------
        ProductError
            ``state.json`` is unreadable or not a JSON object (:meth:`state`).
        """
        state = self.state()
        state.setdefault("training_s", {})[step] = round(seconds, 1)
        write_json(self.state_file, state)

    def problem(self, step: str, digest: str | None, *paths: str | os.PathLike) -> str | None:
        """Why ``step``'s product is not current.

        Parameters
        ----------
        step : str
            The step's name.
        digest : str or None
            The digest asked for now; ``None`` accepts any finished product.
        *paths : str or os.PathLike
            The product's files, which must exist.

        Returns
        -------
        str or None
            ``None`` when current, else one of: ``"not built yet"``, ``"unfinished: ..."`` (not
            marked but some file exists), ``"stale: ..."`` (another digest), ``"missing file
            ..."``, or ``"<name> changed on disk since it was written ..."`` (a recorded SHA-256
            no longer matches).

        Raises
        ------
        ProductError
            ``state.json`` is unreadable or not a JSON object (:meth:`state`).
        """
        e = self._entry(step)
        missing = [Path(p) for p in paths if not Path(p).exists()]
        if e is None:
            if any(Path(p).exists() for p in paths):
                return "unfinished: its step was interrupted or is still running"
            return "not built yet"
        if digest is not None and e.get("digest") != digest:
            return "stale: made with other settings, inputs or upstream products"
        if missing:
            return f"missing file {missing[0]}"
        for rel, sha in (e.get("files") or {}).items():
            p = Path(rel) if os.path.isabs(rel) else self.root / rel
            try:
                ok = p.is_file() and file_sha256(p) == sha
            except OSError:
                ok = False
            if not ok:
                return f"{p.name} changed on disk since it was written (truncated, replaced or edited)"
        return None

    def is_current(self, step: str, digest: str | None, *paths: str | os.PathLike) -> bool:
        """Whether ``step`` finished with ``digest``, its files exist and are unchanged.

        Parameters
        ----------
        step, digest, *paths
            As in :meth:`problem`.

        Returns
        -------
        bool
            ``problem(step, digest, *paths) is None``.

        Raises
        ------
        ProductError
            ``state.json`` is unreadable or not a JSON object (:meth:`state`).
        """
        return self.problem(step, digest, *paths) is None

    def run_step(self, step: str, digest: str, products: Sequence[str | os.PathLike], build: Callable[[], Any], *,
                 force: bool = False, resume_digest: str | None = None,
                 reset: Callable[[], Any] | None = None) -> bool:
        """Reuse ``step``'s product when it is current, else (re)build it: the one step protocol.

        Parameters
        ----------
        step : the step's name in ``state.json``.
        digest : what the product must be made from now (settings, input content, upstream
            :meth:`token` values).
        products : the product's files, hashed at the mark and checked on every later load.
        build : makes the product (writing ``products``); called with no argument.
        force : rebuild even a current product (and drop any resumable checkpoint).
        resume_digest : for a resumable step (training): the digest of its settings without the
            length of training. A checkpoint left by an earlier run is kept only when that run
            recorded the same ``resume_digest`` (under ``"<step>_resume"``); otherwise ``reset``
            is called first to clear it.
        reset : clears the step's partial products (checkpoints); used with ``resume_digest``.

        Returns
        -------
        bool : ``True`` when the product was built, ``False`` when the current one was reused.

        Raises
        ------
        Whatever ``build`` raises; the step then stays un-marked, so the half-made product is
        never taken for a finished one and the next run rebuilds (or resumes) it.
        """
        if not force and self.is_current(step, digest, *products):
            return False
        if resume_digest is not None:
            e = self._entry(f"{step}_resume")
            if (force or e is None or e.get("digest") != resume_digest) and reset is not None:
                reset()
            self.unmark(step)
            self.mark(f"{step}_resume", resume_digest)
        else:
            self.unmark(step)
        t0 = time.perf_counter()
        build()
        self.record_time(step, time.perf_counter() - t0)
        self.mark(step, digest, *products)
        return True

    def require(self, step: str, digest: str | None, *paths: str | os.PathLike, rebuild: str) -> None:
        """Check before loading that ``step``'s product is current.

        Parameters
        ----------
        step : str
            The step's name.
        digest : str or None
            The digest asked for now; ``None`` accepts any finished product.
        *paths : str or os.PathLike
            The product's files (the first names the product in the error).
        rebuild : str
            The command that rebuilds the product (shown in the error).

        Raises
        ------
        ProductError
            The product is not current (the message gives the reason from :meth:`problem` and
            the ``rebuild`` command), or ``state.json`` is unreadable.
        """
        why = self.problem(step, digest, *paths)
        if why is not None:
            target = Path(paths[0]) if paths else self.root
            raise ProductError(target, f"the {step} product is {why}" if not why.startswith(("missing", target.name)) else why,
                               f"run `{rebuild}`")
