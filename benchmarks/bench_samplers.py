"""Sampler cost against quality: DDPM with T = 1000 steps (the paper) against DDIM and
DPM-Solver++ with few steps, in one run on the same trained model.

For each sampler: images/s, network evaluations per image (NFE; classifier-free guidance
doubles the batch of every step) and the Fréchet distance of the samples to the real training
set in the domain feature space (the ceVAE-style encoder of the evaluation). The held-out real
test set's distance is printed as the noise floor at this sample size. Goal (issue 3): ≥ 20×
fewer evaluations than DDPM-1000 within 10 % of its distance.

Needs a work folder made by ``make demo-diffusion`` (model, feature encoder, dataset).
Run by hand: ``.venv/bin/python benchmarks/bench_samplers.py [--n 128]``; results go to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from helioforge.diffusion.features import FeatureEncoder
from helioforge.diffusion.metrics import frechet_distance
from helioforge.diffusion.pipeline import DiffusionWorkspace, class_conditions, load_dataset
from helioforge.diffusion.infer import sample
from helioforge.diffusion.train import load_diffusion


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workdir", default="runs/diffusion")
    ap.add_argument("--n", type=int, default=128, help="images per sampler")
    ap.add_argument("--cfg-scale", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samplers", default="ddpm:1000,ddim:50,ddim:25,dpm:20,ddim0:50",
                    help="sampler:steps list; ddim0 is deterministic DDIM (η = 0)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ws = DiffusionWorkspace(Path(args.workdir))
    net, config = load_diffusion(ws.model_stem("class"))
    enc = FeatureEncoder.load(ws.features_dir / "feature_encoder")
    data = load_dataset(ws.dataset)
    tr_x, _, _ = data.split("train")
    te_x, _, _ = data.split("test")
    f_tr = enc.encode(tr_x)
    cond = class_conditions(config["class_counts"], args.n, np.random.default_rng(0))
    floor = frechet_distance(enc.encode(te_x), f_tr)
    rows = []
    for spec in args.samplers.split(","):
        name, steps = spec.split(":")
        eta = 0.0 if name == "ddim0" else 1.0
        r = sample(net, config["train"], cond, sampler=name.rstrip("0"), steps=int(steps), cfg_scale=args.cfg_scale,
                   eta=eta, seed=0, progress=False)
        fd = frechet_distance(enc.encode(r.images), f_tr)
        rows.append((name, int(steps), r.nfe_per_image, args.n / r.seconds, fd))
        print(f"{name}-{steps}: {r.nfe_per_image} NFE/image, {args.n / r.seconds:.3f} img/s, FD {fd:.4f}", flush=True)
    base = rows[0]
    print(f"\nheld-out real test vs train FD (noise floor, n={len(te_x)}): {floor:.4f}\n")
    print("| sampler | steps | NFE / image | images/s | speed-up vs DDPM-1000 | NFE ratio | domain FD | FD / DDPM FD |")
    print("|---|---|---|---|---|---|---|---|")
    for name, steps, nfe, rate, fd in rows:
        print(f"| {name} | {steps} | {nfe} | {rate:.3f} | {rate / base[3]:.1f}× | {base[2] / nfe:.0f}× | {fd:.4f} | {fd / base[4]:.2f} |")


if __name__ == "__main__":
    main()
