"""Classical augmentation (kornia) and the generated/classical/none augmentation experiment (§8.1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from helioforge.diffusion.augment import augmentation_experiment, classical_augment, summarize_augmentation
from helioforge.diffusion.config import AugmentConfig, ClassifierConfig
from helioforge.diffusion.evaluate import minority_classes
from helioforge.diffusion.report import plot_augmentation

SIZE = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blob(k: int, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """One (size, size) image of class k: a Gaussian blob, brighter and wider with k."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(4, size - 4, 2)
    r2 = (yy - cy) ** 2 + (xx - cx) ** 2
    img = -1 + (0.35 + 0.4 * k) * np.exp(-r2 / (2 * (1.0 + 0.5 * k) ** 2)) + rng.normal(0, 0.03, (size, size))
    return np.clip(img, -1, 1).astype(np.float32)


def dataset(counts: dict[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, k) for k, n in counts.items()]).astype(np.int64)
    return np.stack([blob(int(k), rng) for k in labels])[:, None], labels


def flips(img: np.ndarray) -> list[np.ndarray]:
    """The four flips of an (N, N) image."""
    return [img, img[:, ::-1], img[::-1, :], img[::-1, ::-1]]


# ---------------------------------------------------------------- classical_augment


def test_classical_augment_shape_range_changes():
    src, _ = dataset({2: 5}, seed=0)
    out = classical_augment(src, 30, seed=1)
    assert out.shape == (30, 1, SIZE, SIZE) and out.dtype == np.float32
    assert out.min() >= -1 and out.max() <= 1
    # (almost) every output differs from every flip of every source image
    changed = [min(np.abs(o[0] - f).max() for s in src for f in flips(s[0])) > 1e-2 for o in out]
    assert np.mean(changed) >= 0.9
    # a uniformly bright frame: pixels brought in from outside the frame are the -1 background
    bright = classical_augment(np.ones((1, 1, SIZE, SIZE), np.float32), 10, seed=2)
    assert (bright.reshape(10, -1).min(1) < -0.99).mean() >= 0.9
    assert bright.max() <= 1.0


def test_classical_augment_flip_only_and_seeding():
    src, _ = dataset({1: 3}, seed=3)
    state = torch.get_rng_state()
    out = classical_augment(src, 40, seed=4, rotation_deg=0, affine_deg=0, translate=0, shear_deg=0)
    assert torch.equal(state, torch.get_rng_state())  # global torch RNG untouched
    kinds = set()
    for o in out:
        hits = [(i, j) for i, s in enumerate(src) for j, f in enumerate(flips(s[0])) if np.allclose(o[0], f, rtol=0, atol=1e-6)]
        assert hits, "flip-only augmentation must return a flip of a source image (up to the ±1 shift round-off)"
        kinds.add(hits[0][1])
    assert len(kinds) >= 3  # all four flips are drawn
    np.testing.assert_array_equal(classical_augment(src, 5, seed=9), classical_augment(src, 5, seed=9))
    assert not np.array_equal(classical_augment(src, 5, seed=9), classical_augment(src, 5, seed=10))
    assert classical_augment(src, 0).shape == (0, 1, SIZE, SIZE)


def test_classical_augment_bad_input():
    with pytest.raises(ValueError, match="at least one source"):
        classical_augment(np.zeros((0, 1, 8, 8), np.float32), 3)
    with pytest.raises(ValueError, match="non-negative"):
        classical_augment(np.zeros((2, 1, 8, 8), np.float32), -1)
    with pytest.raises(ValueError, match=r"\(m, 1, N, N\)"):
        classical_augment(np.zeros((2, 8, 8), np.float32), 3)


# ---------------------------------------------------------------- experiment


class FakeGenerator:
    """Stands in for the diffusion sampler: class-specific blobs, different for each seed."""

    def __init__(self):
        self.calls: list[tuple[int, int, int]] = []

    def __call__(self, class_index: int, n: int, seed: int) -> np.ndarray:
        self.calls.append((class_index, n, seed))
        rng = np.random.default_rng(seed)
        return np.stack([blob(class_index, rng) for _ in range(n)])[:, None]


