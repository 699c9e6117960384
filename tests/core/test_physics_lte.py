"""LTE synthesis: formal solver against the Milne-Eddington solution, ionisation, opacity,
hydrostatic equilibrium on a known model, symmetries, weak-field limit, gradients."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from helioforge.data.sir import read_sir
from helioforge.physics import eos, lte
from helioforge.physics.atomic import fe_lines
from helioforge.physics.me import LORENTZ_SHIFT, MEParameters, PropagationElements, synth_me, zeeman_propagation


@pytest.fixture(scope="module")
def lines(atmos_dir):
    return fe_lines(atmos_dir / "LINEAS")


@pytest.fixture(scope="module")
def hsra(atmos_dir):
    return read_sir(atmos_dir / "hsra11.mod")


def test_delo_reproduces_milne_eddington(lines):
    """A Milne-Eddington atmosphere (constant K, S = S0 + S1 τ) through the DELO solver."""
    wav = torch.linspace(6301.9, 6303.1, 241, dtype=torch.float64)
    p = MEParameters.create(B=1800.0, inclination=55.0, azimuth=25.0, v_los=0.8, eta0=12.0, doppler_width=0.032,
                            damping=0.2, S0=0.25, S1=0.75)
    ref = synth_me(p, wav, lines[1:])
    tau = torch.cat([torch.zeros(1, dtype=torch.float64), torch.logspace(-5, 2.5, 400, dtype=torch.float64)])
    shift = torch.tensor(lines[1].wavelength_air * 0.8 / 299792.458, dtype=torch.float64)
    k = zeeman_propagation(lines[1], wav, p.doppler_width, p.damping, shift,
                           p.B, torch.deg2rad(p.inclination), torch.deg2rad(p.azimuth), p.eta0)
    K = PropagationElements(*(x.expand(tau.numel(), -1) for x in
                              (1 + k.eta_I, k.eta_Q, k.eta_U, k.eta_V, k.rho_Q, k.rho_U, k.rho_V)))
    out = lte.delo_linear(tau, K, p.S0 + p.S1 * tau)
    assert (out - ref).abs().max() < 2e-4  # second-order scheme on 400 points
    assert (out[3] - ref[3]).abs().max() / ref[3].abs().max() < 3e-3


def test_saha_hydrogen_matches_closed_form():
    T = torch.tensor([5000.0, 6000.0, 8000.0], dtype=torch.float64)
    Pe = torch.tensor([10.0, 100.0, 1000.0], dtype=torch.float64)
    x = eos.ionisation_fractions(T, Pe)[..., 0]
    # n_HII/n_HI Pe = 2 (u_II/u_I) (2π m_e kT/h²)^1.5 kT exp(−13.598 eV/kT), u_II/u_I = 1/2
    phi = (2 * math.pi * eos.M_E * eos.K_B * T / eos.H_PLANCK ** 2) ** 1.5 * eos.K_B * T * torch.exp(
        -13.598 * eos.EV / (eos.K_B * T))
    assert torch.allclose(x, phi / (phi + Pe), rtol=1e-2)


def test_electron_pressure_inverts_charge_balance(hsra):
    T = torch.tensor(hsra.T)
    Pg = torch.tensor(hsra.Pg)
    # atomic equation of state (molecules=False): Gray (2005) eq. 9.8
    Pe0 = eos.electron_pressure(T, Pg, molecules=False)
    x = eos.ionisation_fractions(T, Pe0)
    s = (x * torch.tensor(eos._ABUND)).sum(-1)
    assert torch.allclose(Pe0, Pg * s / (eos._SUM_ABUND + s), rtol=1e-8)
    # with H₂ and H₂⁺ (default): the composition at the solved P_e gives back P_g
    Pe = eos.electron_pressure(T, Pg)
    assert torch.allclose(eos.chemical_equilibrium(T, Pe).Pg, Pg, rtol=1e-9)
    # the model's own P_e (SIR's equation of state) agrees within 10 %
    assert torch.allclose(Pe, torch.tensor(hsra.Pe), rtol=0.10)


def test_continuum_opacity_reproduces_model_tau_scale(hsra):
    """∫ κ₅₀₀ dz over the model's own z, T, P_e gives back its log τ₅₀₀ axis."""
    T, Pe = torch.tensor(hsra.T), torch.tensor(hsra.Pe)
    kappa = lte.continuum_opacity(T, Pe, 5000.0).numpy()
    z_cm = hsra.z[::-1] * 1e5  # top first
    k = kappa[::-1]
    tau_top = 10 ** hsra.log_tau[-1]
    tau = tau_top + np.concatenate([[0], np.cumsum(0.5 * (k[1:] + k[:-1]) * -np.diff(z_cm))])
    err = np.abs(np.log10(tau) - hsra.log_tau[::-1])
    assert err[hsra.log_tau[::-1] > -4].max() < 0.1


