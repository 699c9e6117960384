"""ceVAE feature encoder: training on a tiny synthetic set, resume, save/load, class separation."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from helioforge.diffusion.config import FeatureConfig
from helioforge.diffusion.features import (
    FeatureEncoder,
    random_box_mask,
    train_feature_encoder,
)
from helioforge.nn.vae import ConvVAE, kl_divergence

N = 16


def _synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two kinds of 16×16 'sun-like' images: a bright compact blob ("flaring") at a random
    place, or a faint large-scale gradient ("quiet"); both with noise, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:N, :N]
    kind = np.arange(n) % 2
    imgs = np.empty((n, 1, N, N), dtype=np.float32)
    for i, k in enumerate(kind):
        if k == 0:
            cy, cx = rng.uniform(3, N - 3, 2)
            img = -0.6 + 1.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0)
        else:
            angle = rng.uniform(0, 2 * np.pi)
            img = 0.3 * (np.cos(angle) * (xx - N / 2) + np.sin(angle) * (yy - N / 2)) / N
        imgs[i, 0] = np.clip(img + 0.05 * rng.standard_normal((N, N)), -1, 1)
    return imgs, kind


@pytest.fixture(scope="module")
def data():
    return _synthetic(64)


CFG = dict(latent_dim=8, width=8, batch_size=16, lr=3e-3, seed=0)


def _metrics_epochs(workdir, version):
    with open(workdir / "logs" / f"version_{version}" / "metrics.csv") as fh:
        return sorted({int(r["epoch"]) for r in csv.DictReader(fh) if r.get("loss")})


def test_train_resume_save_load_and_separation(tmp_path, data):
    images, kind = data
    enc = train_feature_encoder(images, FeatureConfig(epochs=3, **CFG), tmp_path, progress=False)
    assert (tmp_path / "checkpoints" / "last.safetensors").is_file()
    meta = json.loads((tmp_path / "feature_encoder.json").read_text())
    assert meta["image_size"] == N and meta["latent_dim"] == 8 and meta["epochs_trained"] == 3
    assert meta["feature_config"]["context_mask_fraction"] == 0.25
    assert {"loss", "recon", "kl", "ce"} <= set(meta["final_metrics"])
    assert _metrics_epochs(tmp_path, 0) == [0, 1, 2]

    # resume: a second call with more epochs continues at epoch 3 instead of starting over
    enc = train_feature_encoder(images, FeatureConfig(epochs=6, **CFG), tmp_path, progress=False)
    assert _metrics_epochs(tmp_path, 1) == [3, 4, 5]
    meta2 = json.loads((tmp_path / "feature_encoder.json").read_text())
    assert meta2["epochs_trained"] == 6
    assert meta2["final_metrics"]["loss"] < meta["final_metrics"]["loss"]

    feats = enc.encode(images)
    assert feats.shape == (64, 8) and feats.dtype == np.float64
    np.testing.assert_array_equal(enc.encode(images), feats)  # deterministic: posterior means, eval mode
    np.testing.assert_allclose(enc.encode(images, batch_size=10), feats, atol=1e-5)  # batching: float round-off only

    # the two kinds of structure separate in feature space (chance: ARI ≈ 0)
    labels = KMeans(n_clusters=2, n_init=10, random_state=0).fit_predict(feats)
    assert adjusted_rand_score(kind, labels) > 0.8

    # save/load round trips give identical features, from both the training stem and save()
    enc.save(tmp_path / "copy")
    for stem in (tmp_path / "copy", tmp_path / "feature_encoder"):
        again = FeatureEncoder.load(stem)
        np.testing.assert_array_equal(again.encode(images), feats)
        assert again.config["image_size"] == N


def test_encode_and_load_errors(tmp_path):
    enc = FeatureEncoder(ConvVAE(N, 4, 4), {"image_size": N, "latent_dim": 4, "width": 4})
    with pytest.raises(ValueError, match=r"\(n, 1, 16, 16\)"):
        enc.encode(np.zeros((2, 1, 32, 32)))
    assert enc.encode(np.zeros((0, 1, N, N))).shape == (0, 4)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        FeatureEncoder.load(tmp_path / "missing")
    enc.save(tmp_path / "broken")
    (tmp_path / "broken.json").write_text(json.dumps({"image_size": N}))
    with pytest.raises(ValueError, match="broken.json.*latent_dim"):
        FeatureEncoder.load(tmp_path / "broken")


def test_training_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"\(n, 1, N, N\)"):
        train_feature_encoder(np.zeros((8, 16, 16), np.float32), FeatureConfig(**CFG), tmp_path, progress=False)
    with pytest.raises(ValueError, match="at least one batch"):
        train_feature_encoder(np.zeros((1, 1, 16, 16), np.float32), FeatureConfig(**CFG), tmp_path, progress=False)
    with pytest.raises(ValueError, match="context_mask_fraction"):
        FeatureConfig(context_mask_fraction=1.0)


def test_vae_shapes_and_kl():
    vae = ConvVAE(32, latent_dim=6, width=4).eval()
    x = torch.zeros(3, 1, 32, 32)
    recon, mu, logvar = vae(x)
    assert recon.shape == x.shape and mu.shape == (3, 6) and logvar.shape == (3, 6)
    assert torch.all(recon.abs() <= 1)
    assert torch.equal(vae.encode(x), mu)
    # KL(N(μ, σ²) ‖ N(0, 1)) per dimension = ½(μ² + σ² − 1 − ln σ²)
    kl = kl_divergence(torch.tensor([[1.0, 0.0]]), torch.log(torch.tensor([[1.0, 4.0]])))
    assert kl.item() == pytest.approx(0.5 * 1.0 + 0.5 * (4.0 - 1.0 - np.log(4.0)))
    with pytest.raises(ValueError, match="power of two"):
        ConvVAE(24)


def test_random_box_mask_area():
    g = torch.Generator().manual_seed(0)
    m = random_box_mask((500, 1, 32, 32), 0.25, generator=g)
    assert m.shape == (500, 1, 32, 32) and m.dtype == torch.bool
    area = m.float().mean(dim=(1, 2, 3))
    assert area.mean().item() == pytest.approx(0.25, abs=0.02)
    # each mask is one rectangle: its bounding box is fully masked
    rows, cols = m[0, 0].any(1).nonzero(), m[0, 0].any(0).nonzero()
    assert m[0, 0, rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
    assert not random_box_mask((2, 1, 8, 8), 0.0).any()
