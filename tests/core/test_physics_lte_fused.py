"""The fused LTE kernel (issue 15): its Faddeeva regions, its agreement with the torch synthesis,
and the warm-started electron-pressure solve of the hydrostatic equilibrium."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numba
import numpy as np
import pytest
import torch
from scipy.special import wofz

from helioforge.data.sir import read_sir
from helioforge.physics.eos import electron_pressure
from helioforge.physics.lte import Atmosphere, hydrostatic_equilibrium, synth_lte
from helioforge.physics.lte_fused import FAR_REGION, MID_REGION, faddeeva_regions

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: validation/
from validation import lightweaver_ref as lwr  # noqa: E402

NAMED = ("FALC11", "hsra11", "emaltby11", "penumjti11")


@pytest.mark.parametrize("y", [0.0, 1e-4, 0.01, 0.1, 0.5, 1.0, 2.0, 5.0])
def test_each_faddeeva_region_is_within_1_3e_5_of_wofz(y):
    x = np.linspace(-80.0, 80.0, 16001)
    w = faddeeva_regions(x, np.full_like(x, y))
    ref = wofz(x + 1j * y)
    rel = np.abs(w - ref) / np.abs(ref)
    far, core = np.abs(x) >= FAR_REGION, np.abs(x) < MID_REGION
    mid = ~far & ~core
    for region in (far, mid, core):
        assert region.any() and rel[region].max() < 1.3e-5
    # the pole forms are what they claim to be: H even, L odd in x
    assert np.allclose(w.real, w.real[::-1], rtol=1e-6, atol=0) and np.allclose(w.imag, -w.imag[::-1], rtol=1e-6, atol=1e-12)


def _with_field(m):
    n = m.log_tau.size
    return replace(m, B=np.full(n, 1500.0), inclination=np.full(n, 60.0), azimuth=np.full(n, 30.0))


@pytest.fixture(scope="module")
def validation_atmospheres(atmos_dir):
    """The 32 atmospheres of the Lightweaver validation: 4 models, the same with a uniform field,
    24 perturbed magnetised ones (seed 4)."""
    named = [read_sir(atmos_dir / f"{stem}.mod") for stem in NAMED]
    with_field = [_with_field(m) for m in named]
    return named + with_field + lwr.perturbed_atmospheres(named, n=24, seed=4)


@pytest.fixture(scope="module")
def sp_grid(data_dir):
    from helioforge.data.hinode import hinode_wavelengths

    return torch.as_tensor(hinode_wavelengths(data_dir / "stokes" / "instrument" / "wavelength_Hinode.txt"))


def test_fused_kernel_matches_the_float64_synthesis_on_the_32_validation_atmospheres(validation_atmospheres, sp_grid):
    assert len(validation_atmospheres) == 32
    worst_rms = np.zeros(4)
    worst_abs = np.zeros(4)
    for model in validation_atmospheres:
        atm = Atmosphere.from_sir(model)
        ref, ic_ref = synth_lte(atm, sp_grid)
        got, ic = synth_lte(atm, sp_grid, kernel="fused")
        assert got.dtype == torch.float64 and got.shape == ref.shape == (4, sp_grid.numel())
        assert float(ic) == pytest.approx(float(ic_ref), rel=2e-6)
        d = (got / ic_ref - ref / ic_ref).numpy()
        worst_rms = np.maximum(worst_rms, np.sqrt((d ** 2).mean(-1)))
        worst_abs = np.maximum(worst_abs, np.abs(d).max(-1))
    assert (worst_rms < 1e-4).all(), worst_rms  # the bound, in I_c
    assert (worst_rms < 1e-5).all() and (worst_abs < 5e-5).all(), (worst_rms, worst_abs)  # what it achieves


def test_fused_kernel_batches_orders_mu_and_dtypes(atmos_dir, sp_grid):
    hsra = read_sir(atmos_dir / "hsra11.mod")
    models = [hsra, _with_field(hsra)]
    atm = Atmosphere.stack([Atmosphere.from_sir(m) for m in models] * 3)  # (6, n), deepest first
    batch = Atmosphere(**{k: (v.reshape(2, 3, -1) if isinstance(v, torch.Tensor) and v.dim() == 2 else v)
                          for k, v in vars(atm).items()})
    st, ic = synth_lte(batch, sp_grid, kernel="fused", mu=0.6)
    assert st.shape == (2, 3, 4, sp_grid.numel()) and ic.shape == (2, 3)
    ref, ic_ref = synth_lte(batch, sp_grid, mu=0.6)
    assert torch.allclose(st / ic_ref[..., None, None], ref / ic_ref[..., None, None], atol=5e-5, rtol=0)
    # top first gives the same numbers as deepest first
    flipped = Atmosphere(**{k: (v.flip(-1) if isinstance(v, torch.Tensor) else v) for k, v in vars(atm).items()})
    a, _ = synth_lte(atm, sp_grid, kernel="fused")
    b, _ = synth_lte(flipped, sp_grid, kernel="fused")
    assert torch.equal(a, b)
    # float32 in, float32 out
    atm32 = Atmosphere(**{k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in vars(atm).items()})
    s32, _ = synth_lte(atm32, sp_grid, kernel="fused")
    assert s32.dtype == torch.float32 and torch.allclose(s32.double(), a, rtol=1e-5, atol=1e-12)


def test_fused_kernel_is_thread_count_independent_and_field_free_is_unpolarised(atmos_dir, sp_grid):
    m = read_sir(atmos_dir / "hsra11.mod")
    atm = Atmosphere.stack([Atmosphere.from_sir(m)] * 8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, _ = synth_lte(atm, sp_grid, kernel="fused")
        torch.set_num_threads(max(2, numba.config.NUMBA_NUM_THREADS))
        many, _ = synth_lte(atm, sp_grid, kernel="fused")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)  # a shard made by one worker equals one made by another
    # B = 0 in HSRA: Q, U, V vanish (to float32 rounding of the σ sums)
    assert one[:, 1:].abs().max() < 1e-7 * one[:, 0].abs().max()


def test_fused_kernel_refuses_bad_arguments(atmos_dir):
    atm = Atmosphere.from_sir(read_sir(atmos_dir / "hsra11.mod"))
    with pytest.raises(ValueError, match="kernel must be"):
        synth_lte(atm, torch.linspace(6301.0, 6303.0, 20), kernel="cuda")
    with pytest.raises(ValueError, match="strictly increasing"):
        synth_lte(atm, torch.linspace(6303.0, 6301.0, 20), kernel="fused")


def test_warm_started_hydrostatic_equilibrium_is_the_same_solution(atmos_dir):
    m = read_sir(atmos_dir / "emaltby11.mod")  # an umbra: H₂ matters, the hardest case
    lt = torch.as_tensor(m.log_tau)
    g = torch.Generator().manual_seed(3)
    T = torch.as_tensor(m.T) * (1.0 + 0.05 * torch.randn(40, 1, generator=g, dtype=torch.float64))
    ref = hydrostatic_equilibrium(lt.expand_as(T), T)
    warm = hydrostatic_equilibrium(lt.expand_as(T), T, warm_start=True)
    for a, b in zip(ref[:3], warm[:3]):
        assert torch.allclose(a, b, rtol=1e-9, atol=0)
    assert torch.allclose(ref[3], warm[3], rtol=0, atol=1e-6)  # z [km]


def test_electron_pressure_from_a_poor_guess_falls_back_to_the_bracket():
    T = torch.tensor([4000.0, 5800.0, 9000.0], dtype=torch.float64)
    Pg = torch.tensor([1e3, 1e5, 1e6], dtype=torch.float64)
    ref = electron_pressure(T, Pg)
    for guess in (torch.log(Pg) - 25.0, torch.log(Pg), torch.full_like(Pg, float("nan"))):
        assert torch.allclose(electron_pressure(T, Pg, initial=guess), ref, rtol=1e-10, atol=0)
