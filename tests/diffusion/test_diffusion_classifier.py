"""Flare-class classifier: hand-computed scores, learning a separable task, determinism, save/load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helioforge.diffusion.classifier import (
    FLARE_CLASSES,
    TrainedClassifier,
    class_weights,
    classification_scores,
    score_ratio,
    train_classifier,
)
from helioforge.diffusion.config import ClassifierConfig
from helioforge.nn.classifier import FlareClassifier


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blobs(n_per: int, size: int = 16, seed: int = 0, classes=range(5)) -> tuple[np.ndarray, np.ndarray]:
    """Class k: one Gaussian blob at a random place, brighter and wider with k (flip-invariant)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    x, y = [], []
    for k in classes:
        for _ in range(n_per):
            cy, cx = rng.uniform(4, size - 4, 2)
            r2 = (yy - cy) ** 2 + (xx - cx) ** 2
            img = -1 + (0.35 + 0.4 * k) * np.exp(-r2 / (2 * (1.0 + 0.5 * k) ** 2)) + rng.normal(0, 0.03, (size, size))
            x.append(np.clip(img, -1, 1))
            y.append(k)
    return np.asarray(x, np.float32)[:, None], np.asarray(y, np.int64)


FAST = ClassifierConfig(width=8, epochs=8, batch_size=16, lr=3e-3)


# ---------------------------------------------------------------- scores


def test_classification_scores_by_hand():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    y_pred = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0, 0])
    s = classification_scores(y_true, y_pred)
    # per class (TP / predicted, TP / support): A 2/4, 2/3; B 1/2, 1/2; C 3/4, 3/4; M 0/0 -> 0, 0/1
    prec = {"A": 2 / 4, "B": 1 / 2, "C": 3 / 4, "M": 0.0}
    rec = {"A": 2 / 3, "B": 1 / 2, "C": 3 / 4, "M": 0.0}
    f1 = {c: (2 * prec[c] * rec[c] / (prec[c] + rec[c]) if prec[c] + rec[c] else 0.0) for c in prec}
    assert f1["A"] == pytest.approx(4 / 7)
    for c in prec:
        pc = s["per_class"][c]
        assert pc["precision"] == pytest.approx(prec[c])
        assert pc["recall"] == pytest.approx(rec[c])
        assert pc["accuracy"] == pytest.approx(rec[c])
        assert pc["f1"] == pytest.approx(f1[c])
    assert [s["per_class"][c]["support"] for c in FLARE_CLASSES] == [3, 2, 4, 1, 0]
    assert [s["per_class"][c]["predicted"] for c in FLARE_CLASSES] == [4, 2, 4, 0, 0]
    # X is absent from y_true and never predicted: undefined, and not part of the macro average
    assert all(math.isnan(s["per_class"]["X"][k]) for k in ("f1", "precision", "recall", "accuracy"))
    assert s["macro_classes"] == ["A", "B", "C", "M"]
    assert s["macro_precision"] == pytest.approx(sum(prec.values()) / 4)
    assert s["macro_recall"] == pytest.approx(sum(rec.values()) / 4)
    assert s["macro_f1"] == pytest.approx(sum(f1.values()) / 4)
    assert s["overall_accuracy"] == pytest.approx(0.6)
    assert s["n"] == 10
    assert s["confusion_matrix"] == [[2, 1, 0, 0, 0], [0, 1, 1, 0, 0], [1, 0, 3, 0, 0], [1, 0, 0, 0, 0],
                                     [0, 0, 0, 0, 0]]


def test_classification_scores_absent_class_predicted_and_perfect():
    s = classification_scores([0, 1, 1], [4, 1, 1])
    assert s["per_class"]["X"]["precision"] == 0.0  # predicted but absent: all false positives
    assert math.isnan(s["per_class"]["X"]["recall"])
    assert s["macro_recall"] == pytest.approx((0 + 1) / 2)  # over A and B only
    perfect = classification_scores([0, 1, 2, 3, 4], [0, 1, 2, 3, 4])
    assert perfect["macro_f1"] == perfect["macro_precision"] == perfect["macro_recall"] == 1.0
    two = classification_scores([0, 1, 1], [0, 1, 0], n_classes=2, class_names=("quiet", "flaring"))
    assert set(two["per_class"]) == {"quiet", "flaring"}
    assert two["per_class"]["quiet"]["precision"] == pytest.approx(0.5)


@pytest.mark.parametrize("y_true,y_pred,match", [
    ([0, 1], [0], "y_pred"),
    ([], [], "non-empty"),
    ([0, 5], [0, 1], "0..4"),
    ([0, 1], [0, -1], "0..4"),
    ([0.5, 1], [0, 1], "integer"),
])
def test_classification_scores_bad_input(y_true, y_pred, match):
    with pytest.raises(ValueError, match=match):
        classification_scores(y_true, y_pred)


def test_score_ratio():
    real = {"macro_f1": 0.54, "macro_precision": 0.57, "macro_recall": 0.5}
    gen = {"macro_f1": 0.378, "macro_precision": 0.399, "macro_recall": 0.0}
    r = score_ratio(gen, real)
    assert r["macro_f1"] == pytest.approx(0.7)
    assert r["macro_precision"] == pytest.approx(0.7)
    assert r["macro_recall"] == 0.0
    r0 = score_ratio(gen, {**real, "macro_recall": 0.0})
    assert math.isnan(r0["macro_recall"])
    with pytest.raises(KeyError, match="macro_f1"):
        score_ratio({"macro_precision": 1, "macro_recall": 1}, real)


