"""Tests of the fast :func:`helioforge.physics.params.compute_params` (issue 16, part 2): the
fused CPU kernel and the max-pool dilation of the torch (accelerator) path against the
independent NumPy/SciPy :func:`reference_params` loop and against each other.

Source of the definitions: Chatterjee et al. (2025), "Interpretable Generation of Magnetic
Patches" (TUF, TPF, TNF, PSEP, R after Schrijver 2007); authors' ``utils.calculate_srij_R``
(R with a k×k square kernel).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from helioforge.physics.params import (
    PARAM_NAMES,
    _compute_params_torch,
    _dilate,
    _dilate_maxpool,
    compute_params,
    reference_params,
)

RTOL = 1e-6


def assert_matches_reference(out: dict, images: np.ndarray, rtol: float = RTOL, **kw) -> None:
    """``out`` (a compute_params result for ``images`` (B, H, W)) equals the reference loop."""
    for i in range(images.shape[0]):
        ref = reference_params(images[i], **kw)
        for key in PARAM_NAMES:
            a, b = float(out[key][i]), ref[key]
            if math.isnan(b):
                assert math.isnan(a), (key, i, a)
            else:
                assert a == pytest.approx(b, rel=rtol, abs=1e-9), (key, i, a, b)


def smooth_fields(n: int, size: int, seed: int, width: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.standard_normal((n, size, width or size))
    out = np.stack([ndimage.gaussian_filter(r, 3.0) for r in raw])
    return out / np.abs(out).max(axis=(1, 2), keepdims=True)


# --------------------------------------------------------------------------------------------
# real SHARP patches
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sharp_images(sharp_dir):
    """The real SHARP Br frames preprocessed as the interrogator does (128 and 64 px)."""
    from helioforge.data.preprocess import preprocess_br
    from helioforge.data.sharp import read_sharp_folder

    patches, _ = read_sharp_folder(sharp_dir)
    if len(patches) < 10:
        pytest.skip(f"only {len(patches)} SHARP Br frames in {sharp_dir}")
    return {n: np.stack([preprocess_br(p.Br, n) for p in patches]) for n in (128, 64)}, patches


@pytest.mark.parametrize("size,k", [(128, 7), (64, 3), (64, 5)])
def test_real_sharp_patches_match_reference(sharp_images, size, k):
    images = sharp_images[0][size]
    for dtype in (np.float32, np.float64):
        x = images.astype(dtype)
        out = compute_params(torch.from_numpy(x)[:, None], threshold=0.15, dilation_px=k)
        assert_matches_reference(out, x, threshold=0.15, dilation_px=k)
        old = _compute_params_torch(torch.from_numpy(x), threshold=0.15, dilation_px=k, dilate="maxpool")
        for key in PARAM_NAMES:
            torch.testing.assert_close(out[key], old[key], rtol=1e-9, atol=1e-12, equal_nan=True)
    assert (out["R"] > 0).sum() >= len(images) // 2  # real active regions: R mostly non-zero


def test_real_native_patches_match_reference(sharp_images):
    """Native-resolution patches in Gauss (rectangular, ~10⁵ pixels, 150 G threshold, 11 px)."""
    patches = sharp_images[1][:4]
    for p in patches:
        br = np.nan_to_num(np.asarray(p.Br, dtype=np.float64))
        out = compute_params(br[None], threshold=150.0, dilation_px=11)
        assert_matches_reference(out, br[None], threshold=150.0, dilation_px=11)


# --------------------------------------------------------------------------------------------
# analytic cases
# --------------------------------------------------------------------------------------------
def test_bipole_with_known_flux():
    """Two uniform 6×6 blocks of ±0.5, 4 empty columns apart: every parameter by hand."""
    img = np.zeros((40, 50))
    img[10:16, 10:16] = 0.5  # positive, columns 10..15 (centroid x = 12.5, y = 12.5)
    img[10:16, 20:26] = -0.5  # negative, columns 20..25 (centroid x = 22.5)
    k = 7
    out = compute_params(img[None], threshold=0.15, dilation_px=k)
    flux = 0.5 * 36
    assert float(out["TUF"][0]) == 2 * flux
    assert float(out["TPF"][0]) == flux
    assert float(out["TNF"][0]) == flux
    assert float(out["PSEP"][0]) == pytest.approx(10.0, abs=1e-12)
    assert float(out["tilt"][0]) == pytest.approx(0.0, abs=1e-12)
    assert float(out["leading_sign"][0]) == -1.0  # the negative block is west (larger x)
    # gap of 4 columns (16..19): dilated by 3 each side, the masks overlap on columns 17..18
    # only in the gap, where |B| = 0, so R = 0; a weak 0.1 field in the gap enters R
    assert float(out["R"][0]) == 0.0
    img[10:16, 16:20] = 0.1
    out = compute_params(img[None], threshold=0.15, dilation_px=k)
    assert float(out["R"][0]) == pytest.approx(0.1 * 6 * 2, rel=1e-12)  # columns 17, 18 × 6 rows
    assert float(out["TUF"][0]) == pytest.approx(2 * flux + 0.1 * 24, rel=1e-12)
    assert_matches_reference(out, img[None], threshold=0.15, dilation_px=k)


def test_field_below_threshold_gives_zeros():
    rng = np.random.default_rng(3)
    img = rng.uniform(-0.149, 0.149, size=(3, 33, 31))
    out = compute_params(img, threshold=0.15, dilation_px=7)
    np.testing.assert_allclose(out["TUF"].numpy(), np.abs(img).sum(axis=(1, 2)), rtol=1e-12)
    for key in ("TPF", "TNF", "R", "leading_sign"):
        assert (out[key] == 0).all(), key
    assert torch.isnan(out["PSEP"]).all() and torch.isnan(out["tilt"]).all()
    assert_matches_reference(out, img, threshold=0.15, dilation_px=7)


def test_nan_pixel_propagates_into_tuf_as_before():
    img = smooth_fields(2, 24, seed=5)
    img[0, 3, 4] = np.nan
    new = compute_params(img)
    old = _compute_params_torch(img)
    for key in PARAM_NAMES:
        torch.testing.assert_close(new[key], old[key], rtol=1e-9, atol=1e-12, equal_nan=True)
    assert math.isnan(float(new["TUF"][0])) and math.isfinite(float(new["TUF"][1]))


# --------------------------------------------------------------------------------------------
# dilation: max-pool == the previous shifted-OR dilation == scipy, bit for bit
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3, 5, 7, 9, 11, 15, 31])
@pytest.mark.parametrize("density", [0.01, 0.1, 0.5])
def test_maxpool_dilation_equals_previous_dilation(k, density):
    """The kernel is a k×k square (not a disk), so max-pooling with a k×k window, stride 1 and
    padding k//2 is exactly the same morphological dilation with a zero border."""
    rng = np.random.default_rng(int(k * 100 + density * 1000))
    m = rng.random((5, 2, 23, 30)) < density
    m[0, 0, 0, 0] = m[1, 1, -1, -1] = m[2, 0, 0, -1] = True  # corners: the border
    t = torch.from_numpy(m)
    pooled = _dilate_maxpool(t, k)
    previous = _dilate(t, k).bool()
    assert pooled.dtype == torch.bool and pooled.shape == t.shape
    assert torch.equal(pooled, previous)
    ref = np.stack([[ndimage.binary_dilation(c, np.ones((k, k), bool)) for c in mm] for mm in m])
    np.testing.assert_array_equal(pooled.numpy(), ref)


