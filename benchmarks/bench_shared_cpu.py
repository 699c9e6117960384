"""The GAN step of ``make demo`` on a shared CPU: idle and beside one competing busy process.

    python benchmarks/bench_shared_cpu.py [--epochs 6] [--variants before,after]

Each variant trains the ``cpu``-profile GAN for ``--epochs`` epochs on the real corpus (the
data folder of :func:`helioforge.config.data_root`) in a fresh child process, first on an idle
machine, then with one CPU-bound competitor (a pure-Python busy loop) running beside it:

- ``before``: OpenMP's default wait policy and torch's default thread count (torch is imported
  before helioforge, so helioforge's setting cannot apply): the behaviour before the fix;
- ``after``: what ``helioforge`` does now (``OMP_WAIT_POLICY=PASSIVE`` set on import);
- ``after-1t``: as ``after`` with one torch thread (for comparison).

The corpus is built once, outside the timings. Prints a Markdown table (seconds per epoch,
ratio loaded/idle) and writes it to ``benchmarks/results/shared_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import os, sys, time, json
mode, work, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "before":
    import torch  # OpenMP loads with its default wait policy, before helioforge can set one
import helioforge
import torch
if mode == "after-1t":
    torch.set_num_threads(1)
from helioforge.interrogate.config import get_profile
from helioforge.interrogate.pipeline import Workspace, ensure_gan, prepare_corpus
prof = get_profile("cpu")
prof.gan.epochs = epochs
ws = Workspace(work)
corpus, _ = prepare_corpus(prof, ws)
t0 = time.perf_counter()
ensure_gan(prof, ws, corpus, force=True, accelerator="cpu", devices=1, progress=False)
print(json.dumps({"seconds": time.perf_counter() - t0, "threads": torch.get_num_threads(),
                  "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "n_images": len(corpus)}))
"""


def run_child(mode: str, work: Path, epochs: int) -> dict:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(work), str(epochs)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--variants", default="before,after,after-1t")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from helioforge.config import describe_data_root

    print(describe_data_root(), file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "w"
        run_child("after", work, 1)  # builds and caches the corpus; warms the file cache
        for variant in args.variants.split(","):
            res = {}
            for load in ("idle", "loaded"):
                hog = None
                if load == "loaded":
                    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                    time.sleep(1.0)
                try:
                    res[load] = run_child(variant, work, args.epochs)
                finally:
                    if hog is not None:
                        hog.kill()
                        hog.wait()
                print(f"{variant:9s} {load:6s} {res[load]['seconds'] / args.epochs:6.2f} s/epoch", file=sys.stderr)
            rows.append({"variant": variant, "epochs": args.epochs, "threads": res["idle"]["threads"],
                         "idle_s_per_epoch": res["idle"]["seconds"] / args.epochs,
                         "loaded_s_per_epoch": res["loaded"]["seconds"] / args.epochs,
                         "n_images": res["idle"]["n_images"]})
    base = next((r["idle_s_per_epoch"] for r in rows if r["variant"] == "before"), rows[0]["idle_s_per_epoch"])
    print(f"| variant | threads | idle s/epoch | loaded s/epoch | loaded / own idle | loaded / before-idle |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['threads']} | {r['idle_s_per_epoch']:.2f} | {r['loaded_s_per_epoch']:.2f} | "
              f"{r['loaded_s_per_epoch'] / r['idle_s_per_epoch']:.2f}× | {r['loaded_s_per_epoch'] / base:.2f}× |")
    out = Path(__file__).resolve().parent / "results" / "shared_cpu.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"epochs": args.epochs, "rows": rows, "cores": os.cpu_count()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
