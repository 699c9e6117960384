"""Analytic-derivative Milne-Eddington inversion (issue 13, defect 7): derivatives, start, accuracy, speed."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from helioforge.data.hinode import hinode_wavelengths
from helioforge.inversion.instrument import spectral_matrix
from helioforge.inversion.me import (PARAM_NAMES, fast_start, initial_guess, invert_me, me_frame_profiles_compiled)
from helioforge.inversion.me.model import _make_model, _to_internal
from helioforge.inversion.me.solve_compiled import _compiled
from helioforge.physics.atomic import fe_lines
from helioforge.physics.me import MEParameters, me_frame_profiles, synth_me, synth_me_jacobian

# strong and weak, inclined both ways, Doppler shifted, saturated and weak lines
TRUE = {
    "B": np.array([80.0, 600.0, 1500.0, 2600.0, 3500.0]),
    "inclination": np.array([40.0, 130.0, 70.0, 100.0, 160.0]),
    "azimuth": np.array([10.0, 45.0, 80.0, 120.0, 170.0]),
    "v_los": np.array([-2.0, 1.5, 0.3, -0.7, 3.0]),
    "eta0": np.array([6.0, 10.0, 25.0, 3.0, 15.0]),
    "doppler_width": np.array([0.030, 0.035, 0.028, 0.040, 0.022]),
    "damping": np.array([0.2, 0.4, 0.6, 0.05, 1.0]),
    "S0": np.array([0.25, 0.30, 0.20, 0.35, 0.10]),
    "S1": np.array([0.75, 0.70, 0.80, 0.65, 0.60]),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread (the shared 2-core machine; see tests/inversion/test_inversion_me.py)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _az_err(a, b):
    return (np.asarray(a) - np.asarray(b) + 90.0) % 180.0 - 90.0


def test_analytic_profiles_equal_synth_me():
    wav = hinode_wavelengths()
    lines = fe_lines()
    p = MEParameters.create(**TRUE)
    ref = synth_me(p, torch.as_tensor(wav), lines)
    S, J = synth_me_jacobian(p, wav, lines)
    assert S.shape == (5, 4, 112) and J.shape == (5, 9, 4, 112)
    np.testing.assert_allclose(S.numpy(), ref.numpy(), atol=1e-12)
    # μ < 1 and a map-shaped batch
    p2 = MEParameters.create(**{k: v[:4].reshape(2, 2) for k, v in TRUE.items()})
    S2, J2 = synth_me_jacobian(p2, wav, lines, mu=0.6)
    np.testing.assert_allclose(S2.numpy(), synth_me(p2, torch.as_tensor(wav), lines, mu=0.6).numpy(), atol=1e-12)
    assert J2.shape == (2, 2, 9, 4, 112)


def test_analytic_jacobian_matches_finite_differences():
    """Central differences (float64) against the closed-form ∂S/∂p, all nine parameters.

    With the 32-term Faddeeva approximation (error ≈ 1e-12) the closed form and the differences
    agree to ≈ 1e-9; with the default 16 terms (error ≈ 1e-6) to the derivative of that error.
    """
    wav = hinode_wavelengths()
    lines = fe_lines()
    steps = {"B": 1e-3, "inclination": 1e-4, "azimuth": 1e-4, "v_los": 1e-6, "eta0": 1e-5, "doppler_width": 1e-7,
             "damping": 1e-6, "S0": 1e-6, "S1": 1e-6}
    for n_terms, tol in ((32, 1e-7), (16, 2e-4)):
        _, J = synth_me_jacobian(MEParameters.create(**TRUE), wav, lines, n_terms=n_terms)
        for k, name in enumerate(PARAM_NAMES):
            h = steps[name]
            up = synth_me_jacobian(MEParameters.create(**{**TRUE, name: TRUE[name] + h}), wav, lines, n_terms=n_terms)[0]
            dn = synth_me_jacobian(MEParameters.create(**{**TRUE, name: TRUE[name] - h}), wav, lines, n_terms=n_terms)[0]
            fd = (up - dn) / (2 * h)
            scale = fd.abs().amax(dim=(-1, -2), keepdim=True).clamp_min(1e-12)
            err = ((J[:, k] - fd).abs() / scale).max().item()
            assert err < tol, f"N={n_terms} ∂S/∂{name}: max relative deviation from finite differences {err:.2e}"


def test_instrument_jacobian_matches_finite_differences():
    """The residual Jacobian in the internal (bounded) variables, through the SP spectral profile."""
    wav = hinode_wavelengths()
    lines = fe_lines()
    model = _make_model(wav, lines, 1.0, "hinode", 3, torch.float64, torch.device("cpu"))
    p = torch.stack([torch.as_tensor(TRUE[k]) for k in PARAM_NAMES], -1)
    u = _to_internal(p)
    obs = torch.zeros(5, 448, dtype=torch.float64)
    w = torch.full((1, 448), 1e3, dtype=torch.float64)
    r, J = model.analytic(u, obs, w)
    assert J.shape == (5, 9, 448)
    for k in range(9):
        h = 1e-6 * max(1.0, float(u[:, k].abs().max()))
        du = torch.zeros_like(u)
        du[:, k] = h
        fd = -(model.analytic(u + du, obs, w, False)[0] - model.analytic(u - du, obs, w, False)[0]) / (2 * h)
        scale = fd.abs().amax(-1, keepdim=True).clamp_min(1e-9)
        err = ((J[:, k] - fd).abs() / scale).max().item()
        assert err < 2e-4, f"internal parameter {PARAM_NAMES[k]}: deviation {err:.2e}"
    # the forward part is the old autograd model's synthesis
    np.testing.assert_allclose((-r / 1e3).numpy(), model(u).numpy(), atol=1e-6)  # Humlíček far wings: 2e-6 relative


def test_fast_start_is_closed_form_and_close():
    wav = hinode_wavelengths()
    lines = fe_lines()
    s = synth_me(MEParameters.create(**TRUE), torch.as_tensor(wav), lines).numpy()
    p = fast_start(s, wav, lines)
    assert p.shape == (5, 9) and np.all(np.isfinite(p))
    g = initial_guess(s, wav, lines)
    np.testing.assert_allclose(p[:, 3], np.clip(g["v_los"], -9.5, 9.5))
    np.testing.assert_allclose(p[:3, 3], TRUE["v_los"][:3], atol=0.5)  # COG: biased when the σ components split
    ic = TRUE["S0"] + TRUE["S1"]
    np.testing.assert_allclose(p[:, 7] + p[:, 8], ic, rtol=0.02)  # continuum I_c = S0 + μ S1
    assert np.all((p[:, 5] >= 0.018) & (p[:, 5] <= 0.055))


def test_no_autograd_in_the_analytic_inner_loop(monkeypatch):
    """The old solver builds its Jacobians with torch.autograd.grad; the new one must not."""
    wav = hinode_wavelengths()
    lines = fe_lines()
    s = synth_me(MEParameters.create(**TRUE), torch.as_tensor(wav), lines).numpy()

    def forbidden(*a, **k):
        raise AssertionError("torch.autograd.grad called")

    monkeypatch.setattr(torch.autograd, "grad", forbidden)
    r = invert_me(s, wav, lines, max_iter=30)
    assert r.settings["method"] == "analytic" and r.converged.all()
    with pytest.raises(AssertionError, match="autograd"):
        invert_me(s[:1], wav, lines, max_iter=2, method="autograd")
    with pytest.raises(ValueError, match="method"):
        invert_me(s, wav, lines, method="newton")


@pytest.fixture(scope="module")
def noisy_sp():
    """120 pixels synthesised ×8 finer than the SP grid, convolved with the SP profile, 1e-3 noise."""
    rng = np.random.default_rng(11)
    n = 120
    truth = {"B": rng.uniform(200, 2500, n), "inclination": rng.uniform(10, 170, n), "azimuth": rng.uniform(0, 180, n),
             "v_los": rng.uniform(-2, 2, n), "eta0": rng.uniform(3, 20, n), "doppler_width": rng.uniform(0.02, 0.04, n),
             "damping": rng.uniform(0.05, 0.5, n), "S0": np.full(n, 0.3), "S1": np.full(n, 0.7)}
    wav = hinode_wavelengths()
    step = (wav[-1] - wav[0]) / (wav.size - 1) / 8
    fine = np.arange(wav[0] - 0.1, wav[-1] + 0.1 + step / 2, step)
    s = synth_me(MEParameters.create(**truth), torch.as_tensor(fine), fe_lines()).numpy() @ spectral_matrix(fine, wav).T
    return truth, wav, s + 1e-3 * rng.standard_normal(s.shape)


def _median_errors(r, truth):
    return {"B": np.median(np.abs(r.B - truth["B"])), "inclination": np.median(np.abs(r.inclination - truth["inclination"])),
            "azimuth": np.median(np.abs(_az_err(r.azimuth, truth["azimuth"]))),
            "v_los": np.median(np.abs(r.v_los - truth["v_los"]))}


def test_analytic_as_accurate_as_autograd(noisy_sp):
    """Same noisy pixels with the SP profile: the new fit is at least as accurate (its speed is
    measured by benchmarks/bench_inversion.py on thousands of pixels, not in a test)."""
    truth, wav, s = noisy_sp
    new = invert_me(s, wav, spectral_profile="hinode")
    old = invert_me(s, wav, spectral_profile="hinode", method="autograd")
    e_new, e_old = _median_errors(new, truth), _median_errors(old, truth)
    for k in e_new:
        assert e_new[k] <= 1.1 * e_old[k] + {"B": 2.0, "inclination": 0.2, "azimuth": 0.2, "v_los": 2e-3}[k], (k, e_new, e_old)
    assert new.converged.mean() >= 0.9
    assert np.median(new.chi2) < 1.3


# --------------------------------------------------------------------------- compiled (numba) path


def _frame_params(true=TRUE):
    return np.stack([np.asarray(true[k], dtype=np.float64) for k in PARAM_NAMES], -1)


def test_compiled_frame_equals_torch_frame():
    """The numba synthesis gives the torch closed-form profiles and derivatives (all Weideman:
    to round-off; with Humlíček's far wings: to its 2e-6 relative accuracy)."""
    wav = hinode_wavelengths()
    lines = fe_lines()
    p = _frame_params()
    for far_wing, stride, mu in ((None, 1, 1.0), (None, 3, 0.6), (7.0, 1, 1.0), (7.0, 3, 0.8)):
        P, dP = me_frame_profiles_compiled(p, wav, lines, mu, None, True, 16, stride, far_wing)
        Pt, _, dPt = me_frame_profiles(torch.as_tensor(p), wav, lines, mu, None, True, 16, stride, far_wing)
        assert P.shape == tuple(Pt.shape) and dP.shape == tuple(dPt.shape)
        scale = np.abs(dPt.numpy()).max(axis=(0, 2, 3), keepdims=True)
        if far_wing is None:
            np.testing.assert_allclose(P, Pt.numpy(), atol=1e-12)
            assert (np.abs(dP - dPt.numpy()) / scale).max() < 1e-12
        else:
            np.testing.assert_allclose(P, Pt.numpy(), atol=2e-6)
            assert (np.abs(dP - dPt.numpy()) / scale).max() < 1e-4
    P2, none = me_frame_profiles_compiled(p, wav, lines, derivatives=False)
    np.testing.assert_allclose(P2, me_frame_profiles_compiled(p, wav, lines)[0], atol=0)
    assert none is None
    with pytest.raises(ValueError, match=r"\(n, 9\)"):
        me_frame_profiles_compiled(p[:, :8], wav, lines)
    with pytest.raises(ValueError, match="mu"):
        me_frame_profiles_compiled(p, wav, lines, mu=1.5)


def test_compiled_frame_jacobian_matches_finite_differences():
    """Central differences of the compiled P against its closed-form dP (B, γ [rad], v, η₀, Δλ_D, a)."""
    wav = hinode_wavelengths()
    lines = fe_lines()
    p = _frame_params()
    cols = (0, 1, 3, 4, 5, 6)
    steps = (1e-3, 1e-4, 1e-6, 1e-5, 1e-7, 1e-6)
    for n_terms, far_wing, tol in ((32, None, 1e-7), (16, 7.0, 1e-3)):
        _, dP = me_frame_profiles_compiled(p, wav, lines, 0.9, None, True, n_terms, 1, far_wing)
        for q, (col, h) in enumerate(zip(cols, steps)):
            hp = h * (180.0 / np.pi) if col == 1 else h  # γ is passed in degrees, dP is per radian
            up, dn = p.copy(), p.copy()
            up[:, col] += hp
            dn[:, col] -= hp
            fd = (me_frame_profiles_compiled(up, wav, lines, 0.9, None, False, n_terms, 1, far_wing)[0]
                  - me_frame_profiles_compiled(dn, wav, lines, 0.9, None, False, n_terms, 1, far_wing)[0]) / (2 * h)
            scale = np.abs(fd).max(axis=(-1, -2), keepdims=True).clip(1e-12)
            err = (np.abs(dP[:, q] - fd) / scale).max()
            assert err < tol, f"N={n_terms} ∂P/∂{cols[q]}: deviation {err:.2e}"


def test_compiled_instrument_jacobian_matches_finite_differences():
    """The compiled residual Jacobian in the internal variables, through the SP spectral profile
    (exact derivative grid), against central differences; its residuals are the torch model's."""
    wav = hinode_wavelengths()
    lines = fe_lines()
    model = _make_model(wav, lines, 1.0, "hinode", 3, torch.float64, torch.device("cpu"))
    cm = _compiled(model, 16, 1)
    u = _to_internal(torch.as_tensor(_frame_params())).numpy()
    obs = np.zeros((5, 4, 112))
    w = np.full((4, 112), 1e3)
    r, J = cm.residual_jacobian(u, obs, w)
    assert r.shape == (5, 448) and J.shape == (5, 9, 448)
    for k in range(9):
        h = 1e-6 * max(1.0, float(np.abs(u[:, k]).max()))
        du = np.zeros_like(u)
        du[:, k] = h
        up, dn = cm.residual_jacobian(u + du, obs, w, False)[0], cm.residual_jacobian(u - du, obs, w, False)[0]
        fd = -(up - dn) / (2 * h)
        scale = np.abs(fd).max(-1, keepdims=True).clip(1e-9)
        err = (np.abs(J[:, k] - fd) / scale).max()
        assert err < 2e-4, f"internal parameter {PARAM_NAMES[k]}: deviation {err:.2e}"
    np.testing.assert_allclose(-r / 1e3, model(torch.as_tensor(u)).numpy(), atol=2e-6)
    # the default inexact-Jacobian grid (every 3rd synthesis point) stays close to the exact one
    _, J3 = _compiled(model, 16, 3).residual_jacobian(u, obs, w)
    rel = np.abs(J3 - J).max(-1) / np.abs(J).max(-1).clip(1e-9)
    assert np.median(rel) < 0.05


def test_compiled_recovers_noise_free_parameters():
    """Noise-free profiles through the SP profile: the compiled fit returns the model parameters."""
    wav = hinode_wavelengths()
    lines = fe_lines()
    model = _make_model(wav, lines, 1.0, "hinode", 3, torch.float64, torch.device("cpu"))
    s = synth_me(MEParameters.create(**TRUE), model.wavelength, lines).numpy() @ model.matrix.numpy().T
    r = invert_me(s, wav, lines, spectral_profile="hinode", max_iter=50)
    assert r.settings["method"] == "analytic" and r.settings["dtype"] == "float64"
    assert r.converged.all() and np.all(r.chi2 < 1e-3)
    np.testing.assert_allclose(r.B, TRUE["B"], rtol=3e-3)
    np.testing.assert_allclose(r.inclination, TRUE["inclination"], atol=0.2)
    assert np.abs(_az_err(r.azimuth, TRUE["azimuth"])).max() < 0.2
    np.testing.assert_allclose(r.v_los, TRUE["v_los"], atol=2e-3)
    np.testing.assert_allclose(r.doppler_width, TRUE["doppler_width"], atol=5e-4)


def test_compiled_matches_torch_solver_on_noisy_pixels(noisy_sp):
    """Same noisy SP pixels: the compiled solver is as accurate as the torch analytic one (its
    speed is measured by benchmarks/bench_inversion.py), and its result does not depend on the
    chunking or the number of worker threads (each pixel is fitted on its own)."""
    truth, wav, s = noisy_sp
    new = invert_me(s, wav, spectral_profile="hinode")
    old = invert_me(s, wav, spectral_profile="hinode", method="analytic_torch")
    assert old.settings["method"] == "analytic_torch"
    e_new, e_old = _median_errors(new, truth), _median_errors(old, truth)
    for k in e_new:
        slack = {"B": 0.5, "inclination": 0.05, "azimuth": 0.05, "v_los": 5e-4}[k]
        assert e_new[k] <= 1.05 * e_old[k] + slack, (k, e_new, e_old)
    assert new.converged.mean() >= old.converged.mean() - 0.02
    assert np.median(new.chi2) < 1.3
    again = invert_me(s, wav, spectral_profile="hinode", chunk=7, workers=2)
    for k in PARAM_NAMES + ("chi2", "iterations", "converged"):
        np.testing.assert_array_equal(getattr(again, k), getattr(new, k), err_msg=k)
