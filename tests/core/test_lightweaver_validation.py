"""Validation of the torch LTE synthesis against Lightweaver (issue 4, item 4).

Two parts:

* sanity checks of the Lightweaver reference itself (:mod:`validation.lightweaver_ref`, outside the installed package):
  the LINEAS data, the model atom, HSRA's absolute continuum against the observed disc-centre
  intensity, line depth, symmetry and sign conventions, bad input;
* the comparison of :func:`helioforge.physics.lte.synth_lte` with Lightweaver on FAL-C, HSRA,
  the Maltby umbra, a penumbra and 24 randomly perturbed magnetised atmospheres on the Hinode
  SP grid, asserting the issue's goals (RMS of I/Ic < 0.02, V amplitude within 5 %).

Everything is skipped, with the reason, only when Lightweaver is not installed
(``pip install helioforge[test]``).
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: validation/
from validation import lightweaver_ref as lwr  # noqa: E402

try:
    lwr.import_lightweaver()
except ImportError as err:  # pragma: no cover - depends on the environment
    pytest.skip(f"Lightweaver is not installed ({lwr.LIGHTWEAVER_INSTALL_HINT}): {err}", allow_module_level=True)

from helioforge.data.hinode import hinode_wavelengths  # noqa: E402
from helioforge.data.sir import read_sir  # noqa: E402

C_KMS = 299792.458
NAMED = {"FAL-C": "FALC11", "HSRA": "hsra11", "Maltby umbra": "emaltby11", "penumbra": "penumjti11"}


@pytest.fixture(scope="module")
def atm_dir(data_dir):
    path = data_dir / "stokes" / "atmospheres"
    if not path.is_dir():
        pytest.skip(f"{path} missing")
    return path


@pytest.fixture(scope="module")
def hinode_grid(data_dir):
    return hinode_wavelengths(data_dir / "stokes" / "instrument" / "wavelength_Hinode.txt")


@pytest.fixture(scope="module")
def named_models(atm_dir):
    return {label: read_sir(atm_dir / f"{stem}.mod") for label, stem in NAMED.items()}


@pytest.fixture(scope="module")
def hsra(named_models):
    return named_models["HSRA"]


def _uniform(model, **values):
    """Copy of ``model`` with depth-independent columns set from ``values``."""
    n = model.log_tau.size
    return replace(model, **{k: np.full(n, float(v)) for k, v in values.items()})


# ----------------------------------------------------------------------------- atomic data
def test_lineas_constants_match_the_file(atm_dir):
    text = (atm_dir / "LINEAS").read_text()
    for line in lwr.FE_LINES:
        # e.g. "200=FE 1   6301.5012  1.0  3.654  -0.718   5P 2.0- 5D 2.0  0.242  2.33543e-14"
        m = re.search(rf"^\s*{line.lineas_index}=FE 1\s+(\S+)\s+\S+\s+(\S+)\s+(\S+)\s+"
                      r"(\d)([SPDF])\s*([\d.]+)\s*-\s*(\d)([SPDF])\s*([\d.]+)\s+(\S+)\s+(\S+)",
                      text, flags=re.MULTILINE)
        assert m, f"LINEAS entry {line.lineas_index} not found"
        g = m.groups()
        assert float(g[0]) == line.wavelength_air_A
        assert float(g[1]) == line.excitation_eV
        assert float(g[2]) == line.log_gf
        assert (int(g[3]), "SPDF".index(g[4]), float(g[5])) == line.lower
        assert (int(g[6]), "SPDF".index(g[7]), float(g[8])) == line.upper
        assert float(g[9]) == line.alpha_abo
        assert float(g[10]) == line.sigma_abo_cm2


def test_model_atom_wavelengths_and_zeeman_patterns():
    from lightweaver.zeeman import compute_zeeman_components, effective_lande

    atom = lwr.fe_model_atom()
    assert len(atom.lines) == 2
    lam_air = np.array([ln.wavelength_air_A for ln in lwr.FE_LINES])
    vac = lwr.air_to_vacuum_nm(lam_air)
    np.testing.assert_allclose(vac * 10 - lam_air, 1.743, atol=0.002)  # Edlén: n − 1 ≈ 2.77e-4 at 630 nm
    lam0 = sorted(line.lambda0 for line in atom.lines)
    np.testing.assert_allclose(lam0, vac, rtol=0, atol=1e-7)  # nm
    by_lambda = sorted(atom.lines, key=lambda ln: ln.lambda0)
    # LS coupling: 5P2-5D2 → ḡ = 1.5 + ... = 5/3 (anomalous); 5P1-5D0 → ḡ = 2.5 (normal triplet)
    assert effective_lande(by_lambda[0]) == pytest.approx(5.0 / 3.0)
    assert effective_lande(by_lambda[1]) == pytest.approx(2.5)
    z1 = compute_zeeman_components(by_lambda[0])
    z2 = compute_zeeman_components(by_lambda[1])
    assert z1.alpha.size > 3 and z2.alpha.size == 3
    for z in (z1, z2):
        for q in (-1, 0, 1):
            assert z.strength[z.alpha == q].sum() == pytest.approx(1.0)


def test_fe_populations_use_kurucz_partition_function(hsra):
    """The z5P2 population follows n = N(Fe I) g e^{−E/kT} / U_I with Kurucz's U_I (≈ 27.8 at 5000 K)."""
    pf = lwr._kurucz_fe()
    u5000 = math.exp(np.interp(5000.0, pf.Tpf, pf.pf[0]))
    assert 26.0 < u5000 < 29.5


