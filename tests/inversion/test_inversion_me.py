"""Milne-Eddington least-squares inversion: recovery of known parameters, ambiguity, shapes, targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helioforge.data.hinode import hinode_wavelengths
from helioforge.inversion.instrument import spectral_degrade
from helioforge.inversion.me import (
    PARAM_NAMES,
    MEResult,
    initial_guess,
    invert_me,
    me_chi2,
    me_field_targets,
)
from helioforge.inversion.me.model import _make_model
from helioforge.physics.atomic import fe_lines
from helioforge.physics.me import MEParameters, synth_me

# eight pixels spanning weak/strong, up/down, inclined both ways
TRUE = {
    "B": np.array([300.0, 600.0, 900.0, 1200.0, 1500.0, 1800.0, 2200.0, 2600.0]),
    "inclination": np.array([40.0, 130.0, 70.0, 100.0, 25.0, 150.0, 60.0, 115.0]),
    "azimuth": np.array([10.0, 45.0, 80.0, 120.0, 160.0, 30.0, 100.0, 170.0]),
    "v_los": np.array([-2.0, 1.5, 0.3, -0.7, 2.5, -1.2, 0.0, 0.8]),
    "eta0": np.array([6.0, 10.0, 15.0, 20.0, 8.0, 12.0, 25.0, 5.0]),
    "doppler_width": np.array([0.030, 0.035, 0.028, 0.040, 0.033, 0.026, 0.038, 0.031]),
    "damping": np.array([0.2, 0.4, 0.6, 0.3, 0.5, 0.25, 0.45, 0.35]),
    "S0": np.array([0.25, 0.30, 0.20, 0.35, 0.28, 0.22, 0.32, 0.27]),
}
TRUE["S1"] = 1.0 - TRUE["S0"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on the shared 2-core machine OpenMP threads spin when another
    process holds a core (the inversion then runs several times slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def setup():
    lines = fe_lines()
    wav = hinode_wavelengths()
    stokes = synth_me(MEParameters.create(**TRUE), torch.as_tensor(wav), lines).numpy()
    return lines, wav, stokes


def _az_err(a, b):
    return (np.asarray(a) - np.asarray(b) + 90.0) % 180.0 - 90.0


@pytest.fixture(scope="module")
def noiseless(setup):
    lines, wav, stokes = setup
    return invert_me(stokes, wav, lines, max_iter=30)


def test_recovers_noiseless_parameters(noiseless):
    r = noiseless
    assert r.converged.all() and r.B.shape == (8,)
    assert np.all(r.chi2 < 1e-3)  # reduced χ² with σ = 1e-3: residuals ≪ the noise
    np.testing.assert_allclose(r.B, TRUE["B"], rtol=2e-3)
    np.testing.assert_allclose(r.inclination, TRUE["inclination"], atol=0.1)
    assert np.abs(_az_err(r.azimuth, TRUE["azimuth"])).max() < 0.1
    np.testing.assert_allclose(r.v_los, TRUE["v_los"], atol=2e-3)
    np.testing.assert_allclose(r.eta0, TRUE["eta0"], rtol=2e-2)
    np.testing.assert_allclose(r.doppler_width, TRUE["doppler_width"], atol=2e-4)
    np.testing.assert_allclose(r.damping, TRUE["damping"], atol=1e-2)
    np.testing.assert_allclose(r.S0, TRUE["S0"], atol=3e-3)
    np.testing.assert_allclose(r.S1, TRUE["S1"], atol=3e-3)
    assert r.pixels_per_s > 0 and r.settings["n_wavelengths"] == 112
    assert np.all((r.azimuth >= 0) & (r.azimuth < 180)) and np.all((r.inclination >= 0) & (r.inclination <= 180))


def test_recovers_parameters_with_hinode_noise(setup):
    lines, wav, stokes = setup
    rng = np.random.default_rng(5)
    noisy = stokes + 1e-3 * rng.standard_normal(stokes.shape)
    r = invert_me(noisy, wav, lines, sigma=1e-3, max_iter=30)
    assert r.converged.mean() >= 0.875
    # χ² per degree of freedom ≈ 1 when the fit reaches the noise
    assert np.all((r.chi2 > 0.7) & (r.chi2 < 1.4))
    assert np.all(np.abs(r.B - TRUE["B"]) < 0.05 * TRUE["B"] + 20.0)
    assert np.abs(r.inclination - TRUE["inclination"]).max() < 3.0
    assert np.abs(_az_err(r.azimuth, TRUE["azimuth"])).max() < 3.0
    assert np.abs(r.v_los - TRUE["v_los"]).max() < 0.03


def test_me_chi2_and_180_degree_ambiguity(setup, noiseless):
    lines, wav, stokes = setup
    p = MEParameters.create(**TRUE)
    flipped = MEParameters.create(**{**TRUE, "azimuth": TRUE["azimuth"] + 180.0})
    s_flip = synth_me(flipped, torch.as_tensor(wav), lines).numpy()
    np.testing.assert_allclose(s_flip, stokes, atol=1e-12)
    c1 = me_chi2(stokes, p, wav, lines)
    c2 = me_chi2(stokes, flipped, wav, lines)
    np.testing.assert_allclose(c1, 0.0, atol=1e-16)
    np.testing.assert_allclose(c2, c1, atol=1e-12)
    # any other azimuth is worse (by much when the transverse field is strong)
    other = MEParameters.create(**{**TRUE, "azimuth": TRUE["azimuth"] + 30.0})
    c3 = me_chi2(stokes, other, wav, lines)
    assert np.all(c3 > 0.5) and np.all(c3[2:] > 10.0)
    # the inverted field gives the same ambiguity-free targets for φ and φ + 180°
    t = me_field_targets(noiseless)
    shifted = MEResult(**{**{k: getattr(noiseless, k) for k in PARAM_NAMES}, "azimuth": noiseless.azimuth + 180.0},
                       chi2=noiseless.chi2, iterations=noiseless.iterations, converged=noiseless.converged,
                       time_s=1.0, n_pixels=8)
    t2 = me_field_targets(shifted)
    for k in ("BQ", "BU", "BV"):
        np.testing.assert_allclose(t2[k], t[k], atol=1e-4)  # √ of round-off where Bx² ≈ By²


def test_field_targets_analytic():
    def res(B, g, f):
        z = np.zeros(len(B))
        return MEResult(B=np.asarray(B, float), inclination=np.asarray(g, float), azimuth=np.asarray(f, float),
                        v_los=np.array([0.5] * len(B)), eta0=z, doppler_width=z, damping=z, S0=z, S1=z, chi2=z,
                        iterations=z.astype(int), converged=z.astype(bool), time_s=1.0, n_pixels=len(B))

    t = me_field_targets(res([1000, 1000, 1000, 1000], [90, 90, 0, 180], [0, 45, 0, 0]))
    np.testing.assert_allclose(t["BQ"], [1000.0, 0.0, 0.0, 0.0], atol=1e-4)  # √ of round-off at φ = 45°
    np.testing.assert_allclose(t["BU"], [0.0, np.sqrt(1000 * np.cos(np.pi / 4) * 1000 * np.sin(np.pi / 4)), 0.0, 0.0],
                               atol=1e-4)
    np.testing.assert_allclose(t["BV"], [0.0, 0.0, 1000.0, -1000.0], atol=1e-9)
    np.testing.assert_allclose(t["vlos"], 0.5)


def test_weak_field_initial_guess_signs(setup):
    lines, wav, _ = setup
    p = MEParameters.create(B=np.array([100.0, 150.0]), inclination=np.array([45.0, 120.0]),
                            azimuth=np.array([30.0, 140.0]), v_los=np.array([1.0, -1.5]), eta0=8.0,
                            doppler_width=0.032, damping=0.3, S0=0.3, S1=0.7)
    s = synth_me(p, torch.as_tensor(wav), lines).numpy()
    g = initial_guess(s, wav, lines)
    np.testing.assert_allclose(g["B_los"], [100 * np.cos(np.pi / 4), 150 * np.cos(2 * np.pi / 3)], rtol=0.15)
    assert np.abs(_az_err(g["azimuth"], [30.0, 140.0])).max() < 3.0
    np.testing.assert_allclose(g["v_los"], [1.0, -1.5], atol=0.1)
    np.testing.assert_allclose(g["Ic"], 1.0, atol=2e-3)


def test_map_input_mixed_pixels_and_nan(setup):
    lines, wav, stokes = setup
    # a 2×3 map: four field pixels, a nearly field-free pixel, a NaN pixel
    quiet = synth_me(MEParameters.create(B=5.0, inclination=90.0, azimuth=0.0, v_los=0.2, eta0=9.0,
                                         doppler_width=0.03, damping=0.3, S0=0.3, S1=0.7),
                     torch.as_tensor(wav), lines).numpy()
    pix = np.concatenate([stokes[[0, 3, 5, 7]], quiet[None], np.full((1, 4, 112), np.nan)])
    pix = pix + 1e-3 * np.random.default_rng(2).standard_normal(pix.shape)
    cube = pix.reshape(2, 3, 4, 112).transpose(2, 3, 0, 1)  # (4, nλ, H, W)
    r = invert_me(cube, wav, lines, max_iter=30)
    assert r.B.shape == (2, 3) and r.n_pixels == 5 and r.settings["n_skipped_nonfinite"] == 1
    assert np.isnan(r.B[1, 2]) and not r.converged[1, 2] and np.isnan(r.chi2[1, 2])
    assert r.converged.sum() == 5
    assert np.all(np.abs(r.B.ravel()[:4] - TRUE["B"][[0, 3, 5, 7]]) < 0.05 * TRUE["B"][[0, 3, 5, 7]] + 20.0)
    assert r.v_los[1, 1] == pytest.approx(0.2, abs=0.03)
    assert np.all(r.chi2.ravel()[:5] < 1.4)
    # the field-free pixel: B at the noise floor (only an upper bound is meaningful there)
    assert r.B[1, 1] < 150.0


def test_spectral_profile_path(setup):
    lines, wav, _ = setup
    sub = {k: v[[2, 6]] for k, v in TRUE.items()}
    model = _make_model(wav, lines, 1.0, "hinode", 3, torch.float64, torch.device("cpu"))
    fine = synth_me(MEParameters.create(**sub), model.wavelength, lines)
    obs = spectral_degrade(fine, model.wavelength.numpy(), wav).numpy()
    r = invert_me(obs, wav, lines, spectral_profile="hinode", max_iter=30)
    assert r.converged.all() and np.all(r.chi2 < 1e-3)
    np.testing.assert_allclose(r.B, sub["B"], rtol=3e-3)
    np.testing.assert_allclose(r.doppler_width, sub["doppler_width"], atol=5e-4)
    # ignoring the instrument profile fits worse and broadens the line
    r0 = invert_me(obs, wav, lines, max_iter=30)
    assert np.all(r0.chi2 > r.chi2)


def test_bad_inputs_raise(setup):
    lines, wav, stokes = setup
    with pytest.raises(ValueError, match=r"\(N, 4, 112\)"):
        invert_me(np.zeros((3, 3, 112)), wav, lines)
    with pytest.raises(ValueError, match=r"\(4, 112, H, W\)"):
        invert_me(np.zeros((4, 100, 2, 2)), wav, lines)
    with pytest.raises(ValueError, match="strictly increasing"):
        invert_me(stokes, wav[::-1], lines)
    with pytest.raises(ValueError, match="sigma"):
        invert_me(stokes, wav, lines, sigma=[1e-3, 1e-3])
    with pytest.raises(ValueError, match="sigma"):
        invert_me(stokes, wav, lines, sigma=-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        invert_me(stokes, wav, lines, max_iter=0)
    with pytest.raises(ValueError, match="mu"):
        invert_me(stokes, wav, lines, mu=0.0)
    with pytest.raises(ValueError, match="spectral_profile"):
        invert_me(stokes, wav, lines, spectral_profile="sst")
    with pytest.raises(ValueError, match="unknown initial"):
        invert_me(stokes, wav, lines, initial={"Bz": 1.0})


def test_initial_values_override_the_grid_start(setup):
    lines, wav, stokes = setup
    start = {k: v[[1, 4]] for k, v in TRUE.items()}
    r = invert_me(stokes[[1, 4]], wav, lines, max_iter=5, initial=start)
    # started at the answer: nothing to do but confirm it
    assert r.converged.all() and np.all(r.iterations <= 3)
    np.testing.assert_allclose(r.B, start["B"], rtol=1e-4)
    r1 = invert_me(stokes[[1, 4]], wav, lines, max_iter=1, initial={"B": 4000.0})
    assert np.all(np.abs(r1.B - start["B"]) > 100.0)  # one step from a bad start is not enough
