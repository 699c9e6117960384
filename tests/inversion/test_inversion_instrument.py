"""Hinode SP degradation chain: analytic cases, comparisons with scipy, autograd."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from helioforge.inversion.instrument import (
    HinodeSP,
    add_noise,
    normalise_continuum,
    quiet_sun_continuum,
    rebin,
    rebin_matrix,
    spatial_degrade,
    spectral_degrade,
    spectral_matrix,
)

# fine synthesis grid: 2 mÅ step, covering the Hinode grid plus > 0.07 Å on each side
WAV_FINE = np.round(np.arange(6300.80, 6303.36, 0.002), 6)


@pytest.fixture(scope="module")
def sp(data_dir: Path) -> HinodeSP:
    if not (data_dir / "stokes" / "instrument").is_dir():
        pytest.skip(f"{data_dir}/stokes/instrument missing")
    return HinodeSP.from_data(data_dir)


def _gauss_line(wav, centre, depth, sigma):
    return 1.0 - depth * np.exp(-0.5 * ((wav - centre) / sigma) ** 2)


# ---------------------------------------------------------------------------- spectral
def test_spectral_constant_unchanged_including_edges(sp):
    stokes = torch.ones(3, 4, WAV_FINE.size, dtype=torch.float64) * torch.tensor([1.0, 0.1, -0.2, 0.0])[:, None]
    out = spectral_degrade(stokes, WAV_FINE, sp.wavelengths, sp.profile)
    assert out.shape == (3, 4, 112)
    torch.testing.assert_close(out, stokes[..., :112], rtol=0, atol=1e-13)
    # output points at the very edge of the fine grid: truncated kernel, renormalised
    edge = spectral_degrade(torch.ones(WAV_FINE.size, dtype=torch.float64), WAV_FINE, WAV_FINE[[0, -1]], sp.profile)
    torch.testing.assert_close(edge, torch.ones(2, dtype=torch.float64))
    m = spectral_matrix(WAV_FINE, sp.wavelengths, sp.profile)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-13)


def test_spectral_delta_line_gives_instrument_profile(sp):
    j0 = int(np.argmin(np.abs(WAV_FINE - 6301.5)))
    spec = np.ones(WAV_FINE.size)
    spec[j0] = 0.0  # delta-like absorption of equivalent width 2 mÅ
    wav_out = WAV_FINE[j0 - 40 : j0 + 41]
    out = spectral_degrade(torch.tensor(spec), WAV_FINE, wav_out, sp.profile).numpy()
    dl, tr = sp.profile
    expected = np.interp(wav_out - WAV_FINE[j0], dl, tr, left=0, right=0) * 0.002
    # equal up to the row normalisation of the discretised kernel (sum of P w = 1 - 1e-4)
    np.testing.assert_allclose(1.0 - out, expected, rtol=3e-4, atol=1e-12)
    # equivalent width conserved (integrated on the fine output grid)
    assert np.trapezoid(1.0 - out, wav_out) == pytest.approx(0.002, rel=1e-3)


def test_spectral_is_a_convolution_not_a_correlation():
    # asymmetric profile peaking at +10 mÅ: a delta line must come out shifted by +10 mÅ
    dl = np.array([-0.01, 0.01, 0.03])
    tr = np.array([0.0, 1.0, 0.0])
    wav = np.round(np.arange(6301.0, 6302.0, 0.001), 6)
    spec = np.ones(wav.size)
    j0 = 500
    spec[j0] = 0.0
    out = spectral_degrade(torch.tensor(spec), wav, wav[100:900], (dl, tr)).numpy()
    assert wav[100 + np.argmin(out)] == pytest.approx(wav[j0] + 0.01, abs=1e-9)


def test_spectral_conserves_equivalent_width_on_hinode_grid(sp):
    spec = _gauss_line(WAV_FINE, 6301.5012, 0.6, 0.04) * _gauss_line(WAV_FINE, 6302.4936, 0.5, 0.035)
    ew_in = np.trapezoid(1.0 - spec, WAV_FINE)
    out = spectral_degrade(torch.tensor(spec), WAV_FINE, sp.wavelengths, sp.profile).numpy()
    ew_out = np.trapezoid(1.0 - out, sp.wavelengths)
    assert ew_out == pytest.approx(ew_in, rel=2e-3)
    # the line core is shallower after convolution with the ~24 mÅ wide profile
    assert out.min() > spec.min()


def test_spectral_errors(sp):
    with pytest.raises(ValueError, match="outside wav_fine"):
        spectral_matrix(WAV_FINE[100:], sp.wavelengths, sp.profile)
    with pytest.raises(ValueError, match="wav_fine has"):
        spectral_degrade(torch.ones(4, 10), WAV_FINE, sp.wavelengths, sp.profile)
    with pytest.raises(ValueError, match="too coarse"), pytest.warns(UserWarning, match="under-resolved"):
        spectral_matrix(np.array([6300.0, 6301.0, 6302.0]), np.array([6300.5]), sp.profile)


# ---------------------------------------------------------------------------- spatial
def test_spatial_constant_map_unchanged(sp):
    maps = torch.full((2, 3, 32, 32), 0.7, dtype=torch.float64)
    out = spatial_degrade(maps, sp.psf)
    torch.testing.assert_close(out, maps, rtol=0, atol=1e-13)


def test_spatial_matches_scipy_mirror_convolution():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(20, 23))
    psf = rng.random((5, 7))
    out = spatial_degrade(torch.tensor(img), psf).numpy()
    ref = ndimage.convolve(img, psf / psf.sum(), mode="mirror")
    np.testing.assert_allclose(out, ref, atol=1e-12)
    out_rep = spatial_degrade(torch.tensor(img), psf, padding="replicate").numpy()
    np.testing.assert_allclose(out_rep, ndimage.convolve(img, psf / psf.sum(), mode="nearest"), atol=1e-12)


def test_spatial_point_source_gives_psf(sp):
    img = torch.zeros(64, 64, dtype=torch.float64)
    img[32, 32] = 1.0
    out = spatial_degrade(img, sp.psf).numpy()
    np.testing.assert_allclose(out[12:53, 12:53], sp.psf, atol=1e-14)
    assert out.sum() == pytest.approx(1.0)


def test_spatial_reflect_needs_large_enough_map(sp):
    with pytest.raises(ValueError, match="replicate"):
        spatial_degrade(torch.ones(8, 8), sp.psf)
    torch.testing.assert_close(spatial_degrade(torch.ones(8, 8), sp.psf, padding="replicate"), torch.ones(8, 8))


# ---------------------------------------------------------------------------- rebin
def test_rebin_known_arrays():
    x = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    expected = torch.tensor([[3.5, 5.5, 7.5], [15.5, 17.5, 19.5]], dtype=torch.float64)
    torch.testing.assert_close(rebin(x, 2), expected)
    y = torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(rebin(y, (1, 1.5)), torch.tensor([[1 / 3, 5 / 3]], dtype=torch.float64))
    z = torch.rand(3, 6, 9, dtype=torch.float64)
    out = rebin(z, 1.5)
    assert out.shape == (3, 4, 6)
    torch.testing.assert_close(out.mean(dim=(-2, -1)), z.mean(dim=(-2, -1)))
    np.testing.assert_allclose(rebin_matrix(7, 2.0).sum(axis=1), 1.0)
    assert rebin(x, 2.0).shape == (2, 3) and rebin(torch.ones(5, 5), 2).shape == (2, 2)
    with pytest.raises(ValueError, match="≥ 1"):
        rebin(x, 0.5)


# ---------------------------------------------------------------------------- normalisation, noise
def test_normalise_continuum_and_quiet_sun_median():
    stokes = torch.ones(2, 3, 3, 4, 5, dtype=torch.float64)
    stokes[1] *= 4.0
    stokes[0, 0, 0, 0, 0] = 100.0  # a bright outlier: the median ignores it
    ic = quiet_sun_continuum(stokes)
    torch.testing.assert_close(ic, torch.tensor([1.0, 4.0], dtype=torch.float64))
    mask = np.zeros((3, 3), bool)
    mask[0, 0] = True
    torch.testing.assert_close(quiet_sun_continuum(stokes, mask), torch.tensor([100.0, 4.0], dtype=torch.float64))
    out = normalise_continuum(stokes, ic[:, None, None])
    assert out[1].max() == 1.0 and out[0, 0, 0, 0, 0] == 100.0
    torch.testing.assert_close(normalise_continuum(torch.full((4, 7), 2.0), 2.0), torch.ones(4, 7))
    with pytest.raises(ValueError):
        normalise_continuum(stokes, 0.0)


def test_noise_std_and_seed():
    x = torch.zeros(50, 4, 112, dtype=torch.float64)
    g = torch.Generator().manual_seed(1234)
    n1 = add_noise(x, 1e-3, generator=g)
    assert n1.std().item() == pytest.approx(1e-3, rel=0.02)
    assert abs(n1.mean().item()) < 2e-5
    for s in range(4):  # all four Stokes parameters get noise
        assert n1[:, s].std().item() == pytest.approx(1e-3, rel=0.05)
    n2 = add_noise(x, 1e-3, generator=torch.Generator().manual_seed(1234))
    torch.testing.assert_close(n1, n2)
    assert add_noise(x, 0.0) is x


# ---------------------------------------------------------------------------- full chain and autograd
def test_hinode_degrade_constant_map_and_shapes(sp):
    stokes = torch.zeros(1, 24, 24, 4, WAV_FINE.size, dtype=torch.float32)
    stokes[..., 0, :] = 3.0e-5  # absolute continuum intensity
    out = sp.degrade(stokes, WAV_FINE, 0.16, ic_quiet="median")
    assert out.shape == (1, 24, 24, 4, 112)
    torch.testing.assert_close(out[..., 0, :], torch.ones(1, 24, 24, 112))
    assert out[..., 1:, :].abs().max() < 1e-12
    # a 0.08" map is rebinned 2x, with the PSF resampled to 0.08" (81 x 81, pad 40)
    fine = torch.ones(48, 48, 4, WAV_FINE.size, dtype=torch.float32)
    assert sp.degrade(fine, WAV_FINE, 0.08).shape == (24, 24, 4, 112)
    with pytest.raises(ValueError, match="larger than the SP pixel"):
        sp.degrade(stokes, WAV_FINE, 0.32)
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W, 4, nλ\)"):
        sp.degrade(torch.ones(24, 24, WAV_FINE.size), WAV_FINE)


def test_degrade_order_commutes_with_paper_order(sp, one_torch_thread):
    rng = np.random.default_rng(3)
    wav = WAV_FINE[::6]
    stokes = torch.tensor(rng.normal(size=(1, 32, 32, 4, wav.size)))
    out = sp.degrade(stokes, wav, 0.11, ic_quiet=2.0)
    # paper order: PSF at 0.11", rebin to 0.16", then spectral convolution
    img = stokes.permute(0, 3, 4, 1, 2)
    img = rebin(spatial_degrade(img, sp.psf_at(0.11)), 0.16 / 0.11)
    ref = spectral_degrade(img.permute(0, 3, 4, 1, 2), wav, sp.wavelengths, sp.profile) / 2.0
    assert out.shape == ref.shape == (1, 22, 22, 4, 112)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)


def test_gradient_flows_through_degrade(sp):
    wav = WAV_FINE[::4]
    stokes = torch.rand(24, 24, 4, wav.size, dtype=torch.float64, requires_grad=True)
    out = sp.degrade(stokes, wav, 0.16, ic_quiet="median", noise_sigma=1e-3, generator=torch.Generator().manual_seed(0))
    (out[..., 3, :] ** 2).sum().backward()
    assert stokes.grad is not None and torch.isfinite(stokes.grad).all()
    assert stokes.grad[..., 3, :].abs().sum() > 0


@pytest.mark.filterwarnings("ignore:synthesis grid step")
def test_gradcheck_elementary_operators():
    torch.manual_seed(0)
    wav = np.linspace(6301.4, 6301.6, 21)
    prof = (np.array([-0.03, 0.0, 0.03]), np.array([0.0, 1.0, 0.0]))
    s = torch.rand(4, 21, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: spectral_degrade(t, wav, wav[5:16], prof), (s,))
    img = torch.rand(1, 5, 6, dtype=torch.float64, requires_grad=True)
    psf = torch.rand(3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, k: spatial_degrade(a, k), (img, psf), fast_mode=True)
    assert torch.autograd.gradcheck(lambda a: rebin(a, 1.5), (img,))
    ic = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, c: normalise_continuum(t, c), (s, ic))