def test_hydrostatic_equilibrium_on_known_model(hsra):
    lt = torch.tensor(hsra.log_tau)
    T = torch.tensor(hsra.T)
    Pe, Pg, rho, z = lte.hydrostatic_equilibrium(lt, T)
    # (1) the solution satisfies dP_g/dτ = g/κ_m (finite-difference residual)
    kappa_m = lte.continuum_opacity(T, Pe, 5000.0) / rho
    tau = 10 ** lt
    dP = torch.diff(Pg) / torch.diff(tau)
    mid = 0.5 * (lte.GRAVITY / kappa_m[1:] + lte.GRAVITY / kappa_m[:-1])
    assert ((dP - mid).abs() / mid).max() < 0.03
    # (2) it agrees with the HSRA's tabulated pressure and heights (SIR's equation of state)
    rel = np.abs(Pg.numpy() / hsra.Pg - 1)
    assert rel[hsra.log_tau > -3.5].max() < 0.12
    assert float(z[hsra.log_tau == 0][0]) == pytest.approx(0.0, abs=1e-9)
    top = np.argmin(np.abs(hsra.log_tau + 3.0))
    assert float(z[top]) == pytest.approx(hsra.z[top] - np.interp(0, hsra.log_tau[::-1], hsra.z[::-1]), rel=0.1)
    # either grid order gives the same answer
    flipped = lte.hydrostatic_equilibrium(lt.flip(0), T.flip(0))
    assert torch.allclose(flipped[1].flip(0), Pg, rtol=1e-10)


def test_hydrostatic_equilibrium_rejects_bad_grid():
    with pytest.raises(ValueError, match="monotonic"):
        lte.hydrostatic_equilibrium(torch.tensor([0.0, -1.0, -0.5]), torch.full((3,), 5000.0))


def _hsra_atmos(hsra, **overrides):
    a = lte.Atmosphere.from_sir(hsra)
    for k, v in overrides.items():
        setattr(a, k, torch.full_like(a.T, v))
    return a


WAV = torch.linspace(6300.89, 6303.27, 239, dtype=torch.float64)


def test_unmagnetised_lte_has_no_polarisation_and_a_realistic_line(hsra):
    s, Ic = lte.synth_lte(_hsra_atmos(hsra), WAV)
    assert s[1:].abs().max() < 1e-20
    I = s[0] / Ic
    assert abs(float(I[0]) - 1) < 0.01  # continuum window at 6300.9 Å
    core = I[(WAV > 6301.4) & (WAV < 6301.6)].min()
    assert 0.15 < float(core) < 0.4  # FTS atlas 0.28 with macroturbulence; HSRA has v_mic 0.6 km/s


def test_lte_symmetries(hsra):
    ref, _ = lte.synth_lte(_hsra_atmos(hsra, B=1200.0, inclination=40.0, azimuth=30.0), WAV)
    flip, _ = lte.synth_lte(_hsra_atmos(hsra, B=1200.0, inclination=140.0, azimuth=30.0), WAV)
    assert torch.allclose(flip[3], -ref[3], rtol=1e-9, atol=1e-20)  # B → −B flips V
    assert torch.allclose(flip[0], ref[0], rtol=1e-9)
    turn, _ = lte.synth_lte(_hsra_atmos(hsra, B=1200.0, inclination=40.0, azimuth=210.0), WAV)
    assert torch.allclose(turn, ref, rtol=1e-9, atol=1e-20)  # azimuth + 180° leaves Q, U unchanged


