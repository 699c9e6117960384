"""The conditional denoiser, classifier-free guidance (eq. 6), schedulers and training plumbing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helioforge.diffusion.config import DiffusionProfile, dataclass_from_dict, get_diffusion_profile
from helioforge.diffusion.data import _split_by_day, class_conditions
from helioforge.diffusion.infer import guided_noise, make_sampler, sample
from helioforge.diffusion.train import DiffusionModule, build_unet, load_diffusion, train_diffusion


@pytest.fixture
def tiny():
    return get_diffusion_profile("tiny")


def test_guidance_arithmetic():
    c, u = torch.tensor([2.0, -1.0]), torch.tensor([1.0, 1.0])
    # eq. 6: (1 + w) eps_c - w eps_u
    assert torch.allclose(guided_noise(c, u, 0.0), c)
    assert torch.allclose(guided_noise(c, u, 1.0), torch.tensor([3.0, -3.0]))
    assert torch.allclose(guided_noise(c, u, 3.0), 4 * c - 3 * u)
    # w = -1 would be the unconditional model: the formula is linear in w
    assert torch.allclose(guided_noise(c, u, -1.0), u)


def test_class_and_null_embeddings(tiny):
    net = build_unet(tiny.unet, 32, "class")
    assert net.null_index == 5 and net.embed.num_embeddings == 6
    e = net.embed_condition(torch.tensor([0, 4, 5]))
    assert e.shape == (3, tiny.unet.block_out_channels[0] * 4)
    assert not torch.allclose(e[0], e[2])
    x, t = torch.randn(3, 1, 32, 32), torch.tensor([1, 50, 99])
    assert net(x, t, torch.tensor([0, 1, 5])).shape == x.shape


def test_flux_condition_null_is_nan(tiny):
    net = build_unet(tiny.unet, 32, "flux")
    with torch.no_grad():
        net.null.fill_(0.25)
        e = net.embed_condition(torch.tensor([float("nan"), -5.0]))
    assert torch.allclose(e[0], torch.full_like(e[0], 0.25))
    assert not torch.allclose(e[1], e[0])
    assert torch.isnan(net.null_condition(2)).all()


def test_bad_network_settings():
    with pytest.raises(ValueError, match="condition"):
        build_unet(get_diffusion_profile("tiny").unet, 32, "magnetogram")
    with pytest.raises(ValueError, match="divisible"):
        build_unet(get_diffusion_profile("tiny").unet, 30, "class")


def test_condition_dropout_uses_null(tiny, monkeypatch):
    tiny.train.cond_dropout = 1.0
    m = DiffusionModule(tiny.unet, tiny.train, 32)
    seen = {}
    real_forward = m.net.forward

    def spy(x, t, cond):
        seen["cond"] = cond.clone()
        return real_forward(x, t, cond)

    monkeypatch.setattr(m.net, "forward", spy)
    monkeypatch.setattr(m, "log_dict", lambda *a, **k: None)
    loss = m.training_step((torch.zeros(4, 1, 32, 32), torch.tensor([0, 1, 2, 3])), 0)
    assert torch.isfinite(loss)
    assert (seen["cond"] == 5).all()


def test_samplers_step_counts(tiny):
    cfg = tiny.train.__dict__
    assert len(make_sampler(cfg, "ddpm", None).timesteps) == tiny.train.num_train_timesteps
    for name in ("ddim", "dpm"):
        s = make_sampler(cfg, name, 10)
        assert len(s.timesteps) == 10 and int(s.timesteps[0]) == tiny.train.num_train_timesteps - 1
    with pytest.raises(ValueError, match="sampler"):
        make_sampler(cfg, "euler", 10)
    with pytest.raises(ValueError, match="steps"):
        make_sampler(cfg, "ddim", 0)


def test_train_resume_and_sample(tiny, tmp_path):
    rng = np.random.default_rng(0)
    # two classes with different mean brightness
    x = np.concatenate([np.full((16, 1, 32, 32), -0.6), np.full((16, 1, 32, 32), 0.6)]).astype(np.float32)
    x += rng.normal(0, 0.05, x.shape).astype(np.float32)
    y = np.repeat([0, 3], 16)
    tiny.train.epochs = 1
    stem = train_diffusion(x, y, tiny.unet, tiny.train, tmp_path, progress=False)
    net, config = load_diffusion(stem)
    assert config["epochs_trained"] == 1 and config["condition"] == "class"
    tiny.train.epochs = 2
    train_diffusion(x, y, tiny.unet, tiny.train, tmp_path, progress=False)
    _, config2 = load_diffusion(stem)
    assert config2["epochs_trained"] == 2  # resumed, not restarted
    r = sample(net, config["train"], np.array([0, 3, 3]), sampler="ddim", steps=4, cfg_scale=1.5, progress=False, seed=2)
    assert r.images.shape == (3, 1, 32, 32) and r.nfe_per_image == 8
    assert np.all(np.abs(r.images) <= 1)
    r0 = sample(net, config["train"], np.array([0]), sampler="ddim", steps=4, cfg_scale=0.0, progress=False)
    assert r0.nfe_per_image == 4  # no guidance: one evaluation per step
    again = sample(net, config["train"], np.array([0, 3, 3]), sampler="ddim", steps=4, cfg_scale=1.5, progress=False, seed=2)
    assert np.array_equal(r.images, again.images)
    with pytest.raises(ValueError, match="0..4"):
        sample(net, config["train"], np.array([7]), steps=2, progress=False)
    with pytest.raises(ValueError, match="cfg_scale"):
        sample(net, config["train"], np.array([1]), steps=2, cfg_scale=-1, progress=False)


def test_train_rejects_unlabelled(tiny, tmp_path):
    x = np.zeros((4, 1, 32, 32), np.float32)
    with pytest.raises(ValueError, match="left out"):
        train_diffusion(x, np.array([0, -1, 1, 2]), tiny.unet, tiny.train, tmp_path, progress=False)
    tiny.train.condition = "flux"
    with pytest.raises(ValueError, match="finite"):
        train_diffusion(x, np.array([-5, np.nan, -6, -7]), tiny.unet, tiny.train, tmp_path, progress=False)


def test_class_conditions_proportions():
    c = class_conditions({"A": 10, "B": 30, "C": 0, "M": 10, "X": 0}, 10)
    assert np.bincount(c, minlength=5).tolist() == [2, 6, 0, 2, 0]
    c = class_conditions({"A": 1, "B": 1, "C": 1}, 4)
    assert len(c) == 4 and set(c) <= {0, 1, 2}
    with pytest.raises(ValueError):
        class_conditions({"A": 0}, 3)


def test_split_keeps_days_together():
    t = np.array(["2011-01-01T01", "2011-01-01T05", "2011-01-02T03", "2011-01-03T00", "2011-01-03T09", "2011-01-04T12"],
                 dtype="datetime64[ns]")
    test = _split_by_day(t, 0.3, seed=1)
    days = t.astype("datetime64[D]")
    for d in np.unique(days):
        assert len(set(test[days == d])) == 1
    assert 0 < test.sum() < len(t)


def test_profile_round_trip():
    for name in ("cpu", "paper", "tiny"):
        p = get_diffusion_profile(name)
        q = DiffusionProfile.from_dict(p.to_dict())
        assert q == p and q.digest("unet", "train") == p.digest("unet", "train")
    assert get_diffusion_profile("paper").train.batch_size == 12 and get_diffusion_profile("paper").train.epochs == 500
    with pytest.raises(TypeError, match="unknown"):
        dataclass_from_dict(DiffusionProfile, {"unet": {"bogus": 1}})
    with pytest.raises(ValueError):
        get_diffusion_profile("huge")


def test_paper_network_builds_and_runs():
    p = get_diffusion_profile("paper")
    net = build_unet(p.unet, p.data.image_size, "class")
    n_params = sum(x.numel() for x in net.parameters())
    assert 10e6 < n_params < 60e6  # a U-Net of the paper's class of size (GPU-scale)
    with torch.no_grad():
        out = net(torch.zeros(1, 1, 64, 64), torch.tensor([999]), torch.tensor([3]))
    assert out.shape == (1, 1, 64, 64) and torch.isfinite(out).all()


def test_ema_forgets_the_initial_weights():
    """Defect: a fixed EMA decay kept 0.998^n of the random initial weights after n updates
    (11 % after the CPU demo's 1,120 steps: noisy samples). With the warm-up they are gone."""
    from helioforge.diffusion.train import ema_decay_at, make_ema

    assert ema_decay_at(0, 0.998) == pytest.approx(0.1) and ema_decay_at(10_000, 0.998) == 0.998
    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(100.0)  # the "random" initial weight
    ema = make_ema(net, 0.998)
    ema.update_parameters(net)  # the first update copies the weights after the first step (≈ random)
    with torch.no_grad():
        net.weight.fill_(1.0)  # training moved them
    for _ in range(1119):
        ema.update_parameters(net)
    # fixed decay: 100·0.998^1119 + (1 − 0.998^1119) ≈ 11.6; with the warm-up: ≈ 1
    assert float(ema.module.weight) == pytest.approx(1.0, abs=0.01)