# ----------------------------------------------------------------------------- absolute scale
def test_hsra_continuum_matches_observed_disc_centre(hsra):
    """HSRA continuum at 500 and 630 nm against the observed disc-centre intensity.

    Observed: Allen's Astrophysical Quantities (4th ed., Cox 2000, Table 14.13, from Neckel &
    Labs 1984) I'_λ(0) = 4.08 (0.50 µm), 3.24 (0.60 µm), 2.90 (0.65 µm) × 10¹⁴ erg s⁻¹ cm⁻²
    sr⁻¹ cm⁻¹; linear at 630 nm 3.04e14. I_ν = I_λ λ²/c → 3.40e-5 (500 nm) and 4.03e-5 erg s⁻¹
    cm⁻² sr⁻¹ Hz⁻¹ (630 nm). (The "≈ 3.0e-5 per Hz" quoted in the brief is I_λ in 10¹⁴ per cm.)
    """
    obs_lambda = {5000.0: 4.08e14, 6302.0: 3.24e14 + (2.90e14 - 3.24e14) * 0.6}
    wav = np.array(sorted(obs_lambda))
    ic = lwr.lightweaver_continuum(hsra, wav)
    for w, i_nu in zip(wav, ic):
        obs_nu = obs_lambda[w] * (w * 1e-8) ** 2 / 2.99792458e10
        assert i_nu == pytest.approx(obs_nu, rel=0.05), (w, i_nu, obs_nu)
    _, ic_stokes = lwr.lightweaver_stokes(hsra, np.array([6301.0, 6302.0]))
    assert ic_stokes == pytest.approx(ic[1], rel=1e-6)


def test_hsra_line_depths(hsra):
    """HSRA, no macroturbulence: 6301.5 core ≈ 0.23 I_c (0.24 with the model's v_mac = 1 km/s);
    the FTS disc-centre atlas shows ≈ 0.28-0.30, which a static 1-D model reaches with
    v_mac ≈ 1.5-2 km/s. 6302.5 (smaller gf) is shallower."""
    wav = np.arange(6301.3, 6302.7, 0.002)
    stokes, ic = lwr.lightweaver_stokes(hsra, wav)
    i = stokes[0] / ic
    core1 = i[(wav > 6301.4) & (wav < 6301.6)].min()
    core2 = i[(wav > 6302.4) & (wav < 6302.6)].min()
    assert 0.18 < core1 < 0.30
    assert core1 < core2 < 0.35
    # the line core sits at the LINEAS air wavelength: the air/vacuum round trip is consistent
    assert wav[np.argmin(np.where(wav < 6302.0, i, 2.0))] == pytest.approx(6301.5012, abs=0.0025)
    # with the line opacity off the spectrum is flat
    cont = lwr.lightweaver_continuum(hsra, np.array([6301.5012, 6302.0, 6302.4936]))
    np.testing.assert_allclose(cont / cont[1], 1.0, atol=2e-4)


# ----------------------------------------------------------------------------- symmetries and signs
def test_zero_field_has_no_polarisation(hsra, hinode_grid):
    stokes, ic = lwr.lightweaver_stokes(_uniform(hsra, B=0.0, inclination=30.0, azimuth=20.0), hinode_grid)
    assert np.abs(stokes[1:]).max() < 1e-12 * ic
    assert stokes[0].min() < 0.5 * ic


