"""Reuse logic of the work folder: stale products are never reused, resumable state is kept
only when it is compatible, and --force starts over."""

import pytest

from helioforge.config import get_profile
from helioforge.interrogate.pipeline import Workspace, _digests, _train_step


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path / "w")


def _ckpt(ws):
    path = ws.gan_dir / "checkpoints" / "last.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_interrupted_retrain_does_not_leave_the_old_model_current(ws):
    a = get_profile("tiny")
    _train_step(ws, "gan", ws.gan_dir, False, a, lambda: None)
    assert ws.state()["gan"] == _digests(a)["gan"]
    b = get_profile("tiny")
    b.gan.lr = 1e-3

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train_step(ws, "gan", ws.gan_dir, False, b, interrupted)
    # the weights on disk may now be B's: configuration A must not be taken as current
    assert not ws.is_current("gan", _digests(a)["gan"])


def test_resume_kept_for_more_epochs_dropped_for_other_settings_or_force(ws):
    p = get_profile("tiny")
    _train_step(ws, "gan", ws.gan_dir, False, p, lambda: None)
    ck = _ckpt(ws)
    p.gan.epochs += 10  # a longer run resumes the shorter one
    _train_step(ws, "gan", ws.gan_dir, False, p, lambda: None)
    assert ck.exists()
    _train_step(ws, "gan", ws.gan_dir, True, p, lambda: None)  # --force starts over
    assert not ck.exists()
    _ckpt(ws)
    p.gan.lr = 1e-3  # another configuration: the checkpoint is not compatible
    _train_step(ws, "gan", ws.gan_dir, False, p, lambda: None)
    assert not ck.exists()


def test_digests_chain_from_the_input_files(tmp_path):
    sharp = tmp_path / "sharp"
    sharp.mkdir()
    p = get_profile("tiny")
    p.data.sharp_dirs = (str(sharp),)
    p.data.fulldisk_dir = str(tmp_path / "none")
    before = _digests(p)
    (sharp / "new.Br.fits").write_bytes(b"0" * 10)
    after = _digests(p)
    for step in ("corpus", "gan", "directions", "simsiam", "index"):
        assert before[step] != after[step], step
    p.params.dilation_px_at_128 = 5  # parameters change the directions, not the trained networks
    again = _digests(p)
    assert again["gan"] == after["gan"] and again["simsiam"] == after["simsiam"]
    assert again["directions"] != after["directions"]


def test_profile_round_trip_and_foreign_profile(ws):
    from typer.testing import CliRunner

    from helioforge.cli import app

    p = get_profile("cpu")
    p.data.sharp_dirs = ("/a", "/b")
    ws.save_profile(p)
    assert ws.load_profile() == p
    ws.profile_file.write_text('{"data": {"sharp_dir": "/old"}}')  # written by an older version
    with pytest.raises(ValueError, match="profile.json.*sharp_dir"):
        ws.load_profile()
    r = CliRunner().invoke(app, ["interrogate", "-w", str(ws.root)])
    assert r.exit_code == 2 and "--profile" in r.output
