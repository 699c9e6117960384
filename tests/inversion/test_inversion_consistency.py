"""Issue 13, defects 1 and 2: the network inputs and the quiet-Sun reference are the same in
training, validation and inversion.

1. The encoder–decoder's log-amplitude channels had each map's own mean subtracted: per 16×16
   training patch, per whole map at inversion. They now have one fixed offset of the training
   set, stored in the weights' sidecar.
2. A held-out set was normalised against a quiet-Sun reference map drawn from its own seed. The
   reference now has its own seed, can be taken from another set (``reference_from``), is stored
   in the manifest, and validation refuses a set with another reference.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from helioforge.errors import ProductError
from helioforge.inversion.config import DepthGridConfig, get_trainset_profile
from helioforge.inversion.instrument import HinodeSP
from helioforge.inversion.config import get_sicon_profile
from helioforge.inversion.infer import SiconInverter
from helioforge.inversion.model import network_inputs
from helioforge.inversion.train import log_amplitude_offset, train_sicon
from helioforge.inversion.dataset import (
    TrainsetDataset,
    TrainsetError,
    make_trainset,
    quiet_sun_reference_of,
    read_manifest,
    require_same_reference,
)
from helioforge.nn.sicon import encdec_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- helpers
# the stand-in synthesis of the training-set tests (continuum ∝ T⁴, Gaussian lines, weak-field Q/U/V)
from test_inversion_dataset import fake_synth  # noqa: E402


def _tiny(seed=0, qs_size=8, n_patches=4):
    p = get_trainset_profile("tiny")
    p.trainset = dataclasses.replace(p.trainset, n_patches=n_patches, shard_size=2, patch_size=6,
                                     qs_reference_size=qs_size, seed=seed)
    p.grid = DepthGridConfig(log_tau_step=0.25, log_tau_bottom=1.0)
    return p


def _quadrant_map(n=64, quiet_v=5e-3, magnetic_v=5e-2):
    """Stokes map (4, 112, n, n): I = 1 with a line, V of amplitude ``quiet_v`` everywhere but
    ``magnetic_v`` in the lower-right quadrant (a plage or spot corner); Q = U = 0."""
    lam = torch.linspace(-1.0, 1.0, 112)
    line = torch.exp(-(lam / 0.1) ** 2)
    s = torch.zeros(4, 112, n, n)
    s[0] = (1 - 0.6 * line)[:, None, None]
    vshape = torch.gradient(line)[0]
    vshape = vshape / vshape.abs().max()
    amp = torch.full((n, n), quiet_v)
    amp[n // 2:, n // 2:] = magnetic_v
    s[3] = vshape[:, None, None] * amp[None]
    return s


@pytest.fixture(scope="module")
def instrument(data_dir):
    return HinodeSP.from_data(data_dir)


@pytest.fixture(scope="module")
def sets(tmp_path_factory, data_dir, instrument):
    """Training set A (seed 0), held-out B (seed 1, same settings), C (other reference map size),
    D (C's settings with A's reference)."""
    base = tmp_path_factory.mktemp("issue13")
    kw = dict(synthesize=fake_synth, instrument=instrument, root=data_dir, progress=False)
    out = {}
    for name, prof, ref in (("A", _tiny(0), None), ("B", _tiny(1), None), ("C", _tiny(2, qs_size=12), None),
                            ("D", _tiny(2, qs_size=12), "A")):
        out[name] = base / name
        make_trainset(out[name], prof, reference_from=out[ref] if ref else None, **kw)
    return out


@pytest.fixture(scope="module")
def trained(sets, tmp_path_factory):
    work = tmp_path_factory.mktemp("issue13_train")
    stem = train_sicon(sets["A"], work / "train_encdec", "encdec", "tiny", accelerator="cpu", progress=False)
    return stem, work


# --------------------------------------------------------------------------- defect 1
def test_per_map_mean_made_the_same_pixel_differ_and_the_fixed_offset_does_not():
    """The issue's example: a V-magnetic pixel of a 64×64 map with one magnetic quadrant had
    +0.75 dex in its V channel, the same pixel in a 16×16 patch of that quadrant 0.00."""
    m = _quadrant_map()
    patch = m[..., 40:56, 40:56]  # inside the magnetic quadrant
    y, x = 45, 50
    v = 448 + 2  # the V log-amplitude channel
    old_map = encdec_inputs(m)[0, v, y, x]  # log_amplitude_offset=None: the old per-map mean
    old_patch = encdec_inputs(patch)[0, v, y - 40, x - 40]
    assert float(old_map) == pytest.approx(0.75, abs=1e-4)  # ¾ of the 1 dex contrast
    assert float(old_patch) == pytest.approx(0.0, abs=1e-6)
    offset = [-2.3, -2.3, -1.8]
    new_map = encdec_inputs(m, log_amplitude_offset=offset)
    new_patch = encdec_inputs(patch, log_amplitude_offset=offset)
    assert torch.equal(new_map[..., 40:56, 40:56], new_patch)  # every channel, every pixel
    assert float(new_map[0, v, y, x]) == pytest.approx(np.log10(5e-2) + 1.8, abs=1e-5)
    with pytest.raises(ValueError, match="3 finite numbers"):
        encdec_inputs(m, log_amplitude_offset=[0.0, 1.0])


def test_encdec_inputs_need_the_offset():
    with pytest.raises(ValueError, match="log-amplitude offset"):
        network_inputs(_quadrant_map(16)[None], {"network": "encdec", "amplitude_floor": 5e-3})


def test_offset_is_stored_with_the_weights_and_used_by_the_inverter(trained, sets):
    stem, _ = trained
    cfg = json.loads(stem.with_suffix(".json").read_text())
    pre = cfg["preprocessing"]
    off = pre["log_amplitude_offset"]
    assert len(off) == 3 and np.all(np.isfinite(off)) and pre["input_version"] == 2
    # it is the training split's mean, reproducibly
    ds = TrainsetDataset(sets["A"])
    tc = get_sicon_profile("tiny").train
    n_val = max(1, int(round(tc.validation_fraction * len(ds))))
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(tc.seed)).tolist()
    again = log_amplitude_offset(ds, sorted(perm[n_val:]), cfg["model"], tc.noise_sigma, tc.seed)
    assert again == pytest.approx(off, abs=1e-9)
    assert cfg["quiet_sun_reference"]["ic_quiet_sun_cgs"] == read_manifest(sets["A"])["stokes"]["ic_quiet_sun_cgs"]
    assert cfg["stokes"]["pixel_arcsec"] == pytest.approx(0.16)
    # the inverter gives a pixel the same input in a patch and in a large map
    inv = SiconInverter.from_weights(stem, device="cpu")
    assert inv.log_amplitude_offset == pytest.approx(off)
    m = _quadrant_map()
    full = network_inputs(m[None], inv.model_cfg)
    part = network_inputs(m[None, ..., 40:56, 40:56], inv.model_cfg)
    assert torch.equal(full[..., 40:56, 40:56], part)
    assert torch.isfinite(inv.invert(m)).all()


def test_old_weights_without_offset_are_refused(trained, tmp_path):
    stem, _ = trained
    old = tmp_path / "sicon_encdec"
    shutil.copy(stem.with_suffix(".safetensors"), old.with_suffix(".safetensors"))
    cfg = json.loads(stem.with_suffix(".json").read_text())
    del cfg["preprocessing"]["log_amplitude_offset"]
    old.with_suffix(".json").write_text(json.dumps(cfg))
    with pytest.raises(ProductError, match="log-amplitude offset") as err:
        SiconInverter.from_weights(old, device="cpu")
    assert str(old.with_suffix(".json")) in str(err.value) and "retrain" in str(err.value)


# --------------------------------------------------------------------------- defect 2
def test_held_out_set_with_another_seed_shares_the_reference(sets):
    a, b = (quiet_sun_reference_of(read_manifest(sets[k]), sets[k]) for k in "AB")
    man = read_manifest(sets["A"])
    assert man["quiet_sun_reference"]["id"] == a["id"] and "2**32" in man["quiet_sun_reference"]["source"]
    # before issue 13 the reference map was drawn from default_rng([seed, 2**32]): B (seed 1) had another one
    assert a["ic_quiet_sun_cgs"] == b["ic_quiet_sun_cgs"] and a["z_offset_km"] == b["z_offset_km"]
    require_same_reference(a, b, sets["A"], sets["B"])


def test_other_reference_is_refused_naming_both_sets(sets):
    a = quiet_sun_reference_of(read_manifest(sets["A"]), sets["A"])
    c = quiet_sun_reference_of(read_manifest(sets["C"]), sets["C"])
    assert a["ic_quiet_sun_cgs"] != c["ic_quiet_sun_cgs"]
    with pytest.raises(TrainsetError, match="another quiet-Sun reference") as err:
        require_same_reference(a, c, sets["A"], sets["C"])
    assert str(sets["A"]) in str(err.value) and str(sets["C"]) in str(err.value)
    assert "--reference-from" in str(err.value)


def test_reference_from_shares_the_training_reference(sets, data_dir, instrument):
    a = quiet_sun_reference_of(read_manifest(sets["A"]), sets["A"])
    man_d = read_manifest(sets["D"])
    d = quiet_sun_reference_of(man_d, sets["D"])
    assert (d["ic_quiet_sun_cgs"], d["z_offset_km"]) == (a["ic_quiet_sun_cgs"], a["z_offset_km"])
    assert str(sets["A"]) in man_d["quiet_sun_reference"]["source"]
    # the same settings as C but A's reference: D's Stokes maps are C's times I_c(C) / I_c(A)
    c = quiet_sun_reference_of(read_manifest(sets["C"]), sets["C"])
    sc, sd = TrainsetDataset(sets["C"])[0][0], TrainsetDataset(sets["D"])[0][0]
    ratio = c["ic_quiet_sun_cgs"] / a["ic_quiet_sun_cgs"]
    assert torch.allclose(sd, sc * ratio, rtol=1e-5, atol=1e-7)
    # resuming C's folder with A's reference is refused, naming both
    with pytest.raises(TrainsetError, match="another quiet-Sun reference") as err:
        make_trainset(sets["C"], _tiny(2, qs_size=12), synthesize=fake_synth, instrument=instrument, root=data_dir,
                      progress=False, reference_from=sets["A"])
    assert str(sets["A"]) in str(err.value) and str(sets["C"]) in str(err.value)


def test_validation_refuses_a_set_of_another_reference(trained, sets, tmp_path):
    from helioforge.inversion.pipeline import run_validation

    stem, work = trained
    with pytest.raises(TrainsetError, match="another quiet-Sun reference") as err:
        run_validation(work, sets["C"], None, None, tmp_path / "report", networks=("encdec",), me_pixels=1)
    msg = str(err.value)
    assert str(sets["A"].resolve()) in msg and str(sets["C"]) in msg
    assert not (tmp_path / "report").exists()  # refused before anything is written


# --------------------------------------------------------------------------- defect 4, end to end
def test_invert_map_checks_the_pixel_scale(trained, data_dir, tmp_path, caplog):
    """The sample cube has no XSCALE (assumed 0.16″, said); a copy with XSCALE = 0.30″ is
    resampled to the trained pixel before the network, with a warning naming the file."""
    import logging

    from astropy.io import fits

    from helioforge.inversion.infer import invert_map

    stem, _ = trained
    sample = data_dir / "stokes" / "hinode_sp_sample" / "hinode4d.20130912.sample.fits"
    with caplog.at_level(logging.WARNING, logger="helioforge.inversion.preprocess"):
        cube, info = invert_map(sample, stem, device="cpu")
    assert info["pixel_scale"]["source"] == "assumed" and cube.params["pixel_scale_source"] == "assumed"
    assert str(sample) in caplog.text and "no XSCALE and no YSCALE card" in caplog.text
    assert cube.data.shape == (7, 7, 5, 5)
    fast = tmp_path / "fast.fits"
    with fits.open(sample, memmap=False) as hdul:
        hdul[0].header["XSCALE"] = 0.30
        hdul[0].header["YSCALE"] = 0.16
        hdul.writeto(fast)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="helioforge.inversion.preprocess"):
        cube, info = invert_map(fast, stem, device="cpu")
    assert cube.data.shape == (7, 7, 5, 9)  # round(5 · 0.30 / 0.16) scan positions at 0.16″
    assert cube.params["pixel_resampled"] == "x" and cube.params["pixel_scale_x"] == pytest.approx(0.16)
    assert str(fast) in caplog.text and "resampled along x from 5 to 9 pixels" in caplog.text
    assert np.isfinite(cube.data).all()


# --------------------------------------------------------------------------- must-deliver 4, end to end
def test_bad_pixels_are_masked_and_the_rest_inverted(trained, data_dir, tmp_path):
    from astropy.io import fits
    from typer.testing import CliRunner

    from helioforge.cli import app

    stem, _ = trained
    sample = data_dir / "stokes" / "hinode_sp_sample" / "hinode4d.20130912.sample.fits"
    bad = tmp_path / "bad.fits"
    with fits.open(sample, memmap=False) as hdul:
        hdul[0].data[1, 2, :, 10] = np.nan  # (x, y, IQUV, λ): pixel x = 1, y = 2
        hdul[0].data[3, 0, 0, :] = -5.0  # negative Stokes I counts at x = 3, y = 0
        hdul.writeto(bad)
    out = tmp_path / "atmos.fits"
    r = CliRunner().invoke(app, ["invert", str(bad), "-o", str(out), "--weights", str(stem), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    with fits.open(out) as h:
        data, mask = h[0].data, h["MASK"].data
        assert h["MASK"].header["NBADNAN"] == 1 and h["MASK"].header["NBADNEG"] == 1
        assert h[0].header["HIERARCH HF bad_negative"] == 1
    assert mask.shape == (5, 5) and mask[2, 1] == 1 and mask[0, 3] == 1 and mask.sum() == 2
    assert np.isnan(data[..., 2, 1]).all() and np.isnan(data[..., 0, 3]).all()
    assert np.isfinite(data[..., mask == 0]).all()  # the valid pixels are inverted
