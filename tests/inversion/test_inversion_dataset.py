"""SICON training-set generator: targets, eq. 1, shards, manifest, resume (helioforge.inversion.dataset, .targets, .forward; helioforge.physics.sicon_targets)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

import helioforge.inversion.dataset as trainset_mod
from helioforge.inversion.atmospheres import KINDS, PatchAtmosphere, load_model_set
from helioforge.inversion.config import DepthGridConfig, get_trainset_profile
from helioforge.inversion.instrument import HinodeSP
from helioforge.inversion.dataset import (
    TrainsetDataset,
    TrainsetError,
    make_trainset,
    read_manifest,
    shard_checksum,
    sicon_ranges,
    target_ranges,
)
from helioforge.inversion.forward import StokesChain
from helioforge.inversion.targets import interp_log_tau, patch_targets, target_names
from helioforge.physics.sicon_targets import QUANTITIES as TARGET_QUANTITIES
from helioforge.physics.sicon_targets import bq_bu_bv, bxbyz_from_bqbubv
from helioforge.physics.lte import Atmosphere

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- eq. 1
def test_bq_bu_bv_known_values_and_inverse():
    BQ, BU, BV = bq_bu_bv(torch.tensor([3.0]), torch.tensor([4.0]), torch.tensor([-2.0]))
    assert BQ.item() == pytest.approx(-math.sqrt(7.0))
    assert BU.item() == pytest.approx(math.sqrt(12.0))
    assert BV.item() == -2.0
    bx, by, bz = bxbyz_from_bqbubv(BQ, BU, BV, branch=0)
    assert (bx.item(), by.item(), bz.item()) == pytest.approx((3.0, 4.0, -2.0))
    bx, by, _ = bxbyz_from_bqbubv(BQ, BU, BV, branch=1)
    assert (bx.item(), by.item()) == pytest.approx((-3.0, -4.0))
    # Bx = 0: branch 0 takes φ = +90°
    d = dict(dtype=torch.float64)
    bx, by, _ = bxbyz_from_bqbubv(*bq_bu_bv(torch.tensor([0.0], **d), torch.tensor([-5.0], **d), torch.tensor([0.0], **d)))
    assert (bx.item(), by.item()) == pytest.approx((0.0, 5.0), abs=1e-12)
    with pytest.raises(ValueError, match="branch"):
        bxbyz_from_bqbubv(BQ, BU, BV, branch=2)


def test_bq_bu_bv_round_trip_up_to_the_180_ambiguity():
    g = torch.Generator().manual_seed(0)
    B = 4000 * torch.rand(5000, generator=g, dtype=torch.float64)
    gam = torch.acos(2 * torch.rand(5000, generator=g, dtype=torch.float64) - 1)
    phi = 2 * math.pi * torch.rand(5000, generator=g, dtype=torch.float64)
    Bx, By, Bz = B * torch.sin(gam) * torch.cos(phi), B * torch.sin(gam) * torch.sin(phi), B * torch.cos(gam)
    q = bq_bu_bv(Bx, By, Bz)
    # the 180° ambiguity leaves eq. 1 unchanged
    q2 = bq_bu_bv(-Bx, -By, Bz)
    for a, b in zip(q, q2):
        assert torch.allclose(a, b)
    s0 = bxbyz_from_bqbubv(*q, branch=0)
    s1 = bxbyz_from_bqbubv(*q, branch=1)
    assert torch.allclose(s0[2], Bz) and torch.allclose(s1[2], Bz)
    assert torch.allclose(s1[0], -s0[0]) and torch.allclose(s1[1], -s0[1])
    match0 = torch.isclose(s0[0], Bx, atol=1e-6) & torch.isclose(s0[1], By, atol=1e-6)
    match1 = torch.isclose(s1[0], Bx, atol=1e-6) & torch.isclose(s1[1], By, atol=1e-6)
    assert bool((match0 | match1).all())  # one of the two solutions is the original field
    assert bool((s0[0] >= -1e-9).all())  # branch 0: azimuth in (−90°, 90°]
    assert 0.4 < match0.double().mean().item() < 0.6


# ----------------------------------------------------------------------------- targets
def test_target_names_and_sicon_ranges(data_dir):
    names = target_names((0, -0.5, -1, -1.5, -2, -2.5, -3))
    assert len(names) == 49 and names[0] == "T@logtau=0" and names[7] == "vz@logtau=0" and names[-1] == "BV@logtau=-3"
    lo, hi = sicon_ranges(data_dir / "stokes" / "instrument" / "encdec_normalization.npz")
    assert lo.shape == hi.shape == (49,) and bool((lo < hi).all())
    # SICON stores vz in cm/s and z in cm: converted to km/s and km
    assert lo[7] == pytest.approx(-8.72, abs=0.01) and hi[7] == pytest.approx(15.38, abs=0.01)
    assert lo[14] == pytest.approx(-763.4, abs=0.1)
    assert 3000 < lo[0] < 4000 and 4.0 < lo[21] < 5.0
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        sicon_ranges(data_dir / "nope.npz")


def _column_patch(H=4, W=4) -> tuple[PatchAtmosphere, np.ndarray]:
    """A patch with analytic stratifications: T = 5000 − 500 log τ, P_g = 10^(5 + 0.5 log τ)."""
    lt = np.round(np.arange(1.0, -3.01, -0.25), 6)
    n = lt.size
    x = torch.arange(W, dtype=torch.float64)[None, :, None].expand(H, W, n)
    ltt = torch.as_tensor(lt).expand(H, W, n)
    T = 5000 - 500 * ltt + 10 * x
    Pg = 10 ** (5 + 0.5 * ltt)
    z = -100 * ltt
    Bx = 100 * torch.ones(H, W, n, dtype=torch.float64) + x
    By = -200 * torch.ones(H, W, n, dtype=torch.float64)
    Bz = 300 * torch.ones(H, W, n, dtype=torch.float64)
    B = torch.sqrt(Bx**2 + By**2 + Bz**2)
    atm = Atmosphere(log_tau=ltt, T=T, Pe=Pg * 1e-3, vmic=torch.zeros_like(T), B=B, vlos=-1e5 * ltt,
                     inclination=torch.zeros_like(T), azimuth=torch.zeros_like(T), Pg=Pg, z=z)
    return PatchAtmosphere(atm, z, Bx, By, Bz, "quiet", {}, {}), lt


def test_patch_targets_analytic_and_rebinned():
    patch, lt = _column_patch()
    surfaces = (0.0, -0.5, -3.0)
    t = patch_targets(patch, lt, surfaces, rebin=1, z_offset_km=10.0)
    assert t.shape == (21, 4, 4) and t.dtype == torch.float32
    k = {q: i * 3 for i, q in enumerate(TARGET_QUANTITIES)}
    assert t[k["T"] + 1, 0, 0].item() == pytest.approx(5250.0)  # log τ = −0.5
    assert t[k["vz"] + 2, 0, 0].item() == pytest.approx(3.0)  # km/s
    assert t[k["z"] + 2, 0, 0].item() == pytest.approx(290.0)  # 300 − offset
    assert t[k["logP"], 0, 0].item() == pytest.approx(5.0, abs=2e-3)  # linear P interpolation at a node
    assert t[k["BQ"], 0, 0].item() == pytest.approx(-math.sqrt(200**2 - 100**2), rel=1e-5)
    assert t[k["BU"], 0, 0].item() == pytest.approx(-math.sqrt(100 * 200), rel=1e-5)
    assert t[k["BV"], 0, 0].item() == pytest.approx(300.0)
    t2 = patch_targets(patch, lt, surfaces, rebin=2)
    assert t2.shape == (21, 2, 2)
    assert t2[k["T"], 0, 1].item() == pytest.approx(5000 + 10 * 2.5)  # 2×2 mean of x = 2, 3
    with pytest.raises(ValueError, match="outside the grid"):
        interp_log_tau(patch.atmosphere.T, lt, [-5.0])


# ----------------------------------------------------------------------------- stand-in synthesis
def fake_synth(atmos, wav, mu=1.0):
    """Stand-in for synth_lte (tests only): continuum ∝ T⁴ at log τ ≈ 0, Gaussian lines shifted by
    v_LOS, Q/U/V from the field at log τ ≈ −1."""
    lt = atmos.log_tau[0] if atmos.log_tau.ndim > 1 else atmos.log_tau
    i0 = int(torch.argmin(lt.abs()))
    i1 = int(torch.argmin((lt + 1).abs()))
    T0 = atmos.T[..., i0]
    ic = (T0 / 6000.0) ** 4 * 4e-5
    shift = 6301.5 * atmos.vlos[..., i1] / 3e10
    prof = torch.zeros(*T0.shape, wav.numel(), dtype=T0.dtype)
    for lam in (6301.5012, 6302.4936):
        prof = prof + torch.exp(-(((wav - lam - shift[..., None]) / 0.05) ** 2))
    I = ic[..., None] * (1 - 0.6 * prof)
    B = atmos.B[..., i1, None] * 1e-4
    g = torch.deg2rad(atmos.inclination[..., i1, None])
    p = torch.deg2rad(atmos.azimuth[..., i1, None])
    Q = ic[..., None] * prof * B * torch.sin(g) ** 2 * torch.cos(2 * p)
    U = ic[..., None] * prof * B * torch.sin(g) ** 2 * torch.sin(2 * p)
    V = ic[..., None] * torch.gradient(prof, dim=-1)[0] * B * torch.cos(g)
    return torch.stack([I, Q, U, V], dim=-2), ic


def _tiny(n_patches=4, shard_size=2, size=6, seed=0):
    p = get_trainset_profile("tiny")
    p.trainset = dataclasses.replace(p.trainset, n_patches=n_patches, shard_size=shard_size, patch_size=size,
                                     qs_reference_size=8, seed=seed)
    p.grid = DepthGridConfig(log_tau_step=0.25, log_tau_bottom=1.0)
    return p


@pytest.fixture(scope="module")
def instrument(data_dir):
    return HinodeSP.from_data(data_dir)


def test_shards_round_trip_manifest_and_dataset(tmp_path, data_dir, instrument):
    prof = _tiny()
    out = tmp_path / "set"
    man = make_trainset(out, prof, synthesize=fake_synth, instrument=instrument, root=data_dir, progress=False)
    assert man["complete"] and man["counts"]["patches"] == 4 and man["counts"]["shards"] == 2
    on_disk = read_manifest(out)
    assert on_disk["digest"] == man["digest"] and on_disk["complete"]
    assert on_disk["software"]["helioforge"] and on_disk["seed"] == 0
    assert on_disk["targets"]["names"] == target_names(prof.trainset.target_log_tau)
    assert on_disk["targets"]["log_tau"] == list(prof.trainset.target_log_tau)
    assert on_disk["stokes"]["shape"] == [4, 112, 6, 6] and len(on_disk["stokes"]["wavelengths_air_A"]) == 112
    assert on_disk["stokes"]["noise_sigma"] == 1e-3 and "noise-free" in on_disk["stokes"]["noise"]
    assert on_disk["targets"]["units"]["vz"].startswith("km s-1, positive = downflow")
    assert sum(on_disk["counts"]["kinds"].values()) == 4 and set(on_disk["counts"]["kinds"]) == set(KINDS)
    for e in on_disk["shards"]:
        assert shard_checksum(out / e["file"]) == e["sha256"]
    assert not list(out.glob(".*partial"))

    ds = TrainsetDataset(out)
    assert len(ds) == 4
    s, t = ds[3]
    assert s.shape == (4, 112, 6, 6) and t.shape == (49, 6, 6) and s.dtype == torch.float32
    assert bool(torch.isfinite(s).all()) and bool(torch.isfinite(t).all())
    # same as a fresh draw of patch 3 (seeded per patch)
    models = load_model_set(prof.atmosphere.models, prof.grid, data_dir)
    chain = StokesChain(fake_synth, instrument, oversampling=prof.trainset.wavelength_oversampling)
    ref = {"ic_quiet_sun": man["stokes"]["ic_quiet_sun_cgs"], "z_offset_km": man["targets"]["z_offset_km"]}
    s3, t3, k3 = trainset_mod.make_patch(3, prof, models, chain, ref)
    assert np.allclose(s.numpy(), s3, rtol=1e-6, atol=1e-7) and np.allclose(t.numpy(), t3, rtol=1e-6)
    assert ds.kind(3) == KINDS[k3]
    # quiet-Sun normalisation: continuum of the stand-in near 1 outside spots
    if ds.kind(3) != "spot":
        assert s[0, 0].mean().item() == pytest.approx(1.0, abs=0.15)
    # online noise (paper §2 step 5)
    noisy = TrainsetDataset(out, noise_sigma=1e-3, generator=torch.Generator().manual_seed(0))[3][0]
    assert (noisy - s).std().item() == pytest.approx(1e-3, rel=0.1)
    with pytest.raises(IndexError):
        ds[4]

    df = target_ranges(out, sicon_path=data_dir / "stokes" / "instrument" / "encdec_normalization.npz")
    allt = torch.stack([ds[i][1] for i in range(4)])
    assert df["min"].to_numpy() == pytest.approx(allt.amin(dim=(0, 2, 3)).double().numpy(), rel=1e-6)
    assert df["max"].to_numpy() == pytest.approx(allt.amax(dim=(0, 2, 3)).double().numpy(), rel=1e-6)
    assert (out / "target_ranges.csv").is_file()
    rep = json.loads((out / "target_ranges.json").read_text())
    assert len(rep["rows"]) == 49 and rep["rows"][0]["sicon_min"] == pytest.approx(3814.46, abs=0.01)


def test_resume_skips_finished_shards_and_refuses_other_settings(tmp_path, data_dir, instrument, monkeypatch):
    prof = _tiny(n_patches=3, shard_size=2, size=4, seed=3)
    out = tmp_path / "set"
    made: list[int] = []
    real = trainset_mod.make_patch

    def counting(index, *a, **k):
        made.append(index)
        return real(index, *a, **k)

    monkeypatch.setattr(trainset_mod, "make_patch", counting)
    man = make_trainset(out, prof, synthesize=fake_synth, instrument=instrument, root=data_dir, progress=False,
                        max_shards=1)
    assert made == [0, 1] and not man["complete"] and man["counts"]["patches"] == 2
    with pytest.raises(TrainsetError, match="incomplete"):
        TrainsetDataset(out)
    assert len(TrainsetDataset(out, allow_incomplete=True)) == 2
    first = (out / "shard_00000.zarr" / "zarr.json").stat().st_mtime_ns
    # a half-written shard left by an interrupted run is discarded and remade
    (out / ".shard_00001.zarr.partial").mkdir()
    made.clear()
    man = make_trainset(out, prof, synthesize=fake_synth, instrument=instrument, root=data_dir, progress=False)
    assert made == [2] and man["complete"] and man["counts"]["patches"] == 3
    assert (out / "shard_00000.zarr" / "zarr.json").stat().st_mtime_ns == first
    assert [e["n"] for e in man["shards"]] == [2, 1]
    assert len(TrainsetDataset(out)) == 3
    # other settings in the same folder are refused
    other = _tiny(n_patches=3, shard_size=2, size=4, seed=4)
    with pytest.raises(TrainsetError, match="other settings"):
        make_trainset(out, other, synthesize=fake_synth, instrument=instrument, root=data_dir, progress=False)
    with pytest.raises(TrainsetError, match="no manifest"):
        TrainsetDataset(tmp_path / "empty")


def test_a_set_is_finished_with_the_kernel_it_was_started_with(tmp_path, data_dir, instrument):
    """Sets made before the fused kernel (synthesis_kernel="torch") keep their digest and are
    resumed with the torch kernel under the new default (issue 15)."""
    prof = _tiny(n_patches=2, shard_size=1, size=4, seed=5)
    assert prof.trainset.synthesis_kernel == "fused"  # the default
    old = dataclasses.replace(prof, trainset=dataclasses.replace(prof.trainset, synthesis_kernel="torch"))
    out, whole = tmp_path / "started_with_torch", tmp_path / "torch_in_one_go"
    make_trainset(out, old, instrument=instrument, root=data_dir, progress=False, max_shards=1)
    man = make_trainset(out, prof, instrument=instrument, root=data_dir, progress=False)  # the default profile
    assert man["complete"] and man["synthesis_kernel"] == "torch"
    ref = make_trainset(whole, old, instrument=instrument, root=data_dir, progress=False)
    assert [e["sha256"] for e in man["shards"]] == [e["sha256"] for e in ref["shards"]]
    # the fused kernel's set is another set (another digest), close to the torch one
    fused = make_trainset(tmp_path / "fused", prof, instrument=instrument, root=data_dir, progress=False)
    assert fused["digest"] != ref["digest"] and fused["synthesis_kernel"] == "fused"
    a, b = TrainsetDataset(tmp_path / "fused")[1][0], TrainsetDataset(whole)[1][0]
    assert float((a - b).abs().max()) < 5e-5  # I_c units


def test_paper_geometry_rebin_and_margin(data_dir, instrument):
    """0.08″ model pixels rebinned 2×2, with a margin cropped after the PSF."""
    prof = _tiny(size=4)
    prof.trainset = dataclasses.replace(prof.trainset, model_pixel_arcsec=0.08, margin_px=1)
    assert prof.trainset.rebin() == 2
    models = load_model_set(prof.atmosphere.models, prof.grid, data_dir)
    chain = StokesChain(fake_synth, instrument)
    s, t, k = trainset_mod.make_patch(0, prof, models, chain, {"ic_quiet_sun": 4e-5, "z_offset_km": 0.0})
    assert s.shape == (4, 112, 4, 4) and t.shape == (49, 4, 4) and k in range(3)
    assert np.isfinite(s).all() and np.isfinite(t).all()


def test_real_synthesis_end_to_end(tmp_path, data_dir, instrument):
    """One tiny set through the real chain: synth_lte → HinodeSP.degrade → shards."""
    prof = _tiny(n_patches=1, shard_size=1, size=4, seed=1)
    prof.trainset = dataclasses.replace(prof.trainset, qs_reference_size=4)
    prof.grid = DepthGridConfig(log_tau_step=0.3, log_tau_bottom=1.2, log_tau_top=-3.9)
    man = make_trainset(tmp_path / "real", prof, instrument=instrument, root=data_dir, progress=False)
    assert man["complete"] and man["timing"]["seconds_per_patch"] > 0
    s, t = TrainsetDataset(tmp_path / "real")[0]
    assert bool(torch.isfinite(s).all()) and bool(torch.isfinite(t).all())
    I = s[0]
    assert 0.1 < I[0].mean().item() < 1.3  # continuum in quiet-Sun units
    assert I.min().item() < 0.9 * I[0].min().item()  # absorption lines
    assert s[3].abs().max().item() > 1e-4 or t[42:].abs().max().item() < 50  # V where there is a field


def test_the_fused_kernel_is_refused_off_the_cpu_and_a_bad_kernel_named(tmp_path, data_dir, instrument):
    from typer.testing import CliRunner

    from helioforge.cli import app
    from helioforge.errors import InputError

    with pytest.raises(InputError, match="fused synthesis kernel runs on the CPU"):
        make_trainset(tmp_path / "gpu", _tiny(n_patches=1, shard_size=1, size=4), instrument=instrument,
                      root=data_dir, progress=False, device="cuda")
    r = CliRunner().invoke(app, ["inversion", "make-trainset", "-o", str(tmp_path / "k"), "-p", "tiny", "--kernel", "gpu"])
    assert r.exit_code == 2 and "synthesis_kernel must be one of 'torch', 'fused'" in r.output
    assert not (tmp_path / "k" / "manifest.json").exists()
