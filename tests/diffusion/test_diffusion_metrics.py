"""Evaluation metrics: Fréchet distance, Hackstein et al. (2023) cluster metrics, InceptionV3
features from a local TorchScript file, std maps and the figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from helioforge.diffusion.metrics import (
    InceptionFeatures,
    cluster_metrics,
    frechet_distance,
    inception_fid,
    real_vs_real_cluster_metrics,
    std_maps,
)
from helioforge.diffusion.report import plot_sample_grid, plot_std_maps

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _exact_gaussian_sample(rng, n, mean, var):
    """n samples whose sample mean is exactly ``mean`` and unbiased sample covariance exactly diag(var)."""
    z = rng.standard_normal((n, len(mean)))
    z -= z.mean(0)
    chol = np.linalg.cholesky(np.atleast_2d(np.cov(z, rowvar=False)))
    white = z @ np.linalg.inv(chol).T  # sample covariance = I
    return mean + white * np.sqrt(var)


# --------------------------------------------------------------------------- Fréchet distance
def test_frechet_identical_sets_is_zero():
    x = np.random.default_rng(0).standard_normal((200, 6))
    assert abs(frechet_distance(x, x)) < 1e-8


def test_frechet_matches_analytic_value_for_diagonal_gaussians():
    rng = np.random.default_rng(1)
    mu_a, mu_b = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, -0.5])
    var_a, var_b = np.array([1.0, 4.0, 0.25, 2.0]), np.array([9.0, 1.0, 0.25, 0.5])
    a = _exact_gaussian_sample(rng, 500, mu_a, var_a)
    b = _exact_gaussian_sample(rng, 300, mu_b, var_b)
    # diagonal case: ||Δμ||² + Σ (σa − σb)²
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(b, a) == pytest.approx(frechet_distance(a, b), rel=1e-10)


def test_frechet_one_dimensional_and_singular():
    rng = np.random.default_rng(2)
    a = _exact_gaussian_sample(rng, 50, np.array([0.0]), np.array([4.0]))
    b = _exact_gaussian_sample(rng, 60, np.array([3.0]), np.array([1.0]))
    assert frechet_distance(a, b) == pytest.approx(9.0 + 1.0, rel=1e-8)
    # fewer samples than dimensions: singular covariances still give a finite, ~zero self-distance
    few = rng.standard_normal((5, 20))
    assert abs(frechet_distance(few, few)) < 1e-3


def test_frechet_bad_input():
    x = np.zeros((10, 3))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(x[:1], x)
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(x, np.zeros((10, 4)))
    with pytest.raises(ValueError, match="2-D"):
        frechet_distance(np.zeros(10), x)
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full((10, 3), np.nan), x)


# --------------------------------------------------------------------------- cluster metrics
CENTRES = 50.0 * np.eye(5, 8)  # 5 well-separated centres in 8-D


def _blobs(rng, n, spread=1.0, weights=None):
    lab = rng.choice(5, size=n, p=weights)
    return CENTRES[lab] + spread * rng.standard_normal((n, 8))


def test_cluster_metrics_same_distribution_gives_gt_values():
    rng = np.random.default_rng(0)
    real, gen = _blobs(rng, 2000), _blobs(rng, 2000)
    m = cluster_metrics(real, gen, k=5, seed=0)
    # sampling noise of the fractions: E ≈ Σ (1−p)/p (1/n_r + 1/n_g) ≈ 0.02
    assert m["cluster_error"] < 0.1
    assert m["cluster_distance"] == pytest.approx(1.0, abs=0.03)
    assert m["cluster_std"] == pytest.approx(1.0, abs=0.06)
    assert sum(m["real_fraction"]) == pytest.approx(1.0) and sum(m["gen_fraction"]) == pytest.approx(1.0)
    assert len(m["cluster_distance_per_cluster"]) == 5 and m["k"] == 5


def test_cluster_metrics_mode_collapse_gives_analytic_error():
    rng = np.random.default_rng(1)
    real = _blobs(rng, 1000)
    gen = CENTRES[2] + rng.standard_normal((300, 8))  # every sample in one cluster
    m = cluster_metrics(real, gen, k=5, seed=0)
    j = int(np.argmax(m["gen_fraction"]))
    f = m["real_fraction"][j]
    assert m["gen_fraction"][j] == 1.0
    assert m["cluster_error"] == pytest.approx((1 - f) ** 2 / f**2 + 4, rel=1e-12)
    assert m["cluster_error"] > 15  # ≈ 20 for five equal clusters
    assert np.isnan(m["cluster_distance_per_cluster"][(j + 1) % 5])  # empty generated clusters


def test_cluster_metrics_doubled_spread_gives_distance_and_std_two():
    rng = np.random.default_rng(2)
    real = _blobs(rng, 1000)
    km = KMeans(n_clusters=5, n_init=10, random_state=0).fit(real)  # the same fit cluster_metrics makes
    c = km.cluster_centers_[km.predict(real)]
    gen = c + 2.0 * (real - c)  # every distance to the nearest centre exactly doubled
    m = cluster_metrics(real, gen, k=5, seed=0)
    assert m["cluster_error"] == pytest.approx(0.0, abs=1e-15)
    assert m["cluster_distance"] == pytest.approx(2.0, rel=1e-9)
    assert m["cluster_std"] == pytest.approx(2.0, rel=1e-9)
    np.testing.assert_allclose(m["cluster_distance_per_cluster"], 2.0, rtol=1e-9)
    np.testing.assert_allclose(m["cluster_std_per_cluster"], 2.0, rtol=1e-9)


def test_cluster_metrics_error_is_size_independent_fractions():
    rng = np.random.default_rng(3)
    real = _blobs(rng, 500)
    # the real set repeated: identical fractions and distance distribution at another size
    m = cluster_metrics(real, np.concatenate([real, real, real]), k=5, seed=0)
    assert m["cluster_error"] == pytest.approx(0.0, abs=1e-15)
    assert m["cluster_distance"] == pytest.approx(1.0, rel=1e-12)
    assert m["cluster_std"] == pytest.approx(1.0, rel=1e-12)


def test_real_vs_real_gt_row():
    rng = np.random.default_rng(4)
    real = _blobs(rng, 2000, weights=[0.4, 0.3, 0.15, 0.1, 0.05])
    gt = real_vs_real_cluster_metrics(real, k=5, seed=0, repeats=4)
    assert gt["repeats"] == 4 and gt["n_half"] == 1000
    assert gt["cluster_error"]["mean"] < 0.15
    assert gt["cluster_distance"]["mean"] == pytest.approx(1.0, abs=0.03)
    assert gt["cluster_std"]["mean"] == pytest.approx(1.0, abs=0.08)
    assert gt["cluster_error"]["std"] >= 0


@pytest.mark.filterwarnings("ignore:Number of distinct clusters")
def test_cluster_metrics_bad_input():
    real = np.random.default_rng(5).standard_normal((20, 3))
    with pytest.raises(ValueError, match="at least k=5"):
        cluster_metrics(real[:3], real)
    with pytest.raises(ValueError, match="dimensions differ"):
        cluster_metrics(real, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="no generated"):
        cluster_metrics(real, np.zeros((0, 3)))
    with pytest.raises(ValueError, match="empty cluster"):
        cluster_metrics(np.zeros((20, 3)), real)
    with pytest.raises(ValueError, match="2k=10"):
        real_vs_real_cluster_metrics(real[:8])


# --------------------------------------------------------------------------- Inception features
class _FakeInception(torch.nn.Module):
    """Stands in for inception-2015-12-05.pt: same call signature, 12-d features of the
    2×2-pooled RGB channels; checks what StyleGAN2-ADA's network expects."""

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        assert img.dtype == torch.uint8
        assert img.shape[1] == 3 and img.shape[2] == 299 and img.shape[3] == 299
        x = torch.nn.functional.adaptive_avg_pool2d(img.to(torch.float32), 2).flatten(1)
        if return_features:
            return x
        return x[:, :1] * 0.0  # "logits": would make every FID zero


