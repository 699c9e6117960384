"""Training sets on Dask (issue 15): scaling, memory, projection to the paper's set, store codecs.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_trainset_dask.py --kernel torch --workers 1,2 \\
        --patches 6 --geometry cpu [--size 32] [--shard-size 1] [--no-serial] [--no-rss] [--no-codecs] [--keep DIR]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_trainset_dask.py --kernel torch --workers 1,2 \\
        --patches 2 --geometry paper --no-serial --no-codecs      # the paper's patches; gives the peak RSS

For each worker count a fresh :class:`distributed.LocalCluster` of single-threaded worker
processes is started and warmed (the workers import helioforge and, for a compiled kernel,
compile it on a 1-patch set), then :func:`helioforge.inversion.dataset.make_trainset` makes a
set of ``--patches`` patches of ``--size``² SP pixels in shards of ``--shard-size`` (one task
each; default 1 patch) on it; the rate is the manifest's ``timing`` (from the first task submitted to the last shard
written: the cluster start and the quiet-Sun reference are not in it). A serial run in this
process (torch threads = cores) is timed for comparison. Every set has the same seed and
must have the same shards, bit for bit (checked).

Printed as Markdown tables:

1. patches/s with each worker count and the scaling efficiency rate(n)/(n·rate(1));
2. peak RSS of one worker while it makes one 32×32 paper-geometry patch (``getrusage`` in the
   worker; ``--no-rss`` skips it; with ``--geometry paper`` the 1-worker run gives it);
3. the projected wall time of the paper's 50,000-patch set on 1, 64 and 512 cores;
4. the zarr codecs compared on the shards just made (float32 Stokes + targets): bytes per
   patch, write and read time per patch, and that :func:`shard_checksum` (which hashes the
   decoded arrays) is the same with every codec.

The geometries: ``cpu`` atmospheres at the 0.16″ SP pixel, no margin (1,024 columns per 32×32
patch); ``paper`` at 0.08″ with a 4-pixel margin, PSF, 2×2 rebin (6,400 columns). The
quiet-Sun reference map is cut to 8² model pixels (it is made once per set, not per patch,
and only sets the normalisation constants).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

#: The paper's set (Asensio Ramos & Díaz Baso 2019 §2) for the projection.
PAPER_PATCHES = 50_000
PAPER_SHARD_SIZE = 1_000


def _profile(geometry: str, kernel: str, patches: int, size: int, shard_size: int = 1, seed: int = 0):
    """The benchmark's training-set profile: ``cpu`` or ``paper`` geometry, a small quiet-Sun reference map."""
    from helioforge.inversion.config import get_trainset_profile

    prof = get_trainset_profile("cpu" if geometry == "cpu" else "paper")
    prof.trainset = dataclasses.replace(prof.trainset, n_patches=patches, shard_size=shard_size, patch_size=size,
                                        qs_reference_size=8, synthesis_kernel=kernel, seed=seed)
    return prof


def _check_kernel(kernel: str, work: Path) -> None:
    """Fail clearly if ``synth_lte(kernel=...)`` cannot make a patch here (e.g. the fused kernel not written yet)."""
    from helioforge.inversion.dataset import make_trainset

    try:
        make_trainset(work / "kernel_check", _profile("cpu", kernel, 1, 4), progress=False)
    except Exception as exc:  # noqa: BLE001 - any failure of the kernel ends the benchmark with its reason
        sys.exit(f"bench_trainset_dask: synth_lte(kernel={kernel!r}) fails here: {type(exc).__name__}: {exc}")
    shutil.rmtree(work / "kernel_check")


def _warm(client, kernel: str, work: Path) -> None:
    """Each worker imports helioforge and runs one tiny patch (compiles a compiled kernel)."""
    from helioforge.inversion.dataset import make_trainset

    n = len(client.scheduler_info()["workers"])
    prof = _profile("cpu", kernel, n, 4)
    make_trainset(work / f"warm_{n}", prof, scheduler=client, progress=False)
    shutil.rmtree(work / f"warm_{n}")


