"""Atmosphere cubes: FITS round trip, field branches, smooth models from seven surfaces,
re-synthesis against the training chain, and the SPINOR reference reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helioforge.data.fits import FitsReadError
from helioforge.inversion.atmos_cube import (AtmosCube, read_atmos_cube, read_spinor, resynthesize,
                                             targets_to_atmosphere, write_atmos_cube)
from helioforge.inversion.targets import field_vector, split_targets
from helioforge.physics.sicon_targets import TARGET_LOG_TAU, bq_bu_bv


def _cube(rng, ny=3, nx=4):
    cube = np.zeros((7, 7, ny, nx))
    cube[0] = 6000 - 500 * np.arange(7)[:, None, None] + rng.normal(0, 50, (7, ny, nx))
    cube[1] = rng.normal(0, 1, (7, ny, nx))
    cube[2] = 150 * np.arange(7)[:, None, None]
    cube[3] = 5.1 - 0.2 * np.arange(7)[:, None, None]
    Bx, By, Bz = (torch.as_tensor(rng.normal(0, 800, (7, ny, nx))) for _ in range(3))
    cube[4:7] = torch.stack(bq_bu_bv(Bx, By, Bz)).numpy()
    return cube, (Bx.numpy(), By.numpy(), Bz.numpy())


def test_cube_round_trip_and_field_branches(tmp_path):
    rng = np.random.default_rng(0)
    cube, (Bx, By, Bz) = _cube(rng)
    b0, b1 = field_vector(cube, 0), field_vector(cube, 1)
    assert np.allclose(b0[:2], -b1[:2]) and np.allclose(b0[2], Bz)
    # one of the two branches is the true field at every point (180° ambiguity)
    ok = np.isclose(b0[0], Bx, atol=1e-6) & np.isclose(b0[1], By, atol=1e-6)
    ok |= np.isclose(b1[0], Bx, atol=1e-6) & np.isclose(b1[1], By, atol=1e-6)
    assert ok.all()
    path = write_atmos_cube(tmp_path / "a.fits", AtmosCube(data=cube, bxyz=b1, branch=1, params={"network": "encdec"}))
    back = read_atmos_cube(path)
    assert back.data.shape == (7, 7, 3, 4) and back.branch == 1 and back.log_tau == TARGET_LOG_TAU
    assert np.allclose(back.data, cube, rtol=1e-6, atol=1e-3)
    assert np.allclose(back.quantity("By"), b1[1], atol=1e-3)
    with pytest.raises(KeyError):
        back.quantity("Bphi")
    (tmp_path / "bad.fits").write_bytes(b"not fits")
    with pytest.raises(FitsReadError, match="bad.fits"):
        read_atmos_cube(tmp_path / "bad.fits")


def test_split_targets_shape_errors():
    assert split_targets(np.zeros((49, 5, 6))).shape == (7, 7, 5, 6)
    with pytest.raises(ValueError, match="49"):
        split_targets(np.zeros((48, 5, 6)))


def test_smooth_model_passes_through_the_surfaces(data_dir):
    rng = np.random.default_rng(1)
    cube, _ = _cube(rng, 2, 2)
    atm = targets_to_atmosphere(cube)
    grid = atm.log_tau.numpy()
    for k, lt in enumerate(TARGET_LOG_TAU):
        j = int(np.argmin(np.abs(grid - lt)))
        assert np.allclose(atm.T[..., j].numpy(), cube[0, k], rtol=1e-6)
        assert np.allclose(np.log10(atm.Pg[..., j].numpy()), cube[3, k], atol=1e-6)
        assert np.allclose(atm.vlos[..., j].numpy(), cube[1, k] * 1e5, rtol=1e-6)
    assert torch.all(atm.Pe > 0) and torch.all(atm.Pe < atm.Pg)


def test_resynthesis_of_true_targets_matches_the_training_chain(tmp_path, data_dir, one_torch_thread):
    from helioforge.inversion.dataset import TrainsetDataset, make_trainset

    man = make_trainset(tmp_path / "ts", "tiny", progress=False)
    ds = TrainsetDataset(tmp_path / "ts")
    stokes, targets = ds[0][:2]
    rs, deconvolved = resynthesize(split_targets(targets), man["stokes"]["ic_quiet_sun_cgs"])
    assert deconvolved.shape == rs.shape
    assert rs.shape == tuple(stokes.shape)
    rms_i = float(np.sqrt(np.mean((rs[0] - stokes[0].numpy()) ** 2)))
    assert rms_i < 0.05  # smooth model from 7 surfaces, fixed v_mic: close, not equal (paper §4.4)


def test_read_spinor_reference(data_dir):
    ref = read_spinor(data_dir / "stokes" / "hinode_sp_sample" / "spinor_inv")
    assert np.allclose(ref["log_tau"], [0, -1, -2], atol=1e-6)
    assert ref["T"].shape == (3, 5, 5)
    assert 5800 < np.median(ref["T"][0]) < 7000 and np.median(ref["T"][2]) < np.median(ref["T"][0])
    assert np.all(np.abs(ref["vz"]) < 5) and np.all(np.abs(ref["Bz"]) < 1000)
    with pytest.raises(FitsReadError):
        read_spinor(data_dir / "stokes" / "hinode_sp_sample" / "hinode4d.20130912.sample.fits")