def test_class_weights_inverse_frequency():
    w = class_weights(np.array([0, 0, 0, 1]), 3)
    # n / (K n_c) with n = 4, K = 2 present classes
    np.testing.assert_allclose(w, [4 / 6, 4 / 2, 0.0], rtol=1e-6)
    assert w.dtype == np.float32


# ---------------------------------------------------------------- network and training


@pytest.mark.parametrize("size", [16, 64])
def test_flare_classifier_shapes(size):
    net = FlareClassifier(size, width=4).eval()
    x = torch.zeros(3, 1, size, size)
    assert net(x).shape == (3, 5)
    assert net.features(x).shape == (3, net.out_dim)
    with pytest.raises(ValueError, match="image_size"):
        FlareClassifier(4)
    with pytest.raises(ValueError, match=r"\(B, 1, N, N\)"):
        net(torch.zeros(3, 2, size, size))


def test_classifier_learns_and_is_deterministic():
    x, y = blobs(30, seed=0)
    xt, yt = blobs(20, seed=1)
    a = train_classifier(x, y, FAST, progress=False)
    s = classification_scores(yt, a.predict(xt))
    assert s["macro_f1"] > 0.9, s
    assert a.config["train_counts"] == [30] * 5
    b = train_classifier(x, y, FAST, progress=False)
    np.testing.assert_array_equal(a.predict_proba(xt), b.predict_proba(xt))
    c = train_classifier(x, y, ClassifierConfig(**{**FAST.__dict__, "seed": 1, "epochs": 2}), progress=False)
    assert not np.array_equal(a.predict_proba(xt), c.predict_proba(xt))
    p = a.predict_proba(xt)
    assert p.shape == (len(xt), 5) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    np.testing.assert_array_equal(a.predict(xt, batch_size=7), p.argmax(1))
    with pytest.raises(ValueError, match=r"\(n, 1, 16, 16\)"):
        a.predict(np.zeros((2, 1, 32, 32), np.float32))


def test_train_with_workdir_save_load_resume(tmp_path):
    x, y = blobs(12, seed=2)
    xt, _ = blobs(6, seed=3)
    cfg = ClassifierConfig(width=4, epochs=2, batch_size=16)
    clf = train_classifier(x, y, cfg, workdir=tmp_path / "run", progress=False)
    stem = tmp_path / "run" / "classifier"
    assert stem.with_suffix(".safetensors").is_file() and stem.with_suffix(".json").is_file()
    assert (tmp_path / "run" / "checkpoints" / "last.safetensors").is_file()
    loaded = TrainedClassifier.load(stem)
    np.testing.assert_array_equal(loaded.predict_proba(xt), clf.predict_proba(xt))
    assert loaded.config["class_names"] == list(FLARE_CLASSES)
    assert loaded.config["classifier_config"]["epochs"] == 2
    assert "loss" in loaded.config["final_metrics"]
    clf.save(tmp_path / "copy" / "clf")
    np.testing.assert_array_equal(TrainedClassifier.load(tmp_path / "copy" / "clf").predict(xt), clf.predict(xt))
    # finished run: resuming trains nothing and restores the same weights and metrics
    again = train_classifier(x, y, cfg, workdir=tmp_path / "run", progress=False)
    np.testing.assert_array_equal(again.predict_proba(xt), clf.predict_proba(xt))
    assert again.config["final_metrics"] == loaded.config["final_metrics"]


def test_train_bad_input_and_missing_model(tmp_path):
    x, y = blobs(2, seed=0)
    with pytest.raises(ValueError, match="0..4"):
        train_classifier(x, y + 3, FAST, progress=False)
    with pytest.raises(ValueError, match="1-D array of 10"):
        train_classifier(x, y[:-1], FAST, progress=False)
    with pytest.raises(ValueError, match=r"\(n, 1, N, N\)"):
        train_classifier(x[:, 0], y, FAST, progress=False)
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        TrainedClassifier.load(tmp_path / "nothing")


def test_f1_ratio_uses_one_class_set():
    """Defect: the real macro F1 averaged over the test classes, the generated one over the
    generated classes; the ratio compared different sets."""
    from helioforge.diffusion.classifier import chance_scores, common_classes

    y_real = np.array([0, 0, 1, 1, 2, 2])  # A, B, C in the test set
    pred_real = np.array([0, 0, 1, 0, 2, 2])
    gen_classes = [1, 2, 3]  # B, C, M generated
    common = common_classes(y_real, gen_classes)
    assert common == [1, 2]
    real = classification_scores(y_real, pred_real, macro_classes=common)
    assert real["macro_classes"] == ["B", "C"]
    y_gen = np.array([1, 1, 2, 2, 3, 3])
    gen = classification_scores(y_gen, np.array([1, 1, 2, 1, 3, 3]), macro_classes=common)
    assert score_ratio(gen, real)["macro_f1"] == pytest.approx(gen["macro_f1"] / real["macro_f1"])
    # over their own class sets the two would not compare, and score_ratio refuses
    with pytest.raises(ValueError, match="different classes"):
        score_ratio(classification_scores(y_gen, y_gen), classification_scores(y_real, pred_real))
    with pytest.raises(ValueError, match="macro_classes"):
        classification_scores(y_real, pred_real, macro_classes=[])
    # chance: the same predictions against permuted labels sit well below a perfect score
    ch = chance_scores(y_gen, y_gen, [1, 2, 3], n_permutations=50, seed=0)
    assert ch["n_permutations"] == 50 and ch["macro_f1"] < 0.6 and ch["macro_f1_std"] > 0
