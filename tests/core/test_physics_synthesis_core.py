"""Faddeeva function, Zeeman patterns and Milne-Eddington synthesis: analytic cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import wofz

from helioforge.physics.atomic import LineListError, fe_lines, lande_factor, read_lineas, zeeman_components
from helioforge.physics.faddeeva import faddeeva, voigt_faraday
from helioforge.physics.me import LORENTZ_SHIFT, MEParameters, synth_me


# --- Faddeeva --------------------------------------------------------------------------------
@pytest.mark.parametrize("half_width", [5.0, 60.0, 3000.0])
def test_faddeeva_matches_scipy_wofz(half_width):
    rng = np.random.default_rng(1)
    x = rng.uniform(-half_width, half_width, 50_000)
    y = 10 ** rng.uniform(-4, 2, 50_000)
    z = x + 1j * y
    ref = wofz(z)
    w = faddeeva(torch.tensor(z)).numpy()
    assert np.max(np.abs(w - ref) / np.abs(ref)) < 2e-6
    w32 = faddeeva(torch.tensor(z, dtype=torch.complex64)).numpy()
    assert np.max(np.abs(w32 - ref)) < 2e-6


def test_faddeeva_on_real_axis_and_gradient():
    x = np.linspace(-8, 8, 161)
    w = faddeeva(torch.tensor(x + 0j)).numpy()
    assert np.allclose(w.real, np.exp(-x ** 2), atol=2e-6)  # H(0, v) = exp(−v²)
    z = torch.tensor([0.3 + 0.1j, -2.0 + 0.5j, 7.0 + 0.01j], dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(faddeeva, (z,), eps=1e-6, atol=1e-5)


def test_faddeeva_rejects_lower_half_plane():
    with pytest.raises(ValueError, match="Im z"):
        faddeeva(torch.tensor([1.0 - 0.1j]))


def test_voigt_normalisation_and_parity():
    v = torch.linspace(-400, 400, 400_001, dtype=torch.float64)
    H, L = voigt_faraday(torch.tensor(0.05, dtype=torch.float64), v)
    area = torch.trapezoid(H, v).item()
    assert area == pytest.approx(math.sqrt(math.pi), rel=2e-4)  # Lorentz wings beyond ±400 cut
    assert torch.allclose(H, H.flip(0), atol=1e-12)
    assert torch.allclose(L, -L.flip(0), atol=1e-12)


# --- atomic data and Zeeman patterns --------------------------------------------------------
def test_lineas_entries_200_201(data_dir):
    l1, l2 = fe_lines(data_dir / "stokes" / "atmospheres" / "LINEAS")
    assert (l1.wavelength_air, l1.excitation_potential, l1.log_gf) == (6301.5012, 3.654, -0.718)
    assert (l2.wavelength_air, l2.excitation_potential, l2.log_gf) == (6302.4936, 3.686, -1.131)
    assert l1.lower == (2.0, 1.0, 2.0) and l1.upper == (2.0, 2.0, 2.0)  # 5P2 - 5D2
    assert l2.lower == (2.0, 1.0, 1.0) and l2.upper == (2.0, 2.0, 0.0)  # 5P1 - 5D0
    assert l1.vdw_alpha == 0.242 and l1.vdw_sigma == pytest.approx(2.33543e-14)
    assert l1.g_eff == pytest.approx(5 / 3) and l2.g_eff == pytest.approx(2.5)


def test_zeeman_patterns_anomalous_and_normal(data_dir):
    l1, l2 = fe_lines(data_dir / "stokes" / "atmospheres" / "LINEAS")
    for line in (l1, l2):
        z = line.zeeman
        for s in (z.strength_b, z.strength_p, z.strength_r):
            assert s.sum() == pytest.approx(1.0)
        # centre of gravity of the σ components is ∓ g_eff (LL04 eq. 3.44)
        assert np.dot(z.shift_b, z.strength_b) == pytest.approx(-line.g_eff)
        assert np.dot(z.shift_r, z.strength_r) == pytest.approx(line.g_eff)
        assert np.dot(z.shift_p, z.strength_p) == pytest.approx(0.0, abs=1e-12)
    # 6302.5 is a normal triplet; 6301.5 is anomalous (4 σ_b, 4 π: M=0→0 is forbidden for ΔJ=0)
    assert len(l2.zeeman.shift_b) == 1 and l2.zeeman.shift_b[0] == pytest.approx(-2.5)
    assert len(l1.zeeman.shift_b) == 4 and len(l1.zeeman.shift_p) == 4
    assert lande_factor(2, 1, 2) == pytest.approx(11 / 6) and lande_factor(2, 2, 0) == 0.0


def test_zeeman_rejects_forbidden_transition():
    with pytest.raises(ValueError, match="dipole"):
        zeeman_components(0, 0, 0, 0, 0, 0)


def test_lineas_bad_file(tmp_path):
    bad = tmp_path / "LINEAS"
    bad.write_text("  200=FE 1   6301.5012     1.0    x.654    -0.718   5P 2.0- 5D 2.0\n")
    with pytest.raises(LineListError, match="LINEAS.*entry 200"):
        read_lineas(bad, (200,))
    with pytest.raises(LineListError, match=r"\[201\] not found"):
        read_lineas(_good_lineas(tmp_path), (200, 201))
    with pytest.raises(LineListError, match="not found"):
        read_lineas(tmp_path / "missing", (200,))


def _good_lineas(tmp_path):
    p = tmp_path / "LINEAS2"
    p.write_text("  200=FE 1   6301.5012     1.0    3.654    -0.718   5P 2.0- 5D 2.0  0.242   2.33543e-14\n")
    return p


# --- Milne-Eddington -------------------------------------------------------------------------
WAV = torch.linspace(6301.9, 6303.1, 1201, dtype=torch.float64)


def _me(**kw):
    base = dict(B=0.0, inclination=30.0, azimuth=20.0, v_los=0.0, eta0=8.0, doppler_width=0.03, damping=0.15,
                S0=0.3, S1=0.7)
    base.update(kw)
    return MEParameters.create(**base)


def test_me_unpolarised_limit(data_dir):
    line = fe_lines(data_dir / "stokes" / "atmospheres" / "LINEAS")[1]
    p = _me(B=0.0)
    s = synth_me(p, WAV, [line])
    assert torch.all(s[1:].abs() < 1e-14)
    H, _ = voigt_faraday(p.damping, (WAV - line.wavelength_air) / p.doppler_width)
    expected = p.S0 + p.S1 / (1 + p.eta0 * H)  # LL04 eq. 9.41 with μ = 1
    assert torch.allclose(s[0], expected, atol=1e-12)


def test_me_weak_field_limit(data_dir):
    line = fe_lines(data_dir / "stokes" / "atmospheres" / "LINEAS")[1]
    B, theta = 10.0, 30.0
    s = synth_me(_me(B=B, inclination=theta, v_los=0.4), WAV, [line])
    dI = torch.gradient(s[0], spacing=(WAV,))[0]
    v_weak = -LORENTZ_SHIFT * line.wavelength_air ** 2 * B * line.g_eff * math.cos(math.radians(theta)) * dI
    assert (s[3] - v_weak).abs().max() / s[3].abs().max() < 2e-3
    blue = WAV < line.wavelength_air + line.wavelength_air * 0.4 / 299792.458
    assert s[3][blue].sum() > 0  # field towards the observer: positive blue lobe


def test_me_symmetries(data_dir):
    lines = fe_lines(data_dir / "stokes" / "atmospheres" / "LINEAS")
    ref = synth_me(_me(B=1500.0, inclination=50.0, azimuth=35.0, v_los=1.0), WAV, lines)
    flip = synth_me(_me(B=1500.0, inclination=130.0, azimuth=35.0, v_los=1.0), WAV, lines)  # B → −B
    assert torch.allclose(flip[3], -ref[3], atol=1e-12)
    assert torch.allclose(flip[0], ref[0], atol=1e-12)  # Q, U differ only through Faraday rotation
    turn = synth_me(_me(B=1500.0, inclination=50.0, azimuth=215.0, v_los=1.0), WAV, lines)  # azimuth + 180°
    assert torch.allclose(turn, ref, atol=1e-12)
    quarter = synth_me(_me(B=1500.0, inclination=50.0, azimuth=125.0, v_los=1.0), WAV, lines)  # + 90°
    assert torch.allclose(quarter[1:3], -ref[1:3], atol=1e-12)


def test_me_batched_and_differentiable(data_dir):
    lines = fe_lines(data_dir / "stokes" / "atmospheres" / "LINEAS")
    B = torch.tensor([[100.0, 800.0, 2500.0], [0.0, 50.0, 4000.0]], dtype=torch.float64, requires_grad=True)
    p = MEParameters.create(B=0.0, inclination=60.0, azimuth=10.0, v_los=0.0, eta0=5.0, doppler_width=0.03,
                            damping=0.2, S0=0.2, S1=0.8)
    p.B = B
    s = synth_me(p, WAV[::40], lines)
    assert s.shape == (2, 3, 4, WAV[::40].numel())
    s[..., 1, :].abs().sum().backward()
    assert torch.isfinite(B.grad).all() and B.grad[0, 1] > 0  # stronger field, more Q


def test_me_rejects_bad_mu(data_dir):
    with pytest.raises(ValueError, match="mu"):
        synth_me(_me(), WAV, fe_lines(data_dir / "stokes" / "atmospheres" / "LINEAS"), mu=0.0)
