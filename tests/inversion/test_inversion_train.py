"""SICON training and inversion (helioforge.inversion.train, .model, .infer; paper §2–§3).

The augmentation sign rules are checked physically: the maps are moved AND the field vectors
turned with the same symmetry, then eq. 1 (targets) and the Milne-Eddington synthesis (Stokes)
are recomputed and compared with the rule.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from helioforge.inversion.config import SiconConfig, SiconModelConfig, get_sicon_profile
from helioforge.inversion.dataset import TrainsetDataset, make_trainset, read_manifest
from helioforge.inversion.infer import SiconInverter
from helioforge.inversion.model import TargetScaler, network_inputs, pad_for_network
from helioforge.inversion.train import augment_pair, augmentation_signs, dihedral, random_dihedral, train_sicon
from helioforge.physics.sicon_targets import bq_bu_bv
from helioforge.nn.sicon import EncoderDecoder

ELEMENTS = [(k, f) for k in range(4) for f in (False, True)]


# --------------------------------------------------------------------------- geometry
def _vector_matrix(k: int, flip: bool, H: int = 5, W: int = 6) -> np.ndarray:
    """The 2×2 matrix g (acting on (x, y), x = columns, y = rows) of the pixel motion done by
    ``dihedral(·, k, flip)``, found from the motion of coordinate maps: X'(r') = X(g⁻¹ r')."""
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    X, Y = xx - (W - 1) / 2, yy - (H - 1) / 2
    Xn, Yn = dihedral(X, k, flip), dihedral(Y, k, flip)  # old coordinates seen at the new pixels
    h, w = Xn.shape
    yn, xn = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    new = torch.stack([(xn - (w - 1) / 2).flatten(), (yn - (h - 1) / 2).flatten()])  # (2, n)
    old = torch.stack([Xn.flatten(), Yn.flatten()])
    g_inv = old @ torch.linalg.pinv(new)  # old = g⁻¹ new
    assert torch.allclose(old, g_inv @ new, atol=1e-12)  # a pure rotation/mirror about the centre
    assert torch.allclose(g_inv.round(), g_inv, atol=1e-12)
    return np.round(torch.linalg.inv(g_inv).numpy())


def test_named_symmetries():
    x = torch.arange(12.0).reshape(3, 4)
    assert torch.equal(dihedral(x, 0, True), x.flip(-1))  # x → −x
    assert torch.equal(dihedral(x, 2, True), x.flip(-2))  # y → −y
    assert torch.equal(dihedral(x, 3, True), x.T)  # transpose
    assert torch.equal(dihedral(x, 4, False), x)
    assert augmentation_signs(0, True) == (1, -1, -1)  # horizontal flip: U, B_U, V, B_V change sign
    assert augmentation_signs(2, True) == (1, -1, -1)  # vertical flip
    assert augmentation_signs(1, False) == (-1, -1, 1) == augmentation_signs(3, False)  # quarter turns
    assert augmentation_signs(2, False) == (1, 1, 1)  # half turn
    assert augmentation_signs(3, True) == (-1, 1, -1) == augmentation_signs(1, True)  # diagonal mirrors
    # g of a horizontal flip and of a quarter turn, from the coordinate maps
    assert np.allclose(_vector_matrix(0, True), [[-1, 0], [0, 1]])
    assert abs(np.linalg.det(_vector_matrix(1, False)) - 1) < 1e-12


def _turn_field(Bx, By, Bz, k, flip):
    """The physical transform of a field map: move the pixels and map B → det(g) g B (B is an
    axial vector; g acts on x, y and leaves z alone)."""
    G = _vector_matrix(k, flip)
    d = round(float(np.linalg.det(G)))
    bx, by, bz = (dihedral(b, k, flip) for b in (Bx, By, Bz))
    return d * (G[0, 0] * bx + G[0, 1] * by), d * (G[1, 0] * bx + G[1, 1] * by), d * bz


@pytest.mark.parametrize("k,flip", ELEMENTS)
def test_target_sign_rule_matches_eq1_on_turned_vectors(k, flip):
    H = W = 6
    nd = 7
    g = torch.Generator().manual_seed(10 * k + flip)
    Bx, By, Bz = (800 * torch.randn(nd, H, W, generator=g, dtype=torch.float64) for _ in range(3))
    BQ, BU, BV = bq_bu_bv(Bx, By, Bz)
    scalars = torch.randn(4 * nd, H, W, generator=g, dtype=torch.float64)  # T, vz, z, logP
    targets = torch.cat([scalars, BQ, BU, BV])  # (49, H, W), quantity-major
    _, aug = augment_pair(None, targets, k, flip)
    BQ2, BU2, BV2 = bq_bu_bv(*_turn_field(Bx, By, Bz, k, flip))
    assert torch.allclose(aug[28:35], BQ2, atol=1e-9)
    assert torch.allclose(aug[35:42], BU2, atol=1e-9)
    assert torch.equal(aug[42:49], BV2)
    assert torch.equal(aug[:28], dihedral(scalars, k, flip))  # scalars only move
    # eq. 1 is blind to the overall sign of (Bx, By): the polar-vector turn g B gives the same B_Q, B_U
    G = _vector_matrix(k, flip)
    bx, by = dihedral(Bx, k, flip), dihedral(By, k, flip)
    BQp, BUp, _ = bq_bu_bv(G[0, 0] * bx + G[0, 1] * by, G[1, 0] * bx + G[1, 1] * by, Bz)
    assert torch.allclose(BQp, BQ2, atol=1e-9) and torch.allclose(BUp, BU2, atol=1e-9)


def _me_maps(B, gamma, phi, v):
    """Milne-Eddington Stokes maps (4, nλ, H, W) of Fe I 6301.5/6302.5 Å for parameter maps (H, W)."""
    from helioforge.physics.atomic import fe_lines
    from helioforge.physics.me import MEParameters, synth_me

    wav = torch.linspace(6301.2, 6302.8, 64, dtype=torch.float64)
    p = MEParameters.create(B=B, inclination=gamma, azimuth=phi, v_los=v, eta0=10.0, doppler_width=0.03,
                            damping=0.2, S0=0.3, S1=0.7)
    return synth_me(p, wav, fe_lines()).permute(2, 3, 0, 1)


def _random_field_maps(seed, H=4, W=4):
    g = torch.Generator().manual_seed(seed)
    B = 200 + 1800 * torch.rand(H, W, generator=g, dtype=torch.float64)
    gamma = 10 + 160 * torch.rand(H, W, generator=g, dtype=torch.float64)
    phi = 360 * torch.rand(H, W, generator=g, dtype=torch.float64)
    v = 2 * torch.randn(H, W, generator=g, dtype=torch.float64)
    return B, gamma, phi, v


def _angles(Bx, By, Bz):
    B = torch.sqrt(Bx**2 + By**2 + Bz**2)
    return B, torch.rad2deg(torch.atan2(torch.sqrt(Bx**2 + By**2), Bz)), torch.rad2deg(torch.atan2(By, Bx))


@pytest.mark.parametrize("k,flip", ELEMENTS)
def test_stokes_sign_rule_matches_milne_eddington(data_dir, k, flip):
    B, gamma, phi, v = _random_field_maps(100 + 10 * k + flip)
    stokes = _me_maps(B, gamma, phi, v)
    assert stokes[1:3].abs().max() > 1e-2  # real linear polarisation to test
    aug, _ = augment_pair(stokes, None, k, flip)
    # the physical transform of the atmosphere, then the synthesis again
    g_, p_ = torch.deg2rad(gamma), torch.deg2rad(phi)
    field = (B * torch.sin(g_) * torch.cos(p_), B * torch.sin(g_) * torch.sin(p_), B * torch.cos(g_))
    B2, gamma2, phi2 = _angles(*_turn_field(*field, k, flip))
    expected = _me_maps(B2, gamma2, phi2, dihedral(v, k, flip))
    assert torch.allclose(aug, expected, atol=1e-10)


def test_mirror_with_v_kept_is_not_consistent(data_dir):
    """Mirroring the transverse field as a polar vector while keeping B_z and V (the rule that
    would ignore magneto-optical effects) does not reproduce the synthesis: the Faraday
    rotation changes sense relative to B_z."""
    B, gamma, phi, v = _random_field_maps(7)
    stokes = _me_maps(B, gamma, phi, v)
    k, flip = 0, True  # x → −x: (Bx, By, Bz) → (−Bx, By, Bz) as a polar vector, φ → 180° − φ
    moved = dihedral(stokes, k, flip) * torch.tensor([1.0, 1.0, -1.0, 1.0], dtype=torch.float64)[:, None, None, None]
    polar = _me_maps(*(dihedral(a, k, flip) for a in (B, gamma)), dihedral(180.0 - phi, k, flip), dihedral(v, k, flip))
    amp = stokes[1:3].abs().max()
    assert (polar[1:3] - moved[1:3]).abs().max() > 0.1 * amp  # Q, U off by > 10 % of the amplitude
    assert torch.allclose(polar[3], moved[3], atol=1e-12)  # V itself is fine: only the MO terms break it


def test_random_dihedral_is_consistent_per_sample():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(16, 4, 3, 5, 5, generator=g)
    t = torch.randn(16, 49, 5, 5, generator=g)
    t[:, 28:35] = s[:, 1, :1] * torch.arange(1.0, 8.0)[:, None, None]  # B_Q ∝ Q
    t[:, 35:42] = s[:, 2, :1]  # B_U = U at the first wavelength
    s2, t2 = random_dihedral(s, t, torch.Generator().manual_seed(1))
    assert torch.allclose(t2[:, 28:35], s2[:, 1, :1] * torch.arange(1.0, 8.0)[:, None, None])
    assert torch.allclose(t2[:, 35:42], s2[:, 2, :1].expand(-1, 7, -1, -1))
    for i in range(16):  # each sample is one of the 8 symmetries, applied to both
        assert any(torch.equal(s2[i], augment_pair(s[i], None, k, f)[0]) and
                   torch.equal(t2[i], augment_pair(None, t[i], k, f)[1]) for k, f in ELEMENTS)
    # non-square maps keep their shape
    s3, t3 = random_dihedral(torch.randn(4, 4, 3, 4, 6), torch.randn(4, 49, 4, 6))
    assert s3.shape == (4, 4, 3, 4, 6) and t3.shape == (4, 49, 4, 6)


# --------------------------------------------------------------------------- scaler, config
def test_target_scaler_inverse_and_json():
    rng = np.random.default_rng(0)
    lo = rng.normal(size=49) * 100
    hi = lo + rng.uniform(0.1, 50, size=49)
    hi[5] = lo[5]  # a constant channel stays invertible
    sc = TargetScaler(lo, hi, tuple(f"n{i}" for i in range(49)), "test")
    t = torch.as_tensor(lo[:, None, None] + (hi - lo)[:, None, None] * rng.uniform(size=(2, 49, 3, 4)))
    y = sc.encode(t)
    assert y.dtype == t.dtype and torch.allclose(sc.decode(y), t, atol=1e-10)
    assert torch.allclose(sc.encode(sc.decode(y)), y, atol=1e-10)
    assert 0 <= float(y.min()) and float(y.max()) <= 1
    ends = torch.as_tensor(np.stack([lo, hi])[:, :, None, None])
    e = sc.encode(ends)
    assert torch.allclose(e[0], torch.zeros_like(e[0]), atol=1e-12)
    keep = np.arange(49) != 5
    assert torch.allclose(e[1, keep], torch.ones_like(e[1, keep]), atol=1e-12)
    a = t.numpy().astype(np.float32)
    assert isinstance(sc.encode(a), np.ndarray) and np.allclose(sc.decode(sc.encode(a)), a, rtol=1e-5, atol=1e-3)
    back = TargetScaler.from_dict(json.loads(json.dumps(sc.to_dict())))
    assert np.array_equal(back.minimum, sc.minimum) and np.array_equal(back.maximum, sc.maximum)
    assert back.names == sc.names and back.source == "test"
    with pytest.raises(ValueError, match="49"):
        sc.encode(torch.zeros(48, 2, 2))
    with pytest.raises(ValueError, match="below minimum"):
        TargetScaler([1.0], [0.0])


def test_scaler_from_sicon_file(data_dir):
    sc = TargetScaler.from_sicon()
    assert sc.n_channels == 49
    assert 3000 < sc.minimum[0] < sc.maximum[0] < 20000  # T at log tau = 0, K
    assert sc.maximum[42] > 1000  # B_V, G


def test_profiles():
    p = get_sicon_profile("paper")
    assert (p.model.network, p.model.width, p.train.epochs, p.train.batch_size) == ("encdec", 32, 50, 128)
    assert (p.train.lr, p.train.lr_step_epochs, p.train.lr_gamma, p.train.noise_sigma) == (3e-4, 30, 0.5, 1e-3)
    c = get_sicon_profile("paper-concat")
    assert (c.model.network, c.train.lr, c.train.epochs, c.train.batch_size) == ("concat", 1e-4, 20, 10)
    for name in ("cpu", "tiny"):
        q = get_sicon_profile(name)
        assert SiconConfig.from_dict(json.loads(json.dumps(q.to_dict()))) == q
    with pytest.raises(ValueError, match="unknown SICON profile"):
        get_sicon_profile("huge")
    with pytest.raises(ValueError, match="unknown network"):
        SiconModelConfig(network="unet")


def test_pad_for_network_reflects_and_crops():
    net = EncoderDecoder(width=2)
    x = torch.arange(5 * 7, dtype=torch.float32).reshape(1, 1, 5, 7)
    p, (rows, cols) = pad_for_network(x, net)
    assert p.shape[-2:] == (16, 16)
    assert torch.equal(p[..., rows, cols], x)
    # one reflection step: the row above the map is its second row
    assert torch.equal(p[0, 0, rows.start - 1, cols], x[0, 0, 1])
    q, _ = pad_for_network(torch.ones(1, 1, 1, 3), net)  # 1-pixel axis: replicated
    assert q.shape[-2:] == (16, 16) and torch.all(q == 1)


# --------------------------------------------------------------------------- train → invert
@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("sicon") / "trainset"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see conftest.one_torch_thread: ≈ 5 s instead of up to minutes on a busy machine
    try:
        make_trainset(root, "tiny", progress=False)
    finally:
        torch.set_num_threads(threads)
    return root


def _losses(workdir):
    with open(workdir / "logs" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    train = [float(r["train_loss"]) for r in rows if r.get("train_loss")]
    val = [float(r["val_loss"]) for r in rows if r.get("val_loss")]
    return train, val


@pytest.fixture(scope="module")
def trained(tiny_set, tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see conftest.one_torch_thread
    out = {}
    try:
        for network in ("encdec", "concat"):
            work = tmp_path_factory.mktemp(f"train_{network}")
            out[network] = (train_sicon(tiny_set, work, network, "tiny", accelerator="cpu", progress=False), work)
    finally:
        torch.set_num_threads(threads)
    return out


def test_scaler_from_trainset(tiny_set):
    sc = TargetScaler.from_trainset(tiny_set)
    ds = TrainsetDataset(tiny_set)
    t = torch.stack([ds[i][1] for i in range(len(ds))]).double()
    assert np.allclose(sc.minimum, t.amin(dim=(0, 2, 3)).numpy())
    assert np.allclose(sc.maximum, t.amax(dim=(0, 2, 3)).numpy())
    assert sc.names == tuple(ds.target_names)


@pytest.mark.parametrize("network", ["encdec", "concat"])
def test_tiny_training_learns_and_records_provenance(trained, tiny_set, network):
    stem, work = trained[network]
    assert stem.name == f"sicon_{network}" and stem.with_suffix(".safetensors").is_file()
    train, val = _losses(work)
    assert len(train) == get_sicon_profile("tiny").train.epochs and len(val) == len(train)
    assert np.mean(train[-3:]) < 0.7 * np.mean(train[:3])
    cfg = json.loads(stem.with_suffix(".json").read_text())
    man = read_manifest(tiny_set)
    assert cfg["network"] == network and cfg["trainset"]["digest"] == man["digest"]
    assert cfg["targets"]["names"] == man["targets"]["names"] and cfg["targets"]["units"]["T"] == "K"
    assert len(cfg["scaler"]["minimum"]) == 49 and cfg["epochs_trained"] == len(train)
    assert cfg["model"]["n_parameters"] > 0 and cfg["preprocessing"]["amplitude_floor"] == 5e-3
    assert set(cfg["final_metrics"]) >= {"train_loss", "val_loss"}
    assert cfg["split"] == {"n_train": 3, "n_validation": 1, "seed": 0}


@pytest.mark.parametrize("network", ["encdec", "concat"])
def test_inverter_any_size_and_consistent_with_network(trained, tiny_set, network, one_torch_thread):
    inv = SiconInverter.from_weights(trained[network][0], device="cpu")
    ds = TrainsetDataset(tiny_set)
    s = torch.cat([torch.cat([ds[0][0], ds[1][0]], -1), torch.cat([ds[2][0], ds[3][0]], -1)], -2)  # 16×16
    for H, W in [(5, 7), (13, 13), (1, 3), (16, 16)]:
        out = inv.invert(s[..., :H, :W])
        assert out.shape == (49, H, W) and torch.isfinite(out).all()
    nb = inv.invert(np.stack([s[..., :5, :7].numpy()] * 2))
    assert isinstance(nb, np.ndarray) and nb.shape == (2, 49, 5, 7) and nb.dtype == np.float32
    # a 16×16 map needs no padding: the inverter is decode(net(inputs)) exactly
    with torch.no_grad():
        direct = inv.scaler.decode(inv.net(network_inputs(s[None], inv.model_cfg))[0])
    assert torch.allclose(inv.invert(s), direct, atol=1e-4 * float(direct.abs().max()))
    # back in physical units: T of order kK
    assert 2000 < float(inv.invert(s)[0].mean()) < 20000


def test_concat_tiling_is_exact(trained, tiny_set, one_torch_thread):
    inv = SiconInverter.from_weights(trained["concat"][0], device="cpu")
    ds = TrainsetDataset(tiny_set)
    s = torch.cat([torch.cat([ds[0][0], ds[1][0]], -1), torch.cat([ds[2][0], ds[3][0]], -1)], -2)[..., :13, :15]
    whole = inv.invert(s)
    tiled = inv.invert(s, tile=10, margin=4, batch_size=3)  # 9×9 receptive field: margin 4 suffices
    assert torch.allclose(inv.scaler.encode(whole), inv.scaler.encode(tiled), atol=1e-5)  # float32 rounding only


def test_encdec_tiling_covers_the_map(trained, tiny_set, one_torch_thread):
    inv = SiconInverter.from_weights(trained["encdec"][0], device="cpu")
    s = TrainsetDataset(tiny_set)[0][0].repeat(1, 1, 4, 5)[..., :30, :37]  # 30×37
    out = inv.invert(s, tile=16, margin=0)
    assert out.shape == (49, 30, 37) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="twice the margin"):
        inv.invert(s, tile=16, margin=8)


def test_inverter_bad_input(trained):
    inv = SiconInverter.from_weights(trained["concat"][0], device="cpu")
    with pytest.raises(ValueError, match="4 Stokes parameters"):
        inv.invert(np.zeros((3, 112, 4, 4), np.float32))
    with pytest.raises(ValueError, match="112 wavelengths"):
        inv.invert(np.zeros((4, 56, 4, 4), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        inv.invert(np.full((4, 112, 2, 2), np.nan, np.float32))
    with pytest.raises(FileNotFoundError, match="not found"):
        SiconInverter.from_weights(trained["concat"][1] / "nothing")


def test_resume_and_settings_guard(trained, tiny_set):
    stem, work = trained["encdec"]
    before = json.loads(stem.with_suffix(".json").read_text())
    again = train_sicon(tiny_set, work, "encdec", "tiny", accelerator="cpu", progress=False)  # nothing left to train
    after = json.loads(again.with_suffix(".json").read_text())
    assert again == stem and after["epochs_trained"] == before["epochs_trained"]
    assert after["final_metrics"] == before["final_metrics"]
    other = get_sicon_profile("tiny")
    other.train.lr = 1e-2
    with pytest.raises(ValueError, match="another SICON run"):
        train_sicon(tiny_set, work, "encdec", other, accelerator="cpu", progress=False)