@pytest.mark.parametrize("k", [3, 7])
def test_torch_paths_with_either_dilation_agree(k):
    imgs = smooth_fields(7, 37, seed=k)
    a = _compute_params_torch(imgs, dilation_px=k, dilate="shift")
    b = _compute_params_torch(imgs, dilation_px=k, dilate="maxpool")
    c = compute_params(imgs, dilation_px=k)
    for key in PARAM_NAMES:
        assert torch.equal(a[key].nan_to_num(7.0), b[key].nan_to_num(7.0)), key
        torch.testing.assert_close(c[key], a[key], rtol=1e-9, atol=1e-12, equal_nan=True)


# --------------------------------------------------------------------------------------------
# batch sizes, dtypes, definitions, threads
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3, 17, 33])
def test_batch_sizes_and_per_image_equality(n):
    """Odd batch sizes (the threaded split gives uneven chunks) and batch == per image."""
    imgs = smooth_fields(n, 29, seed=n, width=35).astype(np.float32)
    out = compute_params(torch.from_numpy(imgs)[:, None], dilation_px=5)
    for key in PARAM_NAMES:
        assert out[key].shape == (n,) and out[key].dtype == torch.float64
    assert_matches_reference(out, imgs, dilation_px=5)
    for i in (0, n - 1):
        single = compute_params(imgs[i : i + 1], dilation_px=5)
        for key in PARAM_NAMES:
            torch.testing.assert_close(out[key][i : i + 1], single[key], rtol=0, atol=0, equal_nan=True)