@pytest.fixture(scope="module")
def fake_inception(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "inception-2015-12-05.pt"
    torch.jit.script(_FakeInception()).save(str(path))
    return path


def test_inception_features_conversion_and_batching(fake_inception):
    ext = InceptionFeatures(fake_inception, device="cpu", batch_size=3)
    imgs = np.full((7, 1, 16, 16), -1.0, dtype=np.float32)
    imgs[:, :, :8, :] = 1.0  # top half (rows 0..7) white, bottom half black
    imgs[3] = 0.0  # uniform mid-grey
    f = ext(imgs)
    assert f.shape == (7, 12) and f.dtype == np.float64
    # all three channels equal; uint8 range; the 2×2 pooling sees white rows 0..148, black rows 150..298
    rgb = f.reshape(7, 3, 4)
    np.testing.assert_array_equal(rgb[:, 0], rgb[:, 1])
    np.testing.assert_array_equal(rgb[:, 0], rgb[:, 2])
    assert rgb[0, 0, 0] > 250 and rgb[0, 0, 2] < 5
    np.testing.assert_allclose(rgb[3], 128.0)  # (0 + 1) · 127.5 = 127.5 → rounds to 128
    # batching does not change the features
    np.testing.assert_array_equal(InceptionFeatures(fake_inception, device="cpu", batch_size=64)(imgs), f)


def test_inception_uint8_conversion_values():
    x = torch.zeros(1, 1, 299, 299)  # already 299×299: no resize
    x[..., :5] = torch.tensor([-1.0, -0.5, 0.0, 1.0, 2.0])
    u = InceptionFeatures.to_uint8_rgb(x)
    assert u.dtype == torch.uint8 and u.shape == (1, 3, 299, 299)
    assert u[0, 0, 0, :5].tolist() == [0, 64, 128, 255, 255]


def test_inception_fid_of_identical_and_different_sets(fake_inception):
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (20, 1, 8, 8)).astype(np.float32)
    b = np.clip(a + 0.5, -1, 1)
    assert abs(inception_fid(a, a, fake_inception, device="cpu")) < 1e-3  # sqrtm round-off on ~1e3 traces
    assert inception_fid(a, b, fake_inception, device="cpu") > 100


