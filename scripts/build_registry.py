#!/usr/bin/env python3
"""Refresh ``src/helioforge/data/registry.csv`` (the download registry of ``helioforge data fetch``)
from the full data folder.

    python scripts/build_registry.py [--source ../shared/data] [--urls FILE.csv]

Every file of the data folder (but its README) gets a row ``path, sha256, size, url, source,
licence``. The URL, source and licence of a path are kept from the existing registry, or taken
from ``--urls`` (a CSV with the same columns, e.g. a survey of the public sources); the hashes
and sizes are always recomputed from the files. The registry is written to a temporary name and
renamed into place.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REGISTRY = REPO / "src" / "helioforge" / "data" / "registry.csv"
COLUMNS = ("path", "sha256", "size", "url", "source", "licence")


def _read(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        return {row["path"]: row for row in csv.DictReader(fh)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--urls", type=Path, default=None)
    args = ap.parse_args(argv)
    known = _read(REGISTRY)
    extra = _read(args.urls) if args.urls else {}
    rows = []
    for f in sorted(p for p in args.source.rglob("*") if p.is_file() and p.name != "README.md"):
        rel = f.relative_to(args.source).as_posix()
        data = f.read_bytes()
        old = {**known.get(rel, {}), **{k: v for k, v in extra.get(rel, {}).items() if v}}
        rows.append({"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                     "url": old.get("url", ""), "source": old.get("source", ""), "licence": old.get("licence", "")})
    tmp = REGISTRY.with_suffix(".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(REGISTRY)
    with_url = sum(1 for r in rows if r["url"])
    print(f"{REGISTRY}: {len(rows)} files, {with_url} with a download URL, {sum(r['size'] for r in rows) / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