def _busy(ct) -> float:
    return ct.user + ct.nice + ct.system + getattr(ct, "irq", 0.0) + getattr(ct, "softirq", 0.0) + getattr(ct, "steal", 0.0)


def _own_cpu() -> float:
    """CPU seconds of this process and its children so far (the cluster's workers while they live)."""
    import psutil

    total = 0.0
    for p in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


class _OtherLoad:
    """CPU used by other processes during the block, in cores (system busy time − ours) / wall."""

    def __enter__(self):
        import psutil

        self.sys0, self.own0, self.t0 = _busy(psutil.cpu_times()), _own_cpu(), time.perf_counter()
        return self

    def stop(self) -> float:
        import psutil

        wall = time.perf_counter() - self.t0
        self.cores = max(0.0, (_busy(psutil.cpu_times()) - self.sys0 - (_own_cpu() - self.own0)) / wall)
        return self.cores

    def __exit__(self, *exc):
        if not hasattr(self, "cores"):
            self.stop()


def _run_cluster(n_workers: int, prof, out: Path, kernel: str, work: Path) -> dict:
    from distributed import Client, LocalCluster

    from helioforge.inversion.cluster import _environment_restored
    from helioforge.inversion.dataset import make_trainset

    with _environment_restored(), \
            LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                         silence_logs=logging.ERROR) as cluster, Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(n_workers)
        _warm(client, kernel, work)
        base = max(client.run(_rss_mb).values())
        with _OtherLoad() as other:
            man = make_trainset(out, prof, scheduler=client, progress=False)
            other.stop()  # while the workers are alive
    t = man["timing"]
    return {"label": f"Dask, {n_workers} worker{'s' if n_workers > 1 else ''} × 1 thread", "workers": n_workers,
            "rate": t["patches_per_s"], "seconds": t["seconds"], "patches": t["patches_timed"],
            "peak_rss_mb": man["runs"][-1].get("worker_peak_rss_mb"), "base_rss_mb": base,
            "other_cores": other.cores, "sums": [e["sha256"] for e in man["shards"]]}


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _run_serial(prof, out: Path) -> dict:
    import torch

    from helioforge._cpu import usable_cores
    from helioforge.inversion.dataset import make_trainset

    threads = usable_cores()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with _OtherLoad() as other:
            man = make_trainset(out, prof, progress=False)
    finally:
        torch.set_num_threads(before)
    t = man["timing"]
    return {"label": f"serial, 1 process × {threads} torch threads", "workers": None, "rate": t["patches_per_s"],
            "seconds": t["seconds"], "patches": t["patches_timed"], "other_cores": other.cores,
            "sums": [e["sha256"] for e in man["shards"]]}


def _paper_rss(kernel: str, work: Path) -> dict:
    """Peak RSS of one worker making one 32×32 paper-geometry patch."""
    row = _run_cluster(1, _profile("paper", kernel, 1, 32), work / "rss_paper", kernel, work)
    return {"peak_rss_mb": row["peak_rss_mb"], "base_rss_mb": row["base_rss_mb"], "seconds": row["seconds"]}