def test_inception_missing_and_bad_file(tmp_path):
    missing = tmp_path / "nope" / "inception-2015-12-05.pt"
    with pytest.raises(FileNotFoundError, match="inception-2015-12-05.pt.*nvlabs"):
        InceptionFeatures(missing)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torchscript archive")
    with pytest.raises(ValueError, match="not a TorchScript"):
        InceptionFeatures(bad)


# --------------------------------------------------------------------------- std maps and figures
def test_std_maps_known_answer():
    img = np.zeros((6, 1, 4, 4))
    img[0, 0, 1, 2], img[1, 0, 1, 2] = 1.0, -1.0  # class 0: pixel (1,2) is ±1, rest 0
    img[2:5] = 0.3  # class 2: three identical images
    img[5, 0] = 0.7  # class 4: a single image
    labels = np.array([0, 0, 2, 2, 2, 4])
    maps = std_maps(img, labels, n_classes=5)
    assert maps.shape == (5, 4, 4)
    expected0 = np.zeros((4, 4))
    expected0[1, 2] = np.sqrt(2.0)  # sample std (ddof=1) of {1, −1}
    np.testing.assert_allclose(maps[0], expected0)
    np.testing.assert_allclose(maps[2], 0.0, atol=1e-15)
    assert np.isnan(maps[1]).all() and np.isnan(maps[3]).all() and np.isnan(maps[4]).all()


def test_std_maps_bad_input():
    img = np.zeros((3, 1, 4, 4))
    with pytest.raises(ValueError, match="labels must be"):
        std_maps(img, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        std_maps(img, np.array([0, 1, 5]))
    with pytest.raises(ValueError, match=r"\(n, 1, N, N\)"):
        std_maps(np.zeros((3, 4, 4)), np.array([0, 1, 2]))


def test_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.uniform(-1, 1, (12, 1, 8, 8))
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2, 4])  # class 3 absent, class 4 single
    names = ["A", "B", "C", "M", "X"]
    real, gen = std_maps(imgs, labels), std_maps(imgs[::-1], labels)
    p1 = plot_std_maps(real, gen, names, tmp_path / "fig4.png")
    p2 = plot_sample_grid(imgs, labels, names, tmp_path / "sub" / "fig5.png", per_class=3)
    for p in (p1, p2):
        assert p.read_bytes()[:8] == PNG_MAGIC
    assert not [q for q in tmp_path.rglob(".*")]  # no temporary files left behind
    with pytest.raises(ValueError, match="class names"):
        plot_std_maps(real, gen, names[:4], tmp_path / "x.png")
