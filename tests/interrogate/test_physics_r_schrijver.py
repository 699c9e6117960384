"""Tests of :func:`helioforge.physics.params.schrijver_r` — Schrijver's (2007) R in Mx on
native patches — against hand-computed cases and the SHARP header ``R_VALUE`` of the real
sample frames (issue 11, item 4).

Source of the definition: Schrijver (2007, ApJ 655, L117); Bobra et al. (2014, Sol. Phys. 289,
3549) for ``R_VALUE`` (line-of-sight field binned to MDI-like 2″ pixels, 3×3 dilation,
Gaussian of ~15 Mm FWHM).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.stats import rankdata, spearmanr

from helioforge.physics.params import (
    SCHRIJVER_NAMES,
    param_definitions,
    param_units,
    physical_params,
    schrijver_r,
)

CM_PER_MM = 1e8


def bipole_halves(ny: int, nx: int, b0: float, gap: int = 0) -> np.ndarray:
    """Left part +b0, right part −b0, ``gap`` empty columns between them, centred."""
    img = np.zeros((ny, nx))
    left = (nx - gap) // 2
    img[:, :left] = b0
    img[:, left + gap :] = -b0
    return img


# --------------------------------------------------------------------------------------------
# hand-computed cases
# --------------------------------------------------------------------------------------------
def test_straight_pil_weight_integrates_exactly():
    """A straight PIL across the whole patch, far from the side edges: the k = 3 dilation
    gives a PIL map of 2 columns × ny rows; the normalised Gaussian (reflect mode) keeps
    ΣW = 2·ny exactly because the map is uniform along y; |B| = b0 everywhere, so
    R = b0 · 2·ny · (pixel area)."""
    ny, nx, b0, px = 40, 120, 400.0, 1.0
    img = bipole_halves(ny, nx, b0)
    out = schrijver_r(img, px, bin_mm=None, fwhm_mm=6.0, dilation_mm=3.0, return_maps=True)
    assert out["bin_factor"] == 1 and out["dilation_px"] == 3
    assert out["sigma_px"] == pytest.approx(6.0 / 2.3548, rel=1e-4)
    cols = np.unique(np.nonzero(out["pil"])[1])
    assert cols.tolist() == [nx // 2 - 1, nx // 2]
    assert out["weight"].sum() == pytest.approx(2 * ny, rel=1e-12)
    expect = b0 * 2 * ny * (px * CM_PER_MM) ** 2
    assert out["R_schrijver_Mx"] == pytest.approx(expect, rel=1e-12)
    assert out["R_schrijver"] == pytest.approx(math.log10(expect), abs=1e-12)
    assert out["R_schrijver_sharp"] == pytest.approx(math.log10(b0 * 2 * ny), abs=1e-12)


def test_gap_dependence_on_binned_pixels():
    """3×3 dilation (reach 1 px): the PIL exists iff the gap between the strong-field
    polarities is < 2 binned pixels; then R > 0, else R = 0 (-inf in log10, 0 in SHARP's
    convention)."""
    for gap in range(0, 5):
        img = bipole_halves(30, 60, 500.0, gap=gap)
        out = schrijver_r(img, 1.44, bin_mm=1.44)
        assert out["bin_factor"] == 1 and out["dilation_px"] == 3
        if gap < 2:
            assert out["R_schrijver_Mx"] > 0 and math.isfinite(out["R_schrijver"]), gap
        else:
            assert out["R_schrijver_Mx"] == 0.0 and out["R_schrijver"] == -math.inf, gap
            assert out["R_schrijver_sharp"] == 0.0


def test_binning_equals_block_mean_input():
    """Binning by f = round(1.44 / 0.364) = 4 is a block mean: a field constant on 4×4 blocks
    gives the same R as the small field given directly at the binned pixel size; partial
    blocks are zero-padded (as skimage.measure.block_reduce in SHARP's code)."""
    rng = np.random.default_rng(0)
    small = ndimage.gaussian_filter(rng.standard_normal((30, 45)), 2.0)
    small *= 900.0 / np.abs(small).max()
    px = 0.3644
    big = np.kron(small, np.ones((4, 4)))
    a = schrijver_r(big, px)
    b = schrijver_r(small, 4 * px, bin_mm=None)
    assert a["bin_factor"] == 4 and a["pixel_mm"] == pytest.approx(4 * px)
    assert a["dilation_px"] == b["dilation_px"] == 3
    assert a["R_schrijver_Mx"] > 0
    assert a["R_schrijver_Mx"] == pytest.approx(b["R_schrijver_Mx"], rel=1e-12)
    # partial last blocks: (118, 178) → (30, 45) binned pixels; the last row / column of
    # blocks holds 2 of 4 rows / columns, the others count as zero
    maps = schrijver_r(big[:118, :178], px, return_maps=True)["field"]
    assert maps.shape == (30, 45)
    np.testing.assert_allclose(maps[:29, :44], small[:29, :44], rtol=1e-12)
    np.testing.assert_allclose(maps[29, :44], small[29, :44] / 2, rtol=1e-12)
    np.testing.assert_allclose(maps[:29, 44], small[:29, 44] / 2, rtol=1e-12)
    assert maps[29, 44] == pytest.approx(small[29, 44] / 4, rel=1e-12)


def test_scaling_and_nan():
    img = bipole_halves(40, 80, 300.0)
    img[0, 0] = np.nan  # NaN → 0 (a strong-field pixel becomes empty)
    base = schrijver_r(img, 1.0, bin_mm=None, dilation_mm=3.0)
    double = schrijver_r(2 * img, 1.0, bin_mm=None, dilation_mm=3.0)
    assert double["R_schrijver_Mx"] == pytest.approx(2 * base["R_schrijver_Mx"], rel=1e-12)
    assert double["R_schrijver"] == pytest.approx(base["R_schrijver"] + math.log10(2), abs=1e-12)
    # doubling the pixel size with every length in Mm doubled: same pixels, 4× the area
    big = schrijver_r(img, 2.0, bin_mm=None, dilation_mm=6.0, fwhm_mm=30.0)
    assert big["R_schrijver_Mx"] == pytest.approx(4 * base["R_schrijver_Mx"], rel=1e-12)
    # unipolar: no PIL
    uni = schrijver_r(np.abs(img), 1.0)
    assert uni["R_schrijver_Mx"] == 0.0 and uni["R_schrijver"] == -math.inf and uni["R_schrijver_sharp"] == 0.0


def test_mask_and_physical_params_keys():
    img = bipole_halves(40, 80, 300.0)
    mask = np.zeros(img.shape, bool)
    mask[:, :40] = True  # keep the positive half only
    assert schrijver_r(img, 1.44, mask=mask)["R_schrijver_Mx"] == 0.0
    p = physical_params(img, 0.364)
    r = schrijver_r(img, 0.364)
    for key in SCHRIJVER_NAMES:
        assert p[key] == r[key]
    assert "R_schrijver" not in physical_params(img, 0.364, schrijver=False)
    assert param_units("physical")["R_schrijver"] == "log10(Mx)"
    assert "Schrijver (2007)" in param_definitions()["R_schrijver"]


@pytest.mark.parametrize(
    "kw",
    [
        {"pixel_size_mm": 0.0},
        {"pixel_size_mm": float("nan")},
        {"fwhm_mm": -1.0},
        {"bin_mm": 0.0},
        {"dilation_mm": 0.0},
        {"threshold_gauss": -1.0},
        {"mask": np.ones((3, 3), bool)},
    ],
)
def test_bad_options(kw):
    args = {"pixel_size_mm": 0.364, **kw}
    with pytest.raises(ValueError):
        schrijver_r(np.zeros((8, 8)), **args)


@pytest.mark.parametrize("bad", [np.zeros(8), np.zeros((2, 8, 8)), np.zeros((8, 8), dtype=int), np.zeros((0, 8))])
def test_bad_input(bad):
    with pytest.raises(ValueError):
        schrijver_r(bad, 0.364)


# --------------------------------------------------------------------------------------------
# real data: R_schrijver against the SHARP header R_VALUE
# --------------------------------------------------------------------------------------------
def _spearman_boot(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Spearman ρ of (x, y) on each row of resampled indices ``idx`` (n_boot, n): Pearson of
    average ranks; NaN where a resample is constant."""
    rx = rankdata(x[idx], axis=1)
    ry = rankdata(y[idx], axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(axis=1) / den


@pytest.fixture(scope="module")
def frames(sharp_dir):
    """(harp, R_VALUE, R_schrijver(Br), R_schrijver(Br, unbinned), log10 USFLUX,
    R_schrijver_sharp(LOS) or NaN) for every Br frame with a finite R_VALUE."""
    from helioforge.data.sharp import read_sharp_folder

    patches, _ = read_sharp_folder(sharp_dir)
    rows = []
    for p in patches:
        if p.r_value is None or not math.isfinite(p.r_value) or p.usflux is None:
            continue
        br = schrijver_r(p.Br, p.pixel_size_mm)
        native = schrijver_r(p.Br, p.pixel_size_mm, bin_mm=None)
        los = schrijver_r(p.magnetogram, p.pixel_size_mm)["R_schrijver_sharp"] if p.magnetogram is not None else math.nan
        assert br["bin_factor"] == 4 and br["dilation_px"] == 3, p.path.name
        rows.append((p.harpnum, p.r_value, br["R_schrijver"], native["R_schrijver"], math.log10(p.usflux), los))
    if len(rows) < 10:
        pytest.skip(f"only {len(rows)} SHARP Br frames with a finite R_VALUE in {sharp_dir}")
    return np.array(rows, dtype=np.float64)


def test_los_reproduces_header_r_value(frames):
    """Validation of the implementation: on the line-of-sight magnetogram (what SHARP uses)
    the SHARP-convention value reproduces the header R_VALUE itself, not just its ranking
    (measured on 27 frames: ρ = 0.96, 26 of 27 within 0.25 dex, median |Δ| = 0; most of
    these frames have R_VALUE = 0 — no strong-field PIL — and so do we)."""
    m = np.isfinite(frames[:, 5])
    los, rv = frames[m, 5], frames[m, 1]
    assert m.sum() >= 20
    rho = spearmanr(los, rv).statistic
    diff = np.abs(los - rv)
    print(f"\nLOS R (SHARP convention) vs R_VALUE on {m.sum()} frames: rho = {rho:.3f}, "
          f"median |diff| = {np.median(diff):.3f} dex, within 0.25 dex: {(diff <= 0.25).sum()}/{m.sum()}")
    assert rho >= 0.9
    assert np.median(diff) <= 0.05
    assert (diff <= 0.25).mean() >= 0.9
    both = (los > 0) & (rv > 0)  # frames where both find a PIL: the values themselves agree
    assert both.sum() >= 5 and np.abs(los[both] - rv[both]).max() <= 0.25


def test_r_schrijver_on_br_tracks_header_r_value(frames):
    """Issue 11 item 4: Spearman ρ(R_schrijver on Br, R_VALUE) over the Br frames with a finite
    R_VALUE, a bootstrap 95 % interval over frames (2000 resamples), and the trivial baseline
    log10 USFLUX vs R_VALUE on the same frames and resamples.

    Measured (38 frames of 15 HARPs; HARP 377 has R_VALUE = nan): ρ = 0.69 [0.40, 0.88]
    against the USFLUX baseline 0.56 [0.23, 0.78] (paired difference [-0.09, 0.40]: better,
    not significantly); without the 1.44 Mm binning (native 0.36 Mm pixels, 11 px dilation)
    only 0.32. 22 of the 38 headers hold R_VALUE = 0 (SHARP's value when the sum is < 1); on
    the 16 others ρ = 0.90 (USFLUX 0.84). R_VALUE is computed on the line-of-sight field (see
    the test above); Br is noisier and differs near the limb, hence ρ < 0.96 here."""
    rv, rs, native, usflux = frames[:, 1], frames[:, 2], frames[:, 3], frames[:, 4]
    n = len(rv)
    rho = spearmanr(rs, rv).statistic
    rho_native = spearmanr(native, rv).statistic
    rho_base = spearmanr(usflux, rv).statistic
    idx = np.random.default_rng(0).integers(0, n, size=(2000, n))
    boot = _spearman_boot(rs, rv, idx)
    boot_base = _spearman_boot(usflux, rv, idx)
    lo, hi = np.nanpercentile(boot, [2.5, 97.5])
    blo, bhi = np.nanpercentile(boot_base, [2.5, 97.5])
    dlo, dhi = np.nanpercentile(boot - boot_base, [2.5, 97.5])
    print(f"\nSpearman rho(R_schrijver[Br], R_VALUE) = {rho:.3f} [{lo:.3f}, {hi:.3f}] on n = {n} frames "
          f"({len(np.unique(frames[:, 0]))} HARPs); baseline log10 USFLUX: {rho_base:.3f} [{blo:.3f}, {bhi:.3f}]; "
          f"difference [{dlo:.3f}, {dhi:.3f}]; unbinned native pixels: {rho_native:.3f}")
    assert n == 38
    assert rho >= 0.6
    assert lo >= 0.3
    assert rho > rho_base
    assert rho > rho_native
    nz = rv > 0
    rho_nz = spearmanr(rs[nz], rv[nz]).statistic
    print(f"on the {nz.sum()} frames with R_VALUE > 0: rho = {rho_nz:.3f} "
          f"(USFLUX {spearmanr(usflux[nz], rv[nz]).statistic:.3f})")
    assert rho_nz >= 0.8