@pytest.mark.parametrize("line", lwr.FE_LINES, ids=lambda ln: f"{ln.wavelength_air_A:.1f}")
def test_vertical_field_gives_antisymmetric_V_with_positive_blue_lobe(hsra, line):
    # one line at a time: the far V wing of the other line (≈ 1e-3 Ic at 0.6 Å) breaks the symmetry
    lam0 = line.wavelength_air_A
    wav = lam0 + np.linspace(-0.4, 0.4, 81)
    model = _uniform(hsra, B=1000.0, inclination=0.0, azimuth=0.0, vlos=0.0)
    stokes, ic = lwr.lightweaver_stokes(model, wav, lines=[line])
    i, q, u, v = stokes / ic
    vmax = np.abs(v).max()
    assert vmax > 0.05
    np.testing.assert_allclose(v, -v[::-1], atol=1e-4 * vmax)
    np.testing.assert_allclose(i, i[::-1], atol=2e-4)  # continuum slope ≈ 6e-5 per Å
    assert np.abs(q).max() < 1e-10 and np.abs(u).max() < 1e-10  # longitudinal field: no linear polarisation
    assert v[wav < lam0].sum() > 0 > v[wav > lam0].sum()  # field towards the observer: blue lobe positive


def test_field_reversal_symmetry(hsra, hinode_grid):
    """Exact symmetry of the polarised RTE: (γ, χ) → (180° − γ, −χ) maps (I, Q, U, V) → (I, Q, −U, −V).

    Reversing B alone (γ → 180° − γ at fixed χ) flips V but does *not* leave Q and U unchanged
    in strong fields: the magneto-optical ρ_V term (Faraday rotation) changes sign and rotates
    the linear polarisation the other way (here ≈ 0.15 I_c in Q at 1.5 kG)."""
    base = dict(B=1500.0, vlos=0.0)
    s1, ic1 = lwr.lightweaver_stokes(_uniform(hsra, inclination=40.0, azimuth=30.0, **base), hinode_grid)
    s2, _ = lwr.lightweaver_stokes(_uniform(hsra, inclination=140.0, azimuth=-30.0, **base), hinode_grid)
    s3, _ = lwr.lightweaver_stokes(_uniform(hsra, inclination=40.0, azimuth=210.0, **base), hinode_grid)
    amp = np.abs(s1[3]).max()
    assert amp > 0.02 * ic1 and np.abs(s1[1:3]).max() > 0.02 * ic1
    np.testing.assert_allclose(s2 * np.array([1, 1, -1, -1])[:, None], s1, rtol=0, atol=1e-9 * ic1)
    np.testing.assert_allclose(s3, s1, rtol=0, atol=1e-9 * ic1)  # azimuth + 180°: same Zeeman matrix
    # a transverse field along the reference direction gives Q < 0 in the core (π absorbs ∥ B)
    st, ict = lwr.lightweaver_stokes(_uniform(hsra, B=1500.0, inclination=90.0, azimuth=0.0), np.array([6302.4936]))
    assert st[1, 0] < -0.01 * ict and abs(st[2, 0]) < 1e-10 * ict


def test_positive_vlos_is_a_redshift(hsra):
    v_kms = 1.5
    wav = np.arange(6301.30, 6301.70, 0.001)
    s0, ic0 = lwr.lightweaver_stokes(_uniform(hsra, B=0.0, vlos=0.0), wav)
    s1, ic1 = lwr.lightweaver_stokes(_uniform(hsra, B=0.0, vlos=v_kms * 1e5), wav)

    def core(s, ic):  # parabola through the three lowest points
        i = s[0] / ic
        k = int(np.argmin(i))
        a, b, _ = np.polyfit(wav[k - 1:k + 2] - wav[k], i[k - 1:k + 2], 2)
        return wav[k] - b / (2 * a)

    assert core(s0, ic0) == pytest.approx(6301.5012, abs=5e-4)
    shift = core(s1, ic1) - core(s0, ic0)
    assert shift == pytest.approx(6301.5012 * v_kms / C_KMS, abs=1e-3)


