"""Streaming an SDOMLv2 store vs. reading it into memory: peak RSS and time (issue 16, part 3).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sdoml_stream.py [--copies 1,10] [--size 64] \\
        [--workers 0] [--chunk 15] [--buffer 512] [--modes stream,memory] [--arena-max N] [--keep DIR]

For each number of copies k, a local store with the SDOMLv2 layout is written from the real
sample (``aia/sdoml_binned``: every 131 Å and 193 Å frame, k copies shifted by whole days,
:func:`helioforge.data.sdoml.write_sdoml_zarr`), then the 131 Å channel is consumed twice,
each time in a fresh process:

``stream``
    :func:`helioforge.diffusion.data.build_sdoml_index` (flux labels, day split) and one epoch
    of the training stream through a DataLoader (batch 12, ``--workers`` reading processes):
    what :func:`helioforge.diffusion.train.train_diffusion_stream` consumes.
``memory``
    the eager path: :func:`helioforge.data.aia.read_sdoml_zarr` (every frame in memory) and the
    (n, N, N) cube :func:`helioforge.diffusion.data.build_labelled_set` would stack from it.

Peak RSS is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the measuring process (with
workers: also ``RUSAGE_CHILDREN``, the largest worker). The measuring process is a fork of a
small launcher, because Linux keeps ``ru_maxrss`` across ``exec`` and a process started from a
large one would report its launcher's peak. "Above imports" subtracts the peak after importing
helioforge, torch, xarray, dask, zarr, skimage and sunpy. Printed as a Markdown table.

zarr decodes chunks in threads, and glibc gives threads their own malloc arenas: freed chunk
buffers fragment them, a term bounded by the number of arenas that saturates only after some
hundreds of frames; ``--arena-max 1`` shows the stream's memory without it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

_CHILD = textwrap.dedent("""
    import json, os, resource, sys, time, traceback
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            import numpy as np
            import torch
            from torch.utils.data import DataLoader
            from helioforge.data.aia import read_sdoml_zarr
            from helioforge.data.aia_preprocess import AIAScaling, preprocess_aia
            from helioforge.diffusion.config import StreamConfig, get_diffusion_profile
            from helioforge.diffusion.data import build_sdoml_index
            import dask.array, skimage.transform, sunpy.time, xarray, zarr
            torch.set_num_threads(1)
            mode, store, size, workers, buffer = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
            peak = lambda who=resource.RUSAGE_SELF: resource.getrusage(who).ru_maxrss
            base = peak()
            t0 = time.perf_counter()
            if mode == "stream":
                p = get_diffusion_profile("cpu")
                p.data.label_source, p.data.image_size = "flux", size
                p.stream = StreamConfig(source="sdoml", store=store, shuffle_buffer=buffer)
                stream = build_sdoml_index(p).stream()
                loader = DataLoader(stream, batch_size=12, num_workers=workers)
                n = sum(len(x) for x, _ in loader)
            else:
                images = read_sdoml_zarr(store, 131)
                cube = np.stack([preprocess_aia(im, size, AIAScaling.for_channel(131)) for im in images])[:, None]
                n = len(cube)
            out = {"base_kib": base, "peak_kib": peak(), "children_kib": peak(resource.RUSAGE_CHILDREN),
                   "n": n, "seconds": time.perf_counter() - t0}
            os.write(w, json.dumps(out).encode())
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    os.close(w)
    out = b"".join(iter(lambda: os.read(r, 65536), b""))
    _, status = os.waitpid(pid, 0)
    if status:
        sys.exit(f"measuring process failed (status {status})")
    print(out.decode())
""")


def measure_peak_rss(mode: str, store: Path, size: int, workers: int, buffer: int, arena_max: int | None) -> dict:
    """Peak RSS of reading channel 131 of ``store`` once in a fresh forked process.

    ``mode`` is ``"stream"`` (``build_sdoml_index(...).stream()`` through a DataLoader of
    ``workers`` workers, shuffle buffer ``buffer``) or ``"memory"`` (``read_sdoml_zarr`` and the
    stacked cube); ``size`` is the image side; ``arena_max`` sets ``MALLOC_ARENA_MAX``. Returns
    ``{"base_kib", "peak_kib", "children_kib", "n", "seconds"}`` (``ru_maxrss`` after the imports
    and at the end). Also used by ``tests/diffusion/test_sdoml_streaming.py``.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if arena_max:
        env["MALLOC_ARENA_MAX"] = str(arena_max)
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(store), str(size), str(workers), str(buffer)],
                         capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        raise SystemExit(f"{mode} on {store} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--copies", default="1,10", help="comma-separated copies of the sample per store")
    ap.add_argument("--size", type=int, default=64, help="N of the N×N training images")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers of the stream")
    ap.add_argument("--chunk", type=int, default=15, help="frames per zarr chunk (SDOMLv2 script: 15)")
    ap.add_argument("--buffer", type=int, default=512, help="shuffle buffer of the stream, frames")
    ap.add_argument("--modes", default="stream,memory", help="which paths to measure")
    ap.add_argument("--arena-max", type=int, default=None,
                    help="MALLOC_ARENA_MAX of the measuring processes (default: glibc's own)")
    ap.add_argument("--keep", type=Path, default=None, help="write the stores here and keep them")
    args = ap.parse_args()

    import numpy as np

    from helioforge.config import data_root
    from helioforge.data.aia import read_aia_folder
    from helioforge.data.sdoml import write_sdoml_zarr

    folder = data_root() / "aia" / "sdoml_binned"
    images, _ = read_aia_folder(folder, progress=False)
    sample_bytes = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    n131 = sum(im.wavelength == 131 for im in images)
    frame_mib = images[0].data.nbytes / 2**20
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_sdoml_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for k in (int(c) for c in args.copies.split(",")):
            store = work / f"sdoml_x{k}.zarr"
            t0 = time.perf_counter()
            write_sdoml_zarr(store, images, time_offsets=[np.timedelta64(d, "D") for d in range(k)],
                             chunk_frames=args.chunk)
            t_write = time.perf_counter() - t0
            res = {m: measure_peak_rss(m, store, args.size, args.workers, args.buffer, args.arena_max) for m in args.modes.split(",")}
            rows.append((k, _du(store), t_write, res))
            print(f"x{k}: {json.dumps(res)}", file=sys.stderr, flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    mib = lambda kib: kib / 1024  # noqa: E731
    print(f"\nSample: {folder} ({len(images)} frames, {sample_bytes / 2**20:.1f} MiB of FITS; {n131} at 131 Å). "
          f"Images {args.size}², zarr chunks of {args.chunk} frames, stream workers {args.workers}, shuffle buffer "
          f"{args.buffer}, MALLOC_ARENA_MAX {args.arena_max or 'default'}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, OMP_NUM_THREADS=1.\n")
    print("| copies | store frames (131 Å) | store on disk MiB | 131 Å pixels MiB | path | examples | peak RSS MiB "
          "| above imports MiB | largest worker MiB | s |")
    print("|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for k, disk, _, res in rows:
        frames = k * len(images)
        for mode, r in res.items():
            worker = f"{mib(r['children_kib']):.0f}" if mode == "stream" and args.workers else "–"
            print(f"| {k} | {frames} ({k * n131}) | {disk / 2**20:.0f} "
                  f"| {k * n131 * frame_mib:.0f} | {mode} | {r['n']} | {mib(r['peak_kib']):.0f} "
                  f"| {mib(r['peak_kib'] - r['base_kib']):.0f} | {worker} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