def test_lte_weak_field_limit(hsra, lines):
    """For a depth-independent weak field V = −Δλ_B ḡ cos θ ∂I/∂λ in any stratification (LL04 §9.6)."""
    B, theta = 20.0, 25.0
    wav = torch.linspace(6302.2, 6302.8, 601, dtype=torch.float64)  # 1 mÅ steps for ∂I/∂λ
    s, Ic = lte.synth_lte(_hsra_atmos(hsra, B=B, inclination=theta), wav, lines=lines[1:])
    dI = torch.gradient(s[0], spacing=(wav,))[0]
    v_weak = -LORENTZ_SHIFT * lines[1].wavelength_air ** 2 * B * 2.5 * math.cos(math.radians(theta)) * dI
    assert (s[3] - v_weak).abs().max() / s[3].abs().max() < 0.02


def test_lte_batch_chunking_mu_and_dtype(hsra):
    a = lte.Atmosphere.from_sir(hsra)
    n = a.T.numel()
    batch = lte.Atmosphere(log_tau=a.log_tau, **{k: getattr(a, k).expand(2, 3, n).clone()
                                                  for k in ["T", "Pe", "vmic", "B", "vlos", "inclination", "azimuth"]})
    batch.B[0, 1] = 2000.0
    batch.vlos[1, 2] = 1e5
    s, Ic = lte.synth_lte(batch, WAV[::8])
    s2, Ic2 = lte.synth_lte(batch, WAV[::8], chunk=2)
    assert s.shape == (2, 3, 4, WAV[::8].numel()) and Ic.shape == (2, 3)
    assert torch.allclose(s, s2) and torch.allclose(Ic, Ic2)
    _, Ic_limb = lte.synth_lte(a, WAV[::8], mu=0.5)
    _, Ic_centre = lte.synth_lte(a, WAV[::8])
    assert 0.6 < float(Ic_limb / Ic_centre) < 0.9  # limb darkening at 630 nm (≈ 0.77 observed)
    a32 = lte.Atmosphere.from_sir(hsra, dtype=torch.float32)
    a32.B[:] = 1500.0
    a64 = replace(a, B=torch.full_like(a.B, 1500.0))
    s32, c32 = lte.synth_lte(a32, WAV)
    s64, c64 = lte.synth_lte(a64, WAV)
    assert ((s32.double() / c32.double()) - s64 / c64).abs().max() < 2e-5


def test_lte_gradient_matches_finite_difference(hsra):
    a = lte.Atmosphere.from_sir(hsra)
    T = a.T.clone().requires_grad_(True)
    wav = WAV[::10]
    s, Ic = lte.synth_lte(replace(a, T=T, B=torch.full_like(T, 800.0)), wav)
    s[3].abs().sum().backward()
    i = int(np.argmin(np.abs(hsra.log_tau + 1.0)))
    h = 1.0
    Tp = a.T.clone()
    Tp[i] += h
    sp, _ = lte.synth_lte(replace(a, T=Tp, B=torch.full_like(T, 800.0)), wav)
    Tm = a.T.clone()
    Tm[i] -= h
    sm, _ = lte.synth_lte(replace(a, T=Tm, B=torch.full_like(T, 800.0)), wav)
    fd = (sp[3].abs().sum() - sm[3].abs().sum()) / (2 * h)
    assert float(T.grad[i]) == pytest.approx(float(fd), rel=1e-3)


def test_lte_rejects_bad_input(hsra):
    a = lte.Atmosphere.from_sir(hsra)
    with pytest.raises(ValueError, match="mu"):
        lte.synth_lte(a, WAV, mu=1.5)
    with pytest.raises(ValueError, match="positive"):
        lte.synth_lte(replace(a, T=-a.T), WAV)
