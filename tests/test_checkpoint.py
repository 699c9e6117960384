"""Weights and training checkpoints round-trip through safetensors + JSON, never pickle."""

import math

import pytest
import torch

from helioforge.nn.checkpoint import SafetensorsCheckpointIO, load_weights, pack, save_weights, unpack
from helioforge.nn.gan import Generator


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


def test_save_load_weights(tmp_path):
    g = Generator(16, 16, 4)
    save_weights(tmp_path / "g", g, {"latent_dim": 16})
    state, cfg = load_weights(tmp_path / "g")
    assert cfg["latent_dim"] == 16 and cfg["class"] == "Generator"
    for k, v in g.state_dict().items():
        assert torch.equal(state[k], v)
    assert (tmp_path / "g.safetensors").read_bytes()[:8]  # a real file
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_load_weights_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.safetensors"):
        load_weights(tmp_path / "nothere")


def test_checkpoint_io_round_trip_and_rejects_foreign_files(tmp_path):
    io = SafetensorsCheckpointIO()
    ckpt = {"state_dict": {"w": torch.ones(2, 2)}, "epoch": 1, "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 2}}}}}
    io.save_checkpoint(ckpt, tmp_path / "last.safetensors")
    back = io.load_checkpoint(tmp_path / "last.safetensors")
    assert back["epoch"] == 1 and torch.equal(back["state_dict"]["w"], torch.ones(2, 2))
    assert back["loops"]["fit_loop"]["epoch_progress"]["total"]["ready"] == 2
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a helioforge training checkpoint"):
        io.load_checkpoint(tmp_path / "plain.safetensors")
    with pytest.raises(FileNotFoundError):
        io.load_checkpoint(tmp_path / "missing.safetensors")
