"""GAN training: eqs. (1)–(2) run, resume from the safetensors checkpoint, chance-level selection."""

import json

import numpy as np
import pytest

from helioforge.interrogate.config import GANConfig
from helioforge.interrogate.gan import generate, load_generator, train_gan


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return np.tanh(rng.normal(size=(64, 1, 16, 16))).astype(np.float32)


def test_train_resume_and_select(tmp_path, images):
    cfg = GANConfig(latent_dim=8, base_channels=4, epochs=2, batch_size=16, select_after_fraction=0.0)
    stem = train_gan(images, cfg, tmp_path, progress=False)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.safetensors"]
    first = json.loads(stem.with_suffix(".json").read_text())
    assert [h["epoch"] for h in first["history"]] == [0, 1]

    cfg.epochs = 4  # resumes at epoch 2 instead of starting over
    stem = train_gan(images, cfg, tmp_path, progress=False)
    meta = json.loads(stem.with_suffix(".json").read_text())
    hist = meta["history"]
    assert [h["epoch"] for h in hist] == [0, 1, 2, 3]
    assert hist[:2] == first["history"]
    best = min(hist, key=lambda h: abs(h["d_accuracy"] - 0.5))
    assert meta["selected_epoch"] == best["epoch"]
    assert meta["d_accuracy"] == pytest.approx(best["d_accuracy"])

    gen = load_generator(stem)
    out = generate(gen, np.zeros((3, 8)))
    assert out.shape == (3, 1, 16, 16) and np.all(np.abs(out) <= 1)


def test_bad_inputs(tmp_path, images):
    with pytest.raises(ValueError, match=r"\(n, 1, N, N\)"):
        train_gan(images[:, 0], GANConfig(), tmp_path)
    with pytest.raises(ValueError, match="at least one batch"):
        train_gan(images[:4], GANConfig(batch_size=32), tmp_path)
