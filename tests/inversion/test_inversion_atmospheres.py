"""2-D maps of model atmospheres for the SICON training set (helioforge.inversion.atmospheres)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from helioforge.data.sir import SIRReadError, model_path, read_sir
from helioforge.inversion.atmospheres import (
    ARCSEC_KM,
    gaussian_random_field,
    granulation_pattern,
    height_profile,
    interpolate_model,
    load_model_set,
    make_patch_atmosphere,
    wilson_heights,
)
from helioforge.inversion.config import (
    AtmosphereConfig,
    AtmosphereModelsConfig,
    DepthGridConfig,
    TrainsetProfile,
    get_trainset_profile,
)

# one intra-op thread: on the shared 2-core machine OpenMP threads competing with other
# processes make the hydrostatic integration ~25× slower
pytestmark = pytest.mark.usefixtures("one_torch_thread")

COARSE = DepthGridConfig(log_tau_step=0.2)  # 27 points, +1.2 … −4.0


@pytest.fixture(scope="module")
def models(data_dir):
    return load_model_set(AtmosphereModelsConfig(), COARSE, data_dir)


def _i(models, level):
    return int(np.argmin(np.abs(models.log_tau - level)))


# ----------------------------------------------------------------------------- config
def test_profiles_round_trip_and_grid():
    for name in ("paper", "cpu", "tiny"):
        p = get_trainset_profile(name)
        assert TrainsetProfile.from_dict(p.to_dict()) == p
    paper = get_trainset_profile("paper")
    assert (paper.trainset.n_patches, paper.trainset.patch_size) == (50000, 32)
    assert paper.trainset.rebin() == 2 and paper.trainset.model_size() == 64
    lt = paper.grid.log_tau()
    assert lt[0] == pytest.approx(1.2) and lt[-1] == pytest.approx(-4.0) and lt.size == 53
    assert np.all(np.diff(lt) < 0)
    with pytest.raises(ValueError, match="unknown training-set profile"):
        get_trainset_profile("huge")
    bad = dataclasses.replace(paper.trainset, model_pixel_arcsec=0.07)
    with pytest.raises(ValueError, match="integer factor"):
        bad.rebin()


# ----------------------------------------------------------------------------- random fields
def _autocorr(f: torch.Tensor) -> torch.Tensor:
    F = torch.fft.fft2(f - f.mean())
    return torch.fft.ifft2(F * F.conj()).real / f.numel()


def test_gaussian_random_field_correlation_length_and_seed():
    ell = 4.0
    acs = []
    for seed in range(4):
        f = gaussian_random_field((128, 128), ell, torch.Generator().manual_seed(seed))
        acs.append(_autocorr(f))
    ac = torch.stack(acs).mean(0)
    var = ac[0, 0].item()
    assert var == pytest.approx(1.0, abs=0.15)
    # C(r) = exp(−r²/2ℓ²): e^{−1/2} at r = ℓ, e^{−2} at 2ℓ, ≈ 0 at 4ℓ, in both directions
    for lag, expect in ((4, math.exp(-0.5)), (8, math.exp(-2.0)), (16, 0.0)):
        assert ac[0, lag].item() / var == pytest.approx(expect, abs=0.07)
        assert ac[lag, 0].item() / var == pytest.approx(expect, abs=0.07)
    a = gaussian_random_field((32, 32), 3.0, torch.Generator().manual_seed(7))
    b = gaussian_random_field((32, 32), 3.0, torch.Generator().manual_seed(7))
    c = gaussian_random_field((32, 32), 3.0, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    with pytest.raises(ValueError):
        gaussian_random_field((8, 8), 0.0)


def test_granulation_pattern_has_cells_of_the_requested_size():
    cell = 11.0  # 1.8″ at 0.16″
    g, s = granulation_pattern((88, 88), cell, torch.Generator().manual_seed(0))
    lanes = (g < 0).float().mean().item()
    assert 0.15 < lanes < 0.55  # narrow lanes, broad granules
    # the dominant spatial period of the pattern is about one cell
    P = torch.fft.fft2(g - g.mean()).abs() ** 2
    k = torch.sqrt(torch.fft.fftfreq(88)[:, None] ** 2 + torch.fft.fftfreq(88)[None, :] ** 2)
    kbin = torch.round(k * 88).long()
    power = torch.zeros(int(kbin.max()) + 1).index_add_(0, kbin.reshape(-1), P.reshape(-1).float())
    counts = torch.zeros_like(power).index_add_(0, kbin.reshape(-1), torch.ones(88 * 88))
    spec = power / counts.clamp(min=1)
    kpeak = int(torch.argmax(spec[2:40])) + 2
    assert 88 / kpeak == pytest.approx(cell, rel=0.35)


def test_height_profile_is_piecewise_linear():
    nodes = ((0.0, 1.0), (-2.0, -1.0))
    out = height_profile(nodes, np.array([1.0, 0.0, -1.0, -2.0, -3.0]))
    assert out.tolist() == pytest.approx([1.0, 1.0, 0.0, -1.0, -1.0])


# ----------------------------------------------------------------------------- models
def test_interpolate_model_exact_on_own_grid_and_refuses_far_extrapolation(data_dir):
    m = read_sir(model_path("emaltby11", data_dir))  # log τ +1.2 … −3.6
    assert np.allclose(interpolate_model(m, m.log_tau), m.T)
    T = interpolate_model(m, np.array([-3.8, -4.0]), max_extrapolation_dex=0.5)
    assert np.all(T > 0) and np.all(np.isfinite(T))
    with pytest.raises(SIRReadError, match="emaltby11.*covers log τ"):
        interpolate_model(m, np.array([-4.5]), max_extrapolation_dex=0.5)


def test_bad_or_missing_model_is_named(data_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="umbra model 'nosuchmodel'"):
        load_model_set(AtmosphereModelsConfig(umbra=("nosuchmodel",)), COARSE, data_dir)
    bad = tmp_path / "broken.mod"
    bad.write_text("  1.0 1.0 0.0\n  1.2 6000.0 abc 0 0 0 0 0\n")
    with pytest.raises(SIRReadError, match=r"broken\.mod.*penumbra model"):
        load_model_set(AtmosphereModelsConfig(penumbra=str(bad)), COARSE, data_dir)


def test_model_set_roles_and_umbra_cooler(models):
    i0 = _i(models, 0.0)
    assert models.names["umbra"] == ["emaltby11", "mmaltby11"]
    assert all(T[i0] < models.quiet[0][i0] - 1000 for T in models.umbra)


# ----------------------------------------------------------------------------- pressure / heights
def test_wilson_heights_identity_and_depression(models):
    z_ref, pg_ref = models.reference_column()
    lt = torch.as_tensor(models.log_tau)
    same = wilson_heights(lt, z_ref[None], pg_ref[None], torch.zeros(1, lt.numel(), dtype=torch.float64), z_ref, pg_ref)
    assert torch.allclose(same[0], z_ref, atol=1e-6)
    # extra magnetic pressure B²/8π = P_g(0) pushes the column down by ≈ ln 2 scale heights
    i0 = _i(models, 0.0)
    B = math.sqrt(8 * math.pi * pg_ref[i0].item()) * torch.ones(1, lt.numel(), dtype=torch.float64)
    low = wilson_heights(lt, z_ref[None], pg_ref[None], B, z_ref, pg_ref)
    shift = (low[0] - z_ref)
    assert torch.allclose(shift, shift[0].expand_as(shift))
    assert -250 < shift[0].item() < -50


# ----------------------------------------------------------------------------- patches
def _cfg(**kw) -> AtmosphereConfig:
    return dataclasses.replace(AtmosphereConfig(), **kw)


def test_patch_is_seed_reproducible_and_in_hydrostatic_equilibrium(models):
    cfg = _cfg()
    a = make_patch_atmosphere(models, cfg, 8, 0.16, np.random.default_rng(5), kind="plage")
    b = make_patch_atmosphere(models, cfg, 8, 0.16, np.random.default_rng(5), kind="plage")
    for name in ("T", "Pe", "Pg", "B", "vlos", "inclination", "azimuth", "z"):
        assert torch.equal(getattr(a.atmosphere, name), getattr(b.atmosphere, name)), name
    at = a.atmosphere
    assert at.T.shape == (8, 8, models.n_depth)
    assert bool((at.Pg > 0).all()) and bool((at.Pe > 0).all()) and bool((at.Pe < at.Pg).all())
    # deepest first: pressure falls and height rises along the depth index in every column
    assert bool((torch.diff(at.Pg, dim=-1) < 0).all())
    assert bool((torch.diff(a.z_km, dim=-1) > 0).all())
    # spherical and cartesian field agree
    B2 = a.Bx**2 + a.By**2 + a.Bz**2
    assert torch.allclose(torch.sqrt(B2), at.B, rtol=1e-9, atol=1e-9)
    assert torch.allclose(at.B * torch.cos(torch.deg2rad(at.inclination)), a.Bz, atol=1e-6)


def test_quiet_sun_granulation_physics(models):
    p = make_patch_atmosphere(models, _cfg(network_probability=0.0), 24, 0.16, np.random.default_rng(1), kind="quiet")
    at = p.atmosphere
    i0, i25 = _i(models, 0.0), _i(models, -2.6)
    dT0 = (at.T[..., i0] - at.T[..., i0].mean()).reshape(-1)
    dTup = (at.T[..., i25] - at.T[..., i25].mean()).reshape(-1)
    v0 = at.vlos[..., i0].reshape(-1)
    corr = lambda x, y: float(torch.corrcoef(torch.stack([x, y]))[0, 1])  # noqa: E731
    assert corr(dT0, v0) < -0.8  # hot granules rise (blueshift), cool lanes sink
    assert corr(dT0, dTup) < -0.3  # reversed granulation in the upper photosphere
    assert 100 <= p.params["granule_dT_K"] <= 300 and 1 <= p.params["granule_dv_kms"] <= 2
    assert abs(v0.mean().item()) < 0.05e5  # mass-flux balance
    assert 0.3e5 < v0.max().item() < 6e5 and -6e5 < v0.min().item() < -0.3e5
    # corrugated τ = 1 surface within tens of km of the reference
    assert p.z_km[..., i0].abs().max().item() < 80
    assert bool((at.B < 1000).all())


def test_umbra_cooler_depressed_and_strong(models):
    cfg = _cfg(spot_umbra_radius_arcsec=(3.0, 3.0), spot_penumbra_ratio=(1.3, 1.3), spot_B_G=(3900.0, 4000.0))
    i0 = _i(models, 0.0)
    found = False
    for seed in (3, 7, 5):  # draws whose patch holds both umbra and quiet Sun
        p = make_patch_atmosphere(models, cfg, 12, 0.16, np.random.default_rng(seed), kind="spot")
        umbra = p.weights["umbra"] > 0.9
        quiet = p.weights["quiet"] > 0.9
        assert p.atmosphere.B.max().item() <= 4000.0 + 1e-6
        if umbra.any() and quiet.any():
            T0 = p.atmosphere.T[..., i0]
            assert T0[umbra].mean() < T0[quiet].mean() - 1000
            assert p.z_km[..., i0][umbra].mean() < -150  # Wilson depression
            assert p.z_km[..., i0][quiet].abs().mean() < 60
            # |B| = B_u (1 − 0.75 (r/R_p)²) ≥ 0.56 B_u inside the umbra (R_p = 1.3 R_u)
            assert p.atmosphere.B[..., i0][umbra].min() > 0.55 * 3900
            assert p.atmosphere.B.max().item() > 3500
            found = True
            break
    assert found, "no patch with both umbra and quiet Sun in the chosen draws"


def test_field_covers_all_inclinations_and_azimuths(models):
    cfg = _cfg()
    incl, azi, B = [], [], []
    for seed, kind in ((0, "plage"), (1, "spot"), (2, "spot"), (3, "quiet")):
        p = make_patch_atmosphere(models, cfg, 16, 0.16, np.random.default_rng(seed), kind=kind)
        strong = p.atmosphere.B > 50
        incl.append(p.atmosphere.inclination[strong])
        azi.append(p.atmosphere.azimuth[strong])
        B.append(p.atmosphere.B.reshape(-1))
    incl, azi, B = torch.cat(incl), torch.cat(azi), torch.cat(B)
    assert B.min() >= 0 and B.max() <= 4000 + 1e-6 and B.max() > 1000
    assert incl.min() >= 0 and incl.max() <= 180 and azi.min() >= 0 and azi.max() < 360
    hist_i = torch.histc(incl, bins=6, min=0, max=180)
    hist_a = torch.histc(azi, bins=8, min=0, max=360)
    assert bool((hist_i > 0).all()), hist_i
    assert bool((hist_a > 0).all()), hist_a


def test_bad_patch_arguments(models):
    with pytest.raises(ValueError, match="unknown patch kind"):
        make_patch_atmosphere(models, _cfg(), 4, 0.16, np.random.default_rng(0), kind="flare")
    with pytest.raises(ValueError, match="positive"):
        make_patch_atmosphere(models, _cfg(), 0, 0.16, np.random.default_rng(0))
    assert ARCSEC_KM == pytest.approx(725, rel=0.01)
