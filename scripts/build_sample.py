#!/usr/bin/env python3
"""Build the embedded real sample ``src/helioforge/sample_data/`` from the full data folder.

    python scripts/build_sample.py [--source ../shared/data] [--dest src/helioforge/sample_data]

The embedded sample is what a fresh clone runs on when no data folder is found (see
:func:`helioforge.config.data_root`): every SHARP ``Br`` frame with its ``bitmap``, the three
broken SHARP files, every 6th AIA 193 Å browse image, two SDOML-binned AIA files per channel,
the GOES event lists and hourly flux, and the small Hinode SP, instrument and model-atmosphere
files. Files are copied byte for byte; where gzip saves at least 20 % (bitmaps, CSV tables) the
file is stored as ``<name>.gz`` when its reader opens that form (SHARP segments, GOES CSVs; lossless: the decompressed bytes are the original file, which
the readers open directly). Already-compressed FITS (JSOC's RICE tiles) and the deliberately
broken files are copied unchanged.

``MANIFEST.json`` lists, for each stored file, the original path in the data folder, its source
repository, licence/credit, the sha256 of the stored file and of the original bytes. The sample
is rebuilt from scratch (a temporary folder renamed into place), so it never holds a stale file.
The build fails if the sample exceeds 25 MB.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 25 * 1024 * 1024
MIN_GZIP_SAVING = 0.20

#: Source repository and licence per folder of the data folder (its README.md).
SOURCES: dict[str, tuple[str, str]] = {
    "sharp/hmi.sharp_cea_720s.14": ("github fernandesi2244/HMI-Data-Analysis", "no licence stated; SDO data courtesy of NASA/SDO and the HMI science team"),
    "sharp/hmi.sharp_cea_720s.7115": ("github SWxTREC/solarmask", "MIT; SDO data courtesy of NASA/SDO and the HMI science team"),
    "sharp/hmi.sharp_cea_720s.6060": ("github LuisLinan/helicity_fluxes", "MIT; SDO data courtesy of NASA/SDO and the HMI science team"),
    "sharp/hmi.sharp_cea_720s.377.": ("github mbobra/SHARPs", "SDO data courtesy of NASA/SDO and the HMI science team"),
    "sharp/hmi.sharp_cea_720s.2491": ("github Zara-Siwei/Construction-of-three-dimensional-nonlinear-force-free-field-extrapolated-magnetic-field-data", "no licence stated; SDO data courtesy of NASA/SDO and the HMI science team"),
    "sharp/hmi.sharp_cea_720s.2007": ("github deepsolar/nlfff_gpu", "MIT; SDO data courtesy of NASA/SDO and the HMI science team"),
    "sharp_bad/": ("github fernandesi2244/HMI-Data-Analysis (broken at the source)", "no licence stated; SDO data courtesy of NASA/SDO and the HMI science team"),
    "aia/browse/": ("github mahathir68/solar-event-detection-YOLOv8 (dev branch)", "SDO data courtesy of NASA/SDO and the AIA science team"),
    "aia/sdoml_binned/": ("github Tomomaniac/Solar-Flares-All (binned 4x4 by mean)", "SDO data courtesy of NASA/SDO and the AIA science team"),
    "goes/goes15_xrs_hourly": ("github ianan/solar_activity", "GOES data courtesy of NOAA"),
    "goes/swpc_flarelist": ("github hayesla/flare_forecast_proj", "MIT; GOES data courtesy of NOAA"),
    "goes/swpc_ftp_flares": ("github kehu001/CLEAR-Flare-Forecasting-Models", "GOES data courtesy of NOAA"),
    "goes/": ("sunpy wheel (test data)", "BSD-2; GOES data courtesy of NOAA"),
    "stokes/hinode_sp_sample/": ("github dvukadinovic/globin", "MIT (LICENCE beside it); Hinode: JAXA/NAOJ, NASA, STFC, ESA/NSC"),
    "stokes/hinode_sp_level1_slit/": ("github vivivum/MilosIDL", "no licence stated; Hinode data open with acknowledgement of JAXA/NAOJ"),
    "stokes/instrument/": ("SICON, 3D SIR, pyMilne (LICENSE.* beside them)", "see LICENSE.sicon, LICENSE.3d_sir, LICENSE.pyMilne"),
    "stokes/atmospheres/": ("SIR model atmospheres (LICENSE beside them)", "see LICENSE"),
}


def select(source: Path) -> list[Path]:
    """The files of the full data folder that form the embedded sample, as relative paths."""
    picks: list[Path] = []
    sharp = source / "sharp"
    for br in sorted(sharp.glob("*.Br.fits")):
        picks.append(br)
        bitmap = br.with_name(br.name.replace(".Br.fits", ".bitmap.fits"))
        if bitmap.is_file():
            picks.append(bitmap)
    picks += sorted((source / "sharp_bad").glob("*"))
    picks += sorted((source / "aia" / "browse").glob("*_193_512.jpg"))[::6]
    for wave in ("0131A", "0193A"):
        picks += sorted((source / "aia" / "sdoml_binned").glob(f"aia.{wave}.*.fits"))[:2]
    goes = source / "goes"
    picks += [goes / n for n in ("goes15_xrs_hourly_2010-2018.csv", "swpc_flarelist_2010-2021.csv",
                                 "swpc_ftp_flares_20100101_20251115.csv", "go1520120601.fits.gz",
                                 "sci_xrsf-l2-avg1m_g16_d20210101_truncated.nc")]
    for sub in ("hinode_sp_sample", "instrument", "atmospheres", "hinode_sp_level1_slit"):
        picks += sorted(p for p in (source / "stokes" / sub).rglob("*") if p.is_file())
    missing = [p for p in picks if not p.is_file()]
    if missing:
        raise SystemExit(f"build_sample: missing in {source}: " + ", ".join(str(p) for p in missing))
    return [p.relative_to(source) for p in picks]


def provenance(rel: str) -> tuple[str, str]:
    """(source, licence) of a relative path: the longest matching prefix of :data:`SOURCES`."""
    best = max((k for k in SOURCES if rel.startswith(k)), key=len, default=None)
    if best is None:
        raise SystemExit(f"build_sample: no source recorded for {rel}")
    return SOURCES[best]


def _may_gzip(rel: Path) -> bool:
    """Only files whose readers open the ``.gz`` form: SHARP segments (``read_sharp_folder`` and
    the companion look-up) and the GOES CSV tables (pandas, found by ``config.data_file``)."""
    return (rel.parts[0] == "sharp" and rel.name.endswith(".fits")) or (rel.parts[0] == "goes" and rel.suffix == ".csv")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build(source: Path, dest: Path) -> dict:
    """Write the sample to ``dest`` (replacing it whole) and return the manifest."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    entries = []
    for rel in select(source):
        raw = (source / rel).read_bytes()
        broken = rel.parts[0] == "sharp_bad"
        packed = gzip.compress(raw, compresslevel=9, mtime=0)
        use_gz = _may_gzip(rel) and not broken and len(packed) <= (1 - MIN_GZIP_SAVING) * len(raw)
        stored_rel = Path(str(rel) + ".gz") if use_gz else rel
        data = packed if use_gz else raw
        out = tmp / stored_rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        src, licence = provenance(str(rel))
        entries.append({"file": stored_rel.as_posix(), "original": rel.as_posix(), "gzip": use_gz,
                        "bytes": len(data), "sha256": sha256(data), "original_sha256": sha256(raw),
                        "source": src, "licence": licence})
    total = sum(e["bytes"] for e in entries)
    manifest = {"description": "helioforge embedded real sample (built by scripts/build_sample.py)",
                "built_from": "../shared/data (see its README.md)", "n_files": len(entries),
                "total_bytes": total, "files": entries}
    (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if total > LIMIT_BYTES:
        shutil.rmtree(tmp)
        raise SystemExit(f"build_sample: {total / 2**20:.1f} MiB is over the 25 MiB limit")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--dest", type=Path, default=REPO / "src" / "helioforge" / "sample_data")
    args = ap.parse_args(argv)
    m = build(args.source.resolve(), args.dest.resolve())
    by_top: dict[str, list[int]] = {}
    for e in m["files"]:
        by_top.setdefault(e["file"].split("/")[0], []).append(e["bytes"])
    for top, sizes in sorted(by_top.items()):
        print(f"{top:10s} {len(sizes):4d} files {sum(sizes) / 2**20:6.2f} MiB")
    print(f"total      {m['n_files']:4d} files {m['total_bytes'] / 2**20:6.2f} MiB -> {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