# ----------------------------------------------------------------------------- bad input
def test_bad_input_is_rejected(hsra, hinode_grid):
    with pytest.raises(ValueError, match="mu"):
        lwr.lightweaver_stokes(hsra, hinode_grid, mu=0.0)
    with pytest.raises(ValueError, match="mu"):
        lwr.lightweaver_stokes(hsra, hinode_grid, mu=1.5)
    with pytest.raises(ValueError, match="wavelengths"):
        lwr.lightweaver_stokes(hsra, np.array([]))
    with pytest.raises(ValueError, match="hydrogen_from"):
        lwr.lightweaver_stokes(hsra, hinode_grid, hydrogen_from="rho")

    class Broken:
        log_tau = hsra.log_tau
        T, Pe, vmic, B = hsra.T, hsra.Pe, hsra.vmic, hsra.B
        vlos, inclination = hsra.vlos, hsra.inclination
        azimuth = hsra.azimuth[:-1]

    with pytest.raises(ValueError, match="azimuth"):
        lwr.lightweaver_stokes(Broken(), hinode_grid)
    with pytest.raises(ValueError, match="names"):
        lwr.paired_profiles([hsra], ["a", "b"], hinode_grid)


# ----------------------------------------------------------------------------- the validation
@pytest.fixture(scope="module")
def comparison(named_models, hinode_grid):
    perturbed = lwr.perturbed_atmospheres(list(named_models.values()), n=24, seed=4)
    models = list(named_models.values()) + perturbed
    names = list(named_models) + [m.name for m in perturbed]
    return lwr.compare_with_lightweaver(models, names, hinode_grid), perturbed


def test_perturbed_atmospheres_are_magnetised_and_reproducible(comparison, named_models):
    _, perturbed = comparison
    assert len(perturbed) >= 20
    assert all(m.B.max() > 0 for m in perturbed)
    assert max(m.B.max() for m in perturbed) > 2000.0
    for m in perturbed:
        assert np.all(np.abs(m.vlos) <= 2.0e5 + 1e-6) and np.all(m.T >= 3000.0)
    again = lwr.perturbed_atmospheres(list(named_models.values()), n=3, seed=4)
    for a, b in zip(perturbed[:3], again):
        np.testing.assert_array_equal(a.T, b.T)
        np.testing.assert_array_equal(a.B, b.B)


def test_synth_lte_agrees_with_lightweaver(comparison):
    """Issue goals: RMS of I/Ic < 0.02 and V amplitude within 5 % on every model."""
    df, _ = comparison
    assert df["model"].nunique() == 28
    i_rows = df[df["stokes"] == "I"]
    assert i_rows["rms"].max() < 0.02, i_rows.sort_values("rms").tail(3).to_string()
    assert i_rows["max_abs"].max() < 0.05
    assert (i_rows["Ic_ratio"] - 1).abs().max() < 0.02  # absolute continuum within 2 %
    v_rows = df[(df["stokes"] == "V") & df["amp_ratio"].notna()]
    assert len(v_rows) >= 20
    assert (v_rows["amp_ratio"] - 1).abs().max() < 0.05, v_rows.sort_values("amp_ratio").to_string()
    qu = df[df["stokes"].isin(["Q", "U"])]
    assert qu["rms"].max() < 0.005  # same Q/U sign conventions (a flipped sign would give ≈ the amplitude)
    summary = lwr.summarise_comparison(df)
    assert list(summary.index) == ["I", "Q", "U", "V"]
    table = lwr.comparison_markdown(df, models=list(NAMED))
    assert table.count("\n") == len(NAMED) + 1 and "HSRA" in table


def test_synth_lte_agrees_off_disc_centre(hsra, hinode_grid):
    """Centre-to-limb: a field-free static model is geometry-independent, so both codes can be
    compared at μ = 0.5 (with a field or flows Lightweaver takes the angles in the local frame)."""
    model = _uniform(hsra, B=0.0, vlos=0.0)
    (pair,) = lwr.paired_profiles([model], ["HSRA mu=0.5"], hinode_grid, mu=0.5)
    _, ic_centre = lwr.lightweaver_stokes(model, hinode_grid[:2], mu=1.0)
    assert 0.6 < pair.lw_Ic / ic_centre < 0.85  # limb darkening at 630 nm
    assert pair.ours_Ic / pair.lw_Ic == pytest.approx(1.0, abs=0.02)
    d = pair.ours_norm[0] - pair.lw_norm[0]
    assert np.sqrt(np.mean(d ** 2)) < 0.02