def _hms(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"


# ----------------------------------------------------------------------------- codecs
def _codecs():
    from zarr.codecs import BloscCodec, ZstdCodec

    return {
        "none": None,
        "Zstd level 0 (zarr's default, before)": [ZstdCodec(level=0)],
        "Zstd level 3": [ZstdCodec(level=3)],
        "Zstd level 9": [ZstdCodec(level=9)],
        "Blosc lz4 5, shuffle": [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")],
        "Blosc lz4 5, bitshuffle": [BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")],
        "Blosc zstd 1, shuffle": [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")],
        "Blosc zstd 1, bitshuffle": [BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")],
        "Blosc zstd 3, shuffle": [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")],
        "Blosc zstd 3, bitshuffle": [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")],
        "Blosc zstd 5, bitshuffle": [BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")],
        "Blosc zstd 9, bitshuffle": [BloscCodec(cname="zstd", clevel=9, shuffle="bitshuffle")],
    }


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _compare_codecs(set_dir: Path, work: Path, repeats: int = 3) -> list[dict]:
    """Re-encode every shard of ``set_dir`` with each codec (same chunks: one per patch)."""
    import numpy as np
    import zarr

    from helioforge.inversion.dataset import read_manifest, shard_checksum

    man = read_manifest(set_dir)
    shards = []
    for e in man["shards"]:
        g = zarr.open_group(str(set_dir / e["file"]), mode="r")
        shards.append((e, {k: np.asarray(g[k][:]) for k in ("stokes", "targets", "kind", "patch_index")}))
    n_patches = sum(e["n"] for e, _ in shards)
    rows = []
    for name, comp in _codecs().items():
        best_w = best_r = math.inf
        size, same = 0, True
        for rep in range(repeats):
            dest = work / "codecs" / f"c{rep}"
            if dest.exists():
                shutil.rmtree(dest)
            t0 = time.perf_counter()
            for e, arrs in shards:
                g = zarr.open_group(str(dest / e["file"]), mode="w")
                for k in ("stokes", "targets"):
                    a = arrs[k]
                    arr = g.create_array(k, shape=a.shape, chunks=(1, *a.shape[1:]), dtype="float32", compressors=comp)
                    for j in range(a.shape[0]):
                        arr[j] = a[j]
                g.create_array("kind", shape=arrs["kind"].shape, dtype="int8")[:] = arrs["kind"]
                g.create_array("patch_index", shape=arrs["patch_index"].shape, dtype="int64")[:] = arrs["patch_index"]
            best_w = min(best_w, time.perf_counter() - t0)
            size = sum(_du(dest / e["file"] / k) for e, _ in shards for k in ("stokes", "targets"))
            t0 = time.perf_counter()
            for e, arrs in shards:
                g = zarr.open_group(str(dest / e["file"]), mode="r")
                for j in range(arrs["stokes"].shape[0]):
                    np.asarray(g["stokes"][j])
                    np.asarray(g["targets"][j])
            best_r = min(best_r, time.perf_counter() - t0)
            if rep == 0:
                same = all(shard_checksum(dest / e["file"]) == e["sha256"] for e, _ in shards)
        rows.append({"codec": name, "bytes_per_patch": size / n_patches, "write_ms": 1e3 * best_w / n_patches,
                     "read_ms": 1e3 * best_r / n_patches, "same_checksums": same})
    raw = next(r for r in rows if r["codec"] == "none")["bytes_per_patch"]
    for r in rows:
        r["ratio"] = raw / r["bytes_per_patch"]
    shutil.rmtree(work / "codecs")
    return rows


def _winner(rows: list[dict]) -> dict:
    """Smallest store among the codecs that read within 2× the fastest compressed codec and write within
    2× the fastest compressed writer (reading happens every epoch; writing is ≪ the synthesis); stores
    within 2 % of the smallest count as equal, and the fastest writer of them wins."""
    comp = [r for r in rows if r["codec"] != "none"]
    fast_r = min(r["read_ms"] for r in comp)
    fast_w = min(r["write_ms"] for r in comp)
    ok = [r for r in comp if r["read_ms"] <= 2 * fast_r and r["write_ms"] <= 2 * fast_w] or comp
    small = min(r["bytes_per_patch"] for r in ok)
    return min((r for r in ok if r["bytes_per_patch"] <= 1.02 * small), key=lambda r: r["write_ms"])


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> str:
    """Run the measurements and print Markdown tables (also returned).

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    str
        The Markdown text printed.
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", choices=("torch", "fused"), default="torch", help="synth_lte kernel")
    ap.add_argument("--workers", default="1,2", help="worker counts, comma-separated (first one is the baseline)")
    ap.add_argument("--patches", type=int, default=8, help="patches per set (one per shard: one task each)")
    ap.add_argument("--geometry", choices=("cpu", "paper"), default="cpu")
    ap.add_argument("--size", type=int, default=32, help="patch side, SP pixels")
    ap.add_argument("--shard-size", type=int, default=1,
                    help="patches per shard (one task each; raise it when a patch takes well under a second)")
    ap.add_argument("--serial", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the serial path (torch threads = cores)")
    ap.add_argument("--rss", action=argparse.BooleanOptionalAction, default=True,
                    help="peak RSS of one worker making one 32×32 paper-geometry patch")
    ap.add_argument("--codecs", action=argparse.BooleanOptionalAction, default=True,
                    help="compare zarr codecs on the shards made")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = ap.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    if not workers or min(workers) < 1 or args.patches < 1 or args.shard_size < 1:
        ap.error("--workers must list counts ≥ 1, --patches and --shard-size must be ≥ 1")
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import distributed
    import torch
    import zarr

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_trainset_dask_"))
    work.mkdir(parents=True, exist_ok=True)
    _check_kernel(args.kernel, work)
    prof = _profile(args.geometry, args.kernel, args.patches, args.size, args.shard_size)
    cols = (prof.trainset.model_size() + 2 * prof.trainset.margin_px * prof.trainset.rebin()) ** 2
    rows = []
    try:
        if args.serial:
            rows.append(_run_serial(prof, work / "serial"))
        for n in workers:
            rows.append(_run_cluster(n, prof, work / f"dask_{n}", args.kernel, work))
        rss = None
        if args.rss:
            one = next((r for r in rows if r["workers"] == 1), None)
            if args.geometry == "paper" and args.size == 32 and one is not None:
                rss = {"peak_rss_mb": one["peak_rss_mb"], "base_rss_mb": one["base_rss_mb"],
                       "seconds": one["seconds"] / one["patches"]}
            else:
                rss = _paper_rss(args.kernel, work)
        codec_rows = _compare_codecs(work / f"dask_{workers[0]}", work) if args.codecs else []
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    identical = len({tuple(r["sums"]) for r in rows}) == 1
    base = next((r for r in rows if r["workers"] == workers[0]), rows[0])
    md = [f"### Training sets on Dask: kernel `{args.kernel}`, {args.geometry} geometry, {args.size}×{args.size} SP "
          f"pixels ({cols} columns/patch), {args.patches} patches in shards of {args.shard_size}",
          "",
          f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, distributed "
          f"{distributed.__version__}, zarr {zarr.__version__}. Rate = patches / wall time from the first task "
          f"submitted to the last shard written (workers warmed; the cluster start-up and the quiet-Sun reference "
          f"are not in it). Same shards, bit for bit, in every run: **{'yes' if identical else 'NO'}**.",
          "",
          "| run | patches/s | s/patch (wall) | efficiency | worker peak RSS | other processes' CPU use |",
          "|---|---|---|---|---|---|"]
    for r in rows:
        eff = ""
        if r["workers"] is not None and base["workers"] is not None:
            eff = f"{r['rate'] / (r['workers'] / base['workers'] * base['rate']):.2f}"
        peak = f"{r['peak_rss_mb']:.0f} MiB" if r.get("peak_rss_mb") else ""
        md.append(f"| {r['label']} | {r['rate']:.4f} | {1 / r['rate']:.1f} | {eff} | {peak} | "
                  f"{r['other_cores']:.2f} cores |")
    md.append("")
    md.append("Efficiency = rate(n workers) / (n × rate(1 worker)). Other processes' CPU use = (the system's busy "
              "CPU time − this benchmark's and its workers') / wall time during the run: more than ≈ 0.1 core means "
              "another job shared the CPU and the rates are low.")
    if rss is not None:
        md += ["", "| peak RSS, one worker, one 32×32 paper-geometry patch | worker RSS before the task | s/patch |",
               "|---|---|---|",
               f"| {rss['peak_rss_mb']:.0f} MiB | {rss['base_rss_mb']:.0f} MiB | {rss['seconds']:.1f} |"]
    # projection
    one = next((r for r in rows if r["workers"] == 1), None)
    two = next((r for r in rows if r["workers"] == 2), None)
    if one is not None:
        eff2 = two["rate"] / (2 * one["rate"]) if two is not None else 1.0
        per_core = one["rate"]
        what = f"{args.geometry} geometry, {args.size}×{args.size}"
        if args.geometry != "paper" or args.size != 32:
            what += " (not the paper's geometry: rerun with --geometry paper --size 32 for the paper's set)"
        md += ["", f"Projected wall time of the paper's {PAPER_PATCHES:,}-patch set from the measured per-core rate "
                   f"({per_core:.4f} patches/s, {what}) and the measured 2-worker efficiency ({eff2:.2f}). Assumed: "
                   f"every core keeps that efficiency (cores share memory bandwidth as these two do; a shard of "
                   f"{PAPER_SHARD_SIZE:,} patches is a task of {PAPER_SHARD_SIZE / per_core / 3600:.1f} h on one core, "
                   f"so the scheduler's milliseconds per task do not count) and the shards outnumber the cores. "
                   f"With the paper's shards of {PAPER_SHARD_SIZE:,} patches there are only "
                   f"{PAPER_PATCHES // PAPER_SHARD_SIZE} tasks: more cores than that sit idle.",
               "", "| cores | wall time, shards ≪ patches/cores | wall time, shards of 1,000 (50 tasks) | "
                   "`--shard-size` for ≥ 4 tasks per core |", "|---|---|---|---|"]
        for cores in (1, 64, 512):
            rate = per_core * cores * (eff2 if cores > 1 else 1.0)
            t_fine = PAPER_PATCHES / rate
            busy = min(cores, PAPER_PATCHES // PAPER_SHARD_SIZE)
            t_coarse = math.ceil((PAPER_PATCHES // PAPER_SHARD_SIZE) / busy) * PAPER_SHARD_SIZE / (
                per_core * (eff2 if cores > 1 else 1.0))
            shard = max(1, PAPER_PATCHES // (4 * cores))
            md.append(f"| {cores} | {_hms(t_fine)} | {_hms(t_coarse)} | {min(shard, PAPER_SHARD_SIZE)} |")
    if codec_rows:
        win = _winner(codec_rows)
        md += ["", f"zarr codecs on these {args.patches} patches (float32 Stokes (4, 112, {args.size}, {args.size}) "
                   f"+ targets (49, {args.size}, {args.size}), one chunk per patch; best of 3; read = decode every "
                   f"chunk from the page cache):",
               "", "| codec | bytes/patch | ratio | write ms/patch | read ms/patch | same checksums |",
               "|---|---|---|---|---|---|"]
        for r in codec_rows:
            star = " **(chosen)**" if r is win else ""
            md.append(f"| {r['codec']}{star} | {r['bytes_per_patch'] / 1e6:.3f} MB | {r['ratio']:.2f} | "
                      f"{r['write_ms']:.1f} | {r['read_ms']:.1f} | {'yes' if r['same_checksums'] else 'NO'} |")
        md += ["", f"Rule: the smallest store among the codecs that read and write within 2× of the fastest "
                   f"compressed ones (stores within 2 % of it count as equal: the fastest writer) → {win['codec']}: {win['bytes_per_patch'] / 1e6:.3f} MB/patch, "
                   f"{PAPER_PATCHES * win['bytes_per_patch'] / 1e9:.0f} GB for {PAPER_PATCHES:,} patches of this size."]
    text = "\n".join(md)
    print(text)
    return text


if __name__ == "__main__":
    main()
