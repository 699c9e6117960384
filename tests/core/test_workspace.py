"""Reuse logic of the work folder: stale products are never reused, resumable state is kept
only when it is compatible, and --force starts over."""

import pytest
from typer.testing import CliRunner

from helioforge.cli import app
from helioforge.config import SAMPLE_DIR, set_data_root
from helioforge.errors import ProductError
from helioforge.interrogate.config import get_profile
from helioforge.interrogate.pipeline import Workspace, _digests, _train_step


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path / "w")


def _fake_gan(ws, content=b"weights"):
    """What a finished GAN training leaves: the generator's two files."""
    def train():
        ws.gan_dir.mkdir(parents=True, exist_ok=True)
        ws.generator.with_suffix(".safetensors").write_bytes(content)
        ws.generator.with_suffix(".json").write_text("{}")
    return train


def _ckpt(ws):
    path = ws.gan_dir / "checkpoints" / "last.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_interrupted_retrain_does_not_leave_the_old_model_current(ws):
    a = get_profile("tiny")
    _train_step(ws, "gan", ws.gan_dir, False, a, _fake_gan(ws))
    assert ws.state()["gan"]["digest"] == _digests(a, ws)["gan"]
    b = get_profile("tiny")
    b.gan.lr = 1e-3

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train_step(ws, "gan", ws.gan_dir, False, b, interrupted)
    # the weights on disk may now be B's: configuration A must not be taken as current
    assert not ws.is_current("gan", _digests(a, ws)["gan"])


def test_resume_kept_for_more_epochs_dropped_for_other_settings_or_force(ws):
    p = get_profile("tiny")
    _train_step(ws, "gan", ws.gan_dir, False, p, _fake_gan(ws))
    ck = _ckpt(ws)
    p.gan.epochs += 10  # a longer run resumes the shorter one
    _train_step(ws, "gan", ws.gan_dir, False, p, _fake_gan(ws))
    assert ck.exists()
    _train_step(ws, "gan", ws.gan_dir, True, p, _fake_gan(ws))  # --force starts over
    assert not ck.exists()
    _ckpt(ws)
    p.gan.lr = 1e-3  # another configuration: the checkpoint is not compatible
    _train_step(ws, "gan", ws.gan_dir, False, p, _fake_gan(ws))
    assert not ck.exists()


def test_digests_chain_from_the_input_files_by_content(tmp_path):
    sharp = tmp_path / "sharp"
    sharp.mkdir()
    ws = Workspace(tmp_path / "w")
    p = get_profile("tiny")
    p.data.sharp_dirs = (str(sharp),)
    p.data.fulldisk_dir = str(tmp_path / "none")
    before = _digests(p, ws)
    (sharp / "new.Br.fits").write_bytes(b"0" * 10)
    after = _digests(p, ws)
    assert before["corpus"] != after["corpus"]
    # downstream products follow the corpus as it was finished: remaking it makes them stale
    ws.corpus.write_bytes(b"corpus A")
    ws.corpus_report.write_text("{}")
    ws.mark("corpus", after["corpus"], ws.corpus, ws.corpus_report)
    made = _digests(p, ws)
    ws.corpus.write_bytes(b"corpus B")
    ws.mark("corpus", after["corpus"], ws.corpus, ws.corpus_report)
    remade = _digests(p, ws)
    for step in ("gan", "simsiam", "index"):
        assert made[step] != remade[step], step
    p.params.dilation_px_at_128 = 5  # parameters change the directions, not the trained networks
    again = _digests(p, ws)
    assert again["gan"] == remade["gan"] and again["simsiam"] == remade["simsiam"]
    assert again["directions"] != remade["directions"]


def test_same_data_copied_elsewhere_or_touched_is_not_a_change(tmp_path):
    """Inputs were fingerprinted by path and mtime: copying the same data forced a retrain."""
    import os
    import shutil

    a = tmp_path / "a" / "sharp"
    a.mkdir(parents=True)
    (a / "x.Br.fits").write_bytes(b"1" * 100)
    b = tmp_path / "b" / "sharp"
    shutil.copytree(a, b)
    os.utime(b / "x.Br.fits", (1, 1))
    ws = Workspace(tmp_path / "w")
    p, q = get_profile("tiny"), get_profile("tiny")
    p.data.sharp_dirs, q.data.sharp_dirs = (str(a),), (str(b),)
    p.data.fulldisk_dir = q.data.fulldisk_dir = str(tmp_path / "none")
    assert _digests(p, ws)["corpus"] == _digests(q, ws)["corpus"]
    (b / "x.Br.fits").write_bytes(b"2" * 100)  # same size, other content
    assert _digests(p, ws)["corpus"] != _digests(q, ws)["corpus"]


def test_product_changed_on_disk_is_refused(ws):
    p = get_profile("tiny")
    _train_step(ws, "gan", ws.gan_dir, False, p, _fake_gan(ws))
    d = _digests(p, ws)["gan"]
    files = (ws.generator.with_suffix(".safetensors"), ws.generator.with_suffix(".json"))
    assert ws.is_current("gan", d, *files)
    files[0].write_bytes(b"weights, but truncated later")
    with pytest.raises(ProductError, match="changed on disk.*helioforge train gan"):
        ws.require("gan", d, *files, rebuild="helioforge train gan -w W")


def test_read_only_use_creates_nothing(tmp_path):
    Workspace(tmp_path / "ro", create=False)
    assert not (tmp_path / "ro").exists()


def test_profile_round_trip_and_foreign_profile(ws):
    p = get_profile("cpu")
    p.data.sharp_dirs = ("/a", "/b")
    ws.save_profile(p)
    assert ws.load_profile() == p
    ws.profile_file.write_text('{"data": {"sharp_dir": "/old"}}')  # written by an older version
    with pytest.raises(ValueError, match="profile.json.*sharp_dir"):
        ws.load_profile()
    r = CliRunner().invoke(app, ["interrogate", "-w", str(ws.root)])
    assert r.exit_code == 2 and "--profile" in r.output


def test_directions_follow_the_generator_that_finished(ws):
    """Directions fitted on a half-trained generator were kept after the GAN resumed to its end."""
    p = get_profile("tiny")
    assert _train_step(ws, "gan", ws.gan_dir, False, p, _fake_gan(ws, b"epoch 1")) is not False
    first = _digests(p, ws)["directions"]
    assert _train_step(ws, "gan", ws.gan_dir, False, p, _fake_gan(ws, b"never")) is False  # current: reused
    assert _digests(p, ws)["directions"] == first
    ws.unmark("gan")  # the GAN goes on training (same settings) to other weights
    _train_step(ws, "gan", ws.gan_dir, False, p, _fake_gan(ws, b"epoch 6"))
    assert ws.generator.with_suffix(".safetensors").read_bytes() == b"epoch 6"
    assert _digests(p, ws)["directions"] != first


def test_products_stay_current_whatever_data_folder_a_later_command_sees(tmp_path, monkeypatch):
    """A tiny run on the embedded sample was stale for `search` run where ../shared/data exists:
    the default full-disk folder resolved against another data folder."""
    p = get_profile("tiny")
    p.data.sharp_dirs = ()
    set_data_root(SAMPLE_DIR)
    try:
        p.data.pin_folders()
        ws = Workspace(tmp_path / "w")
        made = _digests(p, ws)["corpus"]
        set_data_root(tmp_path)  # another data folder, without those files
        assert _digests(p, ws)["corpus"] == made
        assert p.data.sharp_paths() == [SAMPLE_DIR / "sharp"]
    finally:
        set_data_root(None)
