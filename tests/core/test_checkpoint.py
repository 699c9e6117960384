"""Weights and training checkpoints round-trip through safetensors + JSON, never pickle: the
tensors come back identical (``torch.equal``, same dtype), the JSON metadata equal, and a
training resumed from a checkpoint ends where an uninterrupted one does."""

import json
import math

import lightning as L
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, TensorDataset

from helioforge import __version__
from helioforge.errors import ProductError
from helioforge.nn.checkpoint import SafetensorsCheckpointIO, load_weights, pack, save_weights, unpack
from helioforge.nn.gan import Generator
from helioforge.nn.training import fit_resumable, last_checkpoint


def assert_same(a, b, where="checkpoint"):
    """Nested dicts/lists/tuples equal, tensors bit-identical with the same dtype and shape."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b and type(a) is type(b), where


def _adam_after_steps(seed: int = 0, steps: int = 3):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.5, 0.999))
    x = torch.randn(16, 4)
    for _ in range(steps):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    return model, opt, x


def test_pack_unpack_round_trip_nested_state():
    opt_state = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(4)}},
        "param_groups": [{"lr": 5e-4, "betas": (0.5, 0.999), "params": [0], "foreach": None}],
    }
    ckpt = {"epoch": 2, "optimizer_states": [opt_state], "loss": float("nan"), "name": "x", "flag": True}
    tensors = {}
    skeleton = pack(ckpt, tensors)
    back = unpack(skeleton, tensors)
    assert back["epoch"] == 2 and back["name"] == "x" and back["flag"] is True
    assert math.isnan(back["loss"])
    st = back["optimizer_states"][0]
    assert list(st["state"].keys()) == [0]  # integer keys survive
    assert torch.equal(st["state"][0]["exp_avg"], opt_state["state"][0]["exp_avg"])
    assert st["param_groups"][0]["betas"] == (0.5, 0.999)  # tuples survive


def test_save_load_weights_round_trip(tmp_path):
    g = Generator(16, 16, 4)
    config = {"latent_dim": 16, "size": [16, 16], "lr": 2e-4, "note": "ε", "final_metrics": {"loss": 0.125}}
    path = save_weights(tmp_path / "g", g, config)
    state, cfg = load_weights(tmp_path / "g")
    # every tensor, same keys and dtype (safetensors stores the keys sorted)
    assert_same(dict(sorted(g.state_dict().items())), dict(sorted(state.items())), "state_dict")
    assert cfg == {"class": "Generator", "helioforge": __version__, **config}
    assert json.loads((tmp_path / "g.json").read_text()) == cfg
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "helioforge": __version__}
        assert sorted(f.keys()) == sorted(g.state_dict())
    g2 = Generator(16, 16, 4)
    g2.load_state_dict(state)
    z = torch.randn(2, 16)
    assert torch.equal(g.eval()(z), g2.eval()(z))  # the reloaded network computes the same
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_damaged_weights_are_refused_naming_the_file(tmp_path):
    save_weights(tmp_path / "g", Generator(16, 16, 4), {"latent_dim": 16})
    (tmp_path / "g.safetensors").write_bytes((tmp_path / "g.safetensors").read_bytes()[:100])
    with pytest.raises(ProductError, match="g.safetensors"):
        load_weights(tmp_path / "g")


def test_load_weights_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.safetensors"):
        load_weights(tmp_path / "nothere")


def test_checkpoint_io_round_trip_and_rejects_foreign_files(tmp_path):
    io = SafetensorsCheckpointIO()
    model, opt, x = _adam_after_steps()
    ckpt = {"state_dict": dict(model.state_dict()), "optimizer_states": [opt.state_dict()], "epoch": 3,
            "global_step": 12, "hyper_parameters": {"lr": 1e-2, "betas": (0.5, 0.999), "name": None},
            "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 2}}}}, "best": float("inf")}
    io.save_checkpoint(ckpt, tmp_path / "last.safetensors")
    back = io.load_checkpoint(tmp_path / "last.safetensors")
    assert_same(ckpt, back)
    # resuming from it restores the optimizer: the next step is the one the original takes
    model2, opt2, _ = _adam_after_steps(seed=1, steps=0)
    model2.load_state_dict(back["state_dict"])
    opt2.load_state_dict(back["optimizer_states"][0])
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        m(x).pow(2).mean().backward()
        o.step()
    assert_same(dict(model.state_dict()), dict(model2.state_dict()), "after one more step")
    assert_same(opt.state_dict(), opt2.state_dict(), "optimizer after one more step")

    save_file({"a": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a helioforge training checkpoint"):
        io.load_checkpoint(tmp_path / "plain.safetensors")
    with pytest.raises(FileNotFoundError):
        io.load_checkpoint(tmp_path / "missing.safetensors")


class _Tiny(L.LightningModule):
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Linear(4, 1)

    def training_step(self, batch, _):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def _loader():
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8, shuffle=False)


def test_resumed_training_ends_where_an_uninterrupted_one_does(tmp_path, one_torch_thread):
    """fit_resumable: 1 epoch, stop, resume to 3 epochs = 3 epochs at once (weights, Adam state, step)."""
    kw = {"accelerator": "cpu", "devices": 1, "progress": False}
    straight = _Tiny()
    fit_resumable(straight, _loader(), tmp_path / "a", 3, **kw)
    fit_resumable(_Tiny(), _loader(), tmp_path / "b", 1, **kw)
    first = SafetensorsCheckpointIO().load_checkpoint(last_checkpoint(tmp_path / "b"))
    assert first["epoch"] == 0 and first["global_step"] == 4  # 32 samples / 8 per batch
    resumed = _Tiny(seed=5)  # other initial weights: only the checkpoint can make it end like `straight`
    fit_resumable(resumed, _loader(), tmp_path / "b", 3, **kw)
    assert_same(dict(straight.state_dict()), dict(resumed.state_dict()), "weights")
    a = SafetensorsCheckpointIO().load_checkpoint(last_checkpoint(tmp_path / "a"))
    b = SafetensorsCheckpointIO().load_checkpoint(last_checkpoint(tmp_path / "b"))
    assert a["global_step"] == b["global_step"] == 12
    assert_same(a["state_dict"], b["state_dict"], "checkpoint weights")
    assert_same(a["optimizer_states"], b["optimizer_states"], "optimizer state")