def test_threads_do_not_change_values():
    imgs = smooth_fields(40, 32, seed=11)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = compute_params(imgs)
        torch.set_num_threads(2)
        two = compute_params(imgs)
    finally:
        torch.set_num_threads(before)
    for key in PARAM_NAMES:
        torch.testing.assert_close(one[key], two[key], rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("definition", ["paper", "authors_code"])
def test_definitions_and_scales_match_old_path(definition):
    imgs = smooth_fields(9, 30, seed=2)
    imgs[4] = np.abs(imgs[4])  # unipolar: NaN PSEP / tilt, NaN authors' TNF
    imgs[5] = 0.0  # empty
    kw = dict(threshold=0.2, dilation_px=3, pixel_size=0.5, field_scale=1000.0, definition=definition)
    new = compute_params(imgs, **kw)
    old = _compute_params_torch(imgs, **kw)
    for key in PARAM_NAMES:
        torch.testing.assert_close(new[key], old[key], rtol=1e-9, atol=1e-9, equal_nan=True)
    ref = compute_params(imgs, threshold=0.2, dilation_px=3, definition=definition)
    assert_matches_reference(ref, imgs, threshold=0.2, dilation_px=3, definition=definition)


def test_half_and_noncontiguous_input():
    imgs = torch.from_numpy(smooth_fields(4, 32, seed=8)).float()
    nc = imgs.transpose(1, 2)  # non-contiguous view
    out = compute_params(nc)
    assert_matches_reference(out, nc.contiguous().numpy())
    h = compute_params(imgs.half())
    assert_matches_reference(h, imgs.half().float().numpy())


# --------------------------------------------------------------------------------------------
# bad input still errors as before
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(8, 8),
        torch.zeros(1, 1, 1, 8, 8),
        torch.zeros(2, 3, 8, 8),
        torch.zeros(2, 8, 8, dtype=torch.int32),
        np.zeros((2, 8, 8), dtype=np.int64),
        torch.zeros(2, 0, 8),
        [[[0.0]]],
    ],
)
def test_bad_input_errors(bad):
    with pytest.raises(ValueError):
        compute_params(bad)
    with pytest.raises(ValueError):
        _compute_params_torch(bad)


@pytest.mark.parametrize(
    "kw",
    [{"dilation_px": 4}, {"dilation_px": 0}, {"dilation_px": 2.5}, {"threshold": -0.1},
     {"threshold": float("nan")}, {"definition": "nope"}],
)
def test_bad_options_error(kw):
    with pytest.raises(ValueError):
        compute_params(torch.zeros(1, 8, 8), **kw)