TINY = AugmentConfig(additions=(4, 8), repeats=2,
                     classifier=ClassifierConfig(width=4, epochs=1, batch_size=16))


def test_augmentation_experiment_table_summary_plots(tmp_path):
    # imbalanced: A and M rare, X absent from training (classical cannot make X, generated can)
    train_x, train_y = dataset({0: 3, 1: 12, 2: 12, 3: 3}, seed=0)
    test_x, test_y = dataset({0: 4, 1: 4, 2: 4, 3: 4, 4: 4}, seed=1)
    gen = FakeGenerator()
    df = augmentation_experiment(train_x, train_y, test_x, test_y, gen, TINY, progress=False)

    runs = 2 + 2 * 2 * 2  # none × repeats + (classical, generated) × additions × repeats
    assert len(df) == runs * 5
    assert {"method", "n_added", "repeat", "class", "accuracy", "support", "macro_f1", "n_train", "added"} <= set(df.columns)
    assert set(df["method"]) == {"none", "classical", "generated"}
    assert sorted(df.loc[df["method"] == "none", "n_added"].unique()) == [0]
    assert sorted(df.loc[df["method"] == "generated", "n_added"].unique()) == [4, 8]
    assert df.groupby(["method", "n_added", "repeat"]).size().eq(5).all()
    assert df["accuracy"].between(0, 1).all()
    assert (df["support"] == 4).all()
    # training-set sizes: X has no real images, so classical only adds A and M
    n_real = len(train_x)
    ntrain = df.groupby(["method", "n_added"])["n_train"].first().to_dict()
    assert ntrain == {("none", 0): n_real, ("classical", 4): n_real + 8, ("classical", 8): n_real + 16,
                      ("generated", 4): n_real + 12, ("generated", 8): n_real + 24}
    cls = df[(df["method"] == "classical")].groupby("class")["added"].all()
    assert cls["A"] and cls["M"] and not cls["X"] and not cls["B"]
    assert df.loc[(df["method"] == "generated") & (df["class"] == "X"), "added"].all()
    # macro F1 is one number per run
    assert df.groupby(["method", "n_added", "repeat"])["macro_f1"].nunique().eq(1).all()
    # notes record the skipped combination
    assert any("classical" in n and "X" in n for n in df.attrs["notes"])
    assert df.attrs["minority_classes"] == ["A", "M", "X"]
    # the sampler is called once per (repeat, minority class) with the largest addition,
    # with different seeds for different repeats
    assert sorted((c, n) for c, n, _ in gen.calls) == sorted([(c, 8) for c in (0, 3, 4)] * 2)
    seeds = {}
    for c, _, s in gen.calls:
        seeds.setdefault(c, set()).add(s)
    assert all(len(v) == 2 for v in seeds.values())

    summary = summarize_augmentation(df)
    assert len(summary) == (1 + 2 * 2) * 5
    assert list(summary["method"].unique()) == ["none", "classical", "generated"]
    assert (summary["repeats"] == 2).all()
    sel = df[(df["method"] == "generated") & (df["n_added"] == 8) & (df["class"] == "M")]["accuracy"]
    row = summary[(summary["method"] == "generated") & (summary["n_added"] == 8) & (summary["class"] == "M")].iloc[0]
    assert row["accuracy_mean"] == pytest.approx(sel.mean())
    assert row["accuracy_std"] == pytest.approx(sel.std(ddof=1), nan_ok=True)

    paths = plot_augmentation(df, tmp_path / "figs" / "aug")
    assert [p.name for p in paths] == ["aug_generated.png", "aug_classical.png", "aug_comparison.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "figs").glob(".*"))  # no temporary files left


def test_augmentation_experiment_no_classical_and_bad_generate():
    train_x, train_y = dataset({1: 8, 2: 8}, seed=2)
    test_x, test_y = dataset({1: 3, 2: 3, 4: 3}, seed=3)
    cfg = AugmentConfig(additions=(4,), repeats=1, minority_classes=("X",),
                        classifier=ClassifierConfig(width=4, epochs=1, batch_size=16))
    df = augmentation_experiment(train_x, train_y, test_x, test_y, FakeGenerator(), cfg, progress=False)
    assert set(df["method"]) == {"none", "generated"}
    assert any("all classical runs skipped" in n for n in df.attrs["notes"])
    assert np.isnan(df.loc[df["class"] == "A", "accuracy"]).all()  # no A test images
    with pytest.raises(ValueError, match="returned shape"):
        augmentation_experiment(train_x, train_y, test_x, test_y,
                                lambda k, n, s: np.zeros((n, 1, 8, 8), np.float32), cfg, progress=False)
    with pytest.raises(ValueError, match="minority classes"):
        augmentation_experiment(train_x, train_y, test_x, test_y, FakeGenerator(),
                                AugmentConfig(minority_classes=("Z",)), progress=False)
    with pytest.raises(ValueError, match="empty"):
        plot_augmentation(pd.DataFrame(columns=df.columns), "unused")


def test_every_arm_trains_with_the_original_weights_and_no_flips(monkeypatch):
    """Defect: class weights were recomputed on the augmented labels (each class kept total
    weight n/K however many images were added, cancelling the rebalancing §8.1 measures), and
    the "none" arm trained with random flips."""
    import helioforge.diffusion.augment as aug
    from helioforge.diffusion.classifier import class_weights

    calls = []
    real_train = aug.train_classifier

    def spy(x, y, cfg, **kw):
        calls.append((np.bincount(y, minlength=5), cfg.flips, kw.get("class_weight")))
        return real_train(x, y, cfg, **kw)

    monkeypatch.setattr(aug, "train_classifier", spy)
    train_x, train_y = dataset({0: 3, 1: 12, 2: 12, 3: 3}, seed=0)
    test_x, test_y = dataset({0: 2, 1: 2, 2: 2, 3: 2}, seed=1)
    cfg = AugmentConfig(additions=(8,), repeats=1, minority_classes=("A", "M"),
                        classifier=ClassifierConfig(width=4, epochs=1, batch_size=16, flips=True))
    df = augmentation_experiment(train_x, train_y, test_x, test_y, FakeGenerator(), cfg, progress=False)
    original = class_weights(train_y, 5)
    assert len(calls) == 3  # none, classical +8, generated +8
    for counts, flip, weight in calls:
        assert flip is False  # no arm is augmented by flips, "none" is augmentation-free
        np.testing.assert_allclose(weight, original)  # the same loss in every arm
    # the augmented arms do carry more minority images: the rebalancing is not undone
    assert calls[2][0][0] == 3 + 8 and calls[2][0][3] == 3 + 8
    assert df.attrs["loss_weights"] == pytest.approx(original.tolist())
    # an unweighted variant is available and equally fixed
    calls.clear()
    cfg.loss_weights = "none"
    augmentation_experiment(train_x, train_y, test_x, test_y, FakeGenerator(), cfg, progress=False)
    assert all(np.all(w == 1) for _, _, w in calls)
    cfg.loss_weights = "recomputed"
    with pytest.raises(ValueError, match="loss_weights"):
        augmentation_experiment(train_x, train_y, test_x, test_y, FakeGenerator(), cfg, progress=False)


def test_minority_classes_auto():

    # the paper's Fig. 1 shape: B and C dominate, A, M and X are rare
    paper_like = {"A": 500, "B": 8000, "C": 9000, "M": 900, "X": 48}
    assert minority_classes(paper_like, {0, 1, 2, 3, 4}) == ("A", "M", "X")
    # the demo's 131 Å set: no A, many M; X cannot be generated (one image)
    demo = {"A": 0, "B": 45, "C": 8, "M": 39, "X": 1}
    assert minority_classes(demo, {1, 2, 3}) == ("C",)
