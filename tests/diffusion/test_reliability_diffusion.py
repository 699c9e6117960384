"""Issue 10, diffusion subsystem: bad arguments, implausible AIA images, corrupted products,
locking and read-only commands give one clear error (exit 2, naming the file or argument, no
traceback) and leave every file as it was.

Everything runs on small synthetic files in ``tmp_path`` (32×32 FITS images in DN/s and a
hand-made GOES flux CSV); one tiny model is trained once for the module (one epoch, seconds).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from typer.testing import CliRunner

from helioforge.cli import app
from helioforge.data.aia import aia_image_problem, read_aia_fits, read_aia_folder
from helioforge.diffusion.data import load_dataset
from helioforge.diffusion.pipeline import DiffusionWorkspace, train_model
from helioforge.diffusion.train import load_diffusion
from helioforge.errors import InputError, ProductError
from helioforge.locking import LOCK_NAME
from helioforge.nn.checkpoint import load_weights
from helioforge.workspace import file_sha256

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIDE = 32  # the tiny profile's image size
DAYS, PER_DAY = 8, 4  # 32 labelled images: ≈ 24 train (more than one tiny batch of 16), ≈ 8 test


# --------------------------------------------------------------------------- synthetic inputs


def _disk(seed: int, side: int = SIDE) -> np.ndarray:
    """A full-disk-like image in DN/s: a bright disk with an active region on a dim corona."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:side, :side] - (side - 1) / 2
    r = np.hypot(x, y) / (side / 2)
    img = np.where(r < 0.8, 400.0, 30.0) * (1 + 0.05 * rng.standard_normal((side, side)))
    cy, cx = rng.integers(side // 3, 2 * side // 3, 2)
    img[cy - 2:cy + 2, cx - 2:cx + 2] += rng.uniform(500, 5000)
    return img.astype(np.float32)


def write_aia(path: Path, data: np.ndarray, time: str, wavelength: int = 193, creator: str | None = None) -> Path:
    hdr = fits.Header([("WAVELNTH", wavelength), ("DATE-OBS", time), ("BUNIT", "DN/s"), ("EXPTIME", 2.0)])
    if creator:
        hdr["CREATOR"] = creator
    fits.PrimaryHDU(np.asarray(data), header=hdr).writeto(path, overwrite=True)
    return path


def write_flux(path: Path) -> Path:
    """Hourly GOES XRS-B 2014-01-01 … 2014-01-14 cycling through B, C and M levels."""
    times = np.arange(np.datetime64("2014-01-01T00:30:00"), np.datetime64("2014-01-15T00:00:00"), np.timedelta64(1, "h"))
    levels = np.array([3e-7, 2e-6, 4e-6, 1.5e-5])
    flux = levels[np.arange(len(times)) % len(levels)]
    lines = ["time,xrsb_1_8A_Wm2,xrsa_0.5_4A_Wm2"] + [f"{t},{f:.3e},{f / 50:.3e}" for t, f in zip(times.astype(str), flux)]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_images(folder: Path, days: int = DAYS, per_day: int = PER_DAY) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    k = 0
    for d in range(days):
        for h in range(per_day):
            write_aia(folder / f"aia_{k:03d}.fits", _disk(k), f"2014-01-{d + 2:02d}T{1 + (24 // per_day) * h:02d}:10:00")
            k += 1
    return folder


def snapshot(*folders: Path) -> dict[str, tuple[str, int]]:
    """(sha256, mtime) of every file under ``folders`` (the lock files excepted)."""
    out = {}
    for folder in folders:
        if not folder.exists():
            continue
        for p in sorted(folder.rglob("*")):
            if p.is_file() and not p.name.startswith(LOCK_NAME):
                out[str(p)] = (file_sha256(p), p.stat().st_mtime_ns)
    return out


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_clear_error(r, *names: str) -> None:
    """Exit 2, every one of ``names`` in the message, no traceback."""
    text = " ".join(r.output.split())
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output
    for name in names:
        assert name in text, (name, r.output)


@contextlib.contextmanager
def held_lock(folder: Path):
    """Another process holding ``folder``'s lock."""
    code = ("import sys, time\nfrom helioforge.locking import workdir_lock\n"
            "with workdir_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


# --------------------------------------------------------------------------- shared products


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("inputs")
    return make_images(base / "aia"), write_flux(base / "goes.csv")


def label_args(work: Path, images: Path, flux: Path, *extra: str) -> list[str]:
    return ["diffusion", "label", "-w", work, "-p", "tiny", "--images", images, "--flux", flux, "--source", "flux", *extra]


@pytest.fixture(scope="module")
def trained(inputs, tmp_path_factory) -> Path:
    """A work folder with a labelled dataset and a class model trained for one epoch."""
    images, flux = inputs
    work = tmp_path_factory.mktemp("trained") / "w"
    r = invoke(*label_args(work, images, flux))
    assert r.exit_code == 0, r.output
    r = invoke("diffusion", "train", "-w", work, "--epochs", "1", "--accelerator", "cpu")
    assert r.exit_code == 0, r.output
    return work


@pytest.fixture
def work(trained, tmp_path) -> Path:
    """A private copy of the trained work folder."""
    dest = tmp_path / "work"
    shutil.copytree(trained, dest)
    return dest


def _remark(work: Path, step: str, *paths: Path) -> None:
    """Record ``paths`` as ``step``'s products again (simulating a product written damaged by
    its own step, which the SHA-256 check cannot catch)."""
    ws = DiffusionWorkspace(work)
    ws.mark(step, ws._entry(step)["digest"], *paths)


# --------------------------------------------------------------------------- 1. counts and ranges


@pytest.mark.parametrize("value", ["-1", "0"])
def test_train_epochs_below_one_refused(tmp_path, value):
    """Old code: ``--epochs -1`` trained forever ("Epoch 19/-2") and ``--epochs 0`` was ignored."""
    work = tmp_path / "w"
    work.mkdir()
    r = invoke("diffusion", "train", "-w", work, "--epochs", value)
    assert_clear_error(r, "--epochs")
    assert list(work.iterdir()) == []


def test_train_model_api_refuses_zero_epochs(work):
    """Old code: epochs=0 reached Lightning (max_epochs=0), saved untrained weights and marked
    them current; -1 never stopped. Nothing in the folder may change."""
    before = snapshot(work)
    for epochs in (0, -1):
        prof = DiffusionWorkspace(work).load_profile()
        prof.train.epochs = epochs
        with pytest.raises(InputError, match="--epochs"):
            train_model(prof, DiffusionWorkspace(work), "class", accelerator="cpu", progress=False)
    assert snapshot(work) == before


@pytest.mark.parametrize("args, name", [
    (["-n", "0"], "-n"),
    (["-n", "-3"], "-n"),
    (["--steps", "0"], "--steps"),
    (["--cfg-scale", "nan"], "--cfg-scale"),
    (["--cfg-scale", "inf"], "--cfg-scale"),
    (["--cfg-scale=-1"], "--cfg-scale"),
    (["--eta", "nan"], "--eta"),
    (["--eta", "2"], "--eta"),
    (["--eta=-0.5"], "--eta"),
    (["--seed=-1"], "--seed"),
])
def test_sample_bad_arguments_write_nothing(work, tmp_path, args, name):
    """Old code: ``-n 0`` failed but left an empty FITS; ``--cfg-scale nan``/``inf`` and
    ``--eta nan`` wrote all-NaN images with exit status 0."""
    out = tmp_path / "out" / "s"
    before = snapshot(work)
    r = invoke("diffusion", "sample", "-w", work, "-c", "C", "--sampler", "ddim", "--steps", "2", "-n", "2",
               "-o", out, *args)
    assert_clear_error(r, name)
    assert not out.parent.exists()
    assert snapshot(work) == before


@pytest.mark.parametrize("flux", ["nan", "0", "-1e-5", "inf"])
def test_sample_bad_flux_refused(work, tmp_path, flux):
    out = tmp_path / "s"
    r = invoke("diffusion", "sample", "-w", work, "--flux", flux, "-n", "1", "--steps", "1", "-o", out)
    assert_clear_error(r, "--flux")
    assert not out.with_suffix(".fits").exists()


def test_sample_api_refuses_nan_guidance(work, tmp_path):
    from helioforge.diffusion.infer import sample_to_files

    stem = DiffusionWorkspace(work).model_stem("class")
    for kw, name in ((dict(cfg_scale=float("nan")), "--cfg-scale"), (dict(n=0), "-n"), (dict(eta=float("nan")), "--eta"),
                     (dict(steps=0), "--steps")):
        with pytest.raises(InputError, match=name):
            sample_to_files(stem, tmp_path / "o" / "s", flare_class="C", sampler="ddim", progress=False,
                            **{"steps": 2, **kw})
    assert not (tmp_path / "o").exists()


def test_sample_failing_late_leaves_nothing(work, tmp_path, monkeypatch):
    """A failure after sampling (here: the PNG grid) must not leave the FITS behind."""
    import helioforge.diffusion.infer as infer

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(infer, "save_grid", boom)
    out = tmp_path / "o" / "s"
    r = invoke("diffusion", "sample", "-w", work, "-c", "C", "-n", "1", "--sampler", "ddim", "--steps", "1", "-o", out)
    assert_clear_error(r, "disk full")
    assert not out.with_suffix(".fits").exists() and not out.with_suffix(".png").exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


@pytest.mark.parametrize("args, name", [
    (["--size", "0"], "--size"),
    (["--size", "8"], "--size"),
    (["--size", "100000"], "--size"),
    (["--size", "30"], "--size"),  # not a multiple of 4: the tiny U-Net halves it twice
    (["--wavelength", "0"], "--wavelength"),
    (["--wavelength", "555"], "--wavelength"),
    (["--tolerance-min=-1"], "--tolerance-min"),
    (["--tolerance-min", "nan"], "--tolerance-min"),
])
def test_label_bad_arguments(inputs, tmp_path, args, name):
    images, flux = inputs
    work = tmp_path / "w"
    before = snapshot(images.parent)
    r = invoke(*label_args(work, images, flux, *args))
    assert_clear_error(r, name)
    assert not work.exists()
    assert snapshot(images.parent) == before


@pytest.mark.parametrize("args, name", [
    (["--additions", "0,2"], "--additions"),
    (["--additions=-2"], "--additions"),
    (["--additions", "a,b"], "--additions"),
    (["--additions", ""], "--additions"),
    (["--repeats", "0"], "--repeats"),
])
def test_augment_bad_arguments(work, tmp_path, args, name):
    """Old code: ``--repeats 0`` and an empty ``--additions`` were silently ignored (``if x:``)."""
    before = snapshot(work)
    r = invoke("diffusion", "augment-experiment", "-w", work, "-r", tmp_path / "rep", "--accelerator", "cpu", *args)
    assert_clear_error(r, name)
    assert not (tmp_path / "rep").exists()
    assert snapshot(work) == before


def test_evaluate_missing_inception_weights(work, tmp_path):
    before = snapshot(work)
    r = invoke("diffusion", "evaluate", "-w", work, "-r", tmp_path / "rep", "--inception-weights", tmp_path / "none.pt")
    assert_clear_error(r, "none.pt", "--inception-weights")
    assert snapshot(work) == before and not (tmp_path / "rep").exists()


# --------------------------------------------------------------------------- 4. implausible AIA images


def test_aia_image_problem_refuses_implausible_images(tmp_path):
    cases = {
        "tiny.fits": np.full((3, 3), 100.0),
        "small.fits": _disk(1, 24),
        "huge.fits": np.full((SIDE, SIDE), 1e30),
        "negative.fits": -_disk(2),
        "zero.fits": np.zeros((SIDE, SIDE)),
        "oblong.fits": np.ones((SIDE, SIDE + 8)) * 100,
    }
    for name, data in cases.items():
        im = read_aia_fits(write_aia(tmp_path / name, data.astype(np.float32), "2014-01-02T00:00:00"))
        assert aia_image_problem(im, SIDE) is not None, name
    good = read_aia_fits(write_aia(tmp_path / "good.fits", _disk(3), "2014-01-02T00:00:00"))
    assert aia_image_problem(good, SIDE) is None
    assert "too small" in aia_image_problem(good, 64)  # below the profile's image size: not upsampled


def test_label_skips_implausible_images_and_lists_them(inputs, tmp_path):
    """Old code: 1e30, negative and 3×3 images went into the training set (upsampled)."""
    images, flux = inputs
    folder = tmp_path / "aia"
    shutil.copytree(images, folder)
    bad = {
        "bad_tiny.fits": np.full((3, 3), 100.0),
        "bad_small.fits": _disk(1, 24),
        "bad_huge.fits": np.full((SIDE, SIDE), 1e30),
        "bad_negative.fits": -_disk(2),
        "bad_zero.fits": np.zeros((SIDE, SIDE)),
    }
    for name, data in bad.items():
        write_aia(folder / name, data.astype(np.float32), "2014-01-03T12:00:00")
    work = tmp_path / "w"
    r = invoke(*label_args(work, folder, flux))
    assert r.exit_code == 0, r.output
    rep = json.loads((work / "labels.json").read_text())
    skipped = {Path(s["file"]).name: s["reason"] for s in rep["skipped"]}
    assert set(skipped) == set(bad), skipped
    assert "too small" in skipped["bad_tiny.fits"] and "too small" in skipped["bad_small.fits"]
    assert "DN/s" in skipped["bad_huge.fits"] and "negative" in skipped["bad_negative.fits"]
    assert "zero" in skipped["bad_zero.fits"]
    assert rep["images_read"] == DAYS * PER_DAY
    data = load_dataset(work / "dataset.fits")
    assert not set(data.table["file"]) & set(bad)


def test_read_aia_folder_min_size(tmp_path):
    write_aia(tmp_path / "a.fits", _disk(0), "2014-01-02T00:00:00")
    images, skipped = read_aia_folder(tmp_path, min_size=64)
    assert images == [] and "too small" in skipped[0].reason


def test_label_refuses_a_set_without_training_images(inputs, tmp_path):
    """Old code: 12 images of one day gave 0 training / 12 test images with exit status 0."""
    _, flux = inputs
    folder = make_images(tmp_path / "aia", days=1, per_day=12)
    work = tmp_path / "w"
    before = snapshot(folder)
    r = invoke(*label_args(work, folder, flux))
    assert_clear_error(r, str(folder), "0 training", "12 test", "batch")
    assert not work.exists()  # nothing left behind, not even the lock file
    assert snapshot(folder) == before


def test_label_refuses_fewer_than_one_batch(inputs, tmp_path):
    _, flux = inputs
    folder = make_images(tmp_path / "aia", days=4, per_day=3)  # ≈ 9 train < 16
    r = invoke(*label_args(tmp_path / "w", folder, flux))
    assert_clear_error(r, str(folder), "fewer than one training batch (16)")


def test_failed_relabel_keeps_the_old_dataset(work, inputs, tmp_path):
    _, flux = inputs
    before = snapshot(work)
    folder = make_images(tmp_path / "aia", days=1, per_day=12)
    r = invoke(*label_args(work, folder, flux, "--force"))
    assert_clear_error(r, "0 training")
    assert snapshot(work) == before
    DiffusionWorkspace(work).require_dataset()


# --------------------------------------------------------------------------- 5. corrupted products


def _weights(work: Path) -> Path:
    return work / "model_class" / "diffusion.safetensors"


def _retrain(work: Path) -> str:
    return f"helioforge diffusion train -w {work} --condition class --force"


def _sample(work: Path, tmp_path: Path):
    return invoke("diffusion", "sample", "-w", work, "-c", "C", "-n", "1", "--sampler", "ddim", "--steps", "1",
                  "-o", tmp_path / "out" / "s")


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_damaged_weights_named_with_remedy(work, tmp_path, damage):
    w = _weights(work)
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" * 50)
    r = _sample(work, tmp_path)
    assert_clear_error(r, "diffusion.safetensors", _retrain(work))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_damaged_weights_in_an_old_folder(work, tmp_path, damage):
    """A folder whose state records no file hashes (older helioforge): the loader itself names
    the file and the remedy."""
    w = _weights(work)
    state = json.loads((work / "state.json").read_text())
    state["model_class"] = state["model_class"]["digest"]
    (work / "state.json").write_text(json.dumps(state))
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" * 50)
    r = _sample(work, tmp_path)
    assert_clear_error(r, "diffusion.safetensors", _retrain(work))
    with pytest.raises(ProductError, match="diffusion.safetensors"):
        load_diffusion(w.with_suffix(""))


def test_sidecar_not_matching_weights(work, tmp_path):
    """Old code: ``load_state_dict`` size mismatch as a raw traceback."""
    side = _weights(work).with_suffix(".json")
    cfg = json.loads(side.read_text())
    cfg["unet"]["block_out_channels"] = [c * 2 for c in cfg["unet"]["block_out_channels"]]
    side.write_text(json.dumps(cfg))
    _remark(work, "model_class", _weights(work), side)
    with pytest.raises(ProductError, match="do not match their settings"):
        load_diffusion(_weights(work).with_suffix(""))
    r = _sample(work, tmp_path)
    assert_clear_error(r, "diffusion.safetensors", "diffusion.json", _retrain(work))


def test_sidecar_garbled(work, tmp_path):
    side = _weights(work).with_suffix(".json")
    side.write_text("{not json")
    _remark(work, "model_class", _weights(work), side)
    r = _sample(work, tmp_path)
    assert_clear_error(r, "diffusion.json", _retrain(work))


def test_nan_weights_refused(work, tmp_path):
    """Old code: NaN weights gave NaN images with exit status 0."""
    from safetensors.torch import save_file

    state, _ = load_weights(_weights(work).with_suffix(""))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, str(_weights(work)))
    _remark(work, "model_class", _weights(work), _weights(work).with_suffix(".json"))
    r = _sample(work, tmp_path)
    assert_clear_error(r, "diffusion.safetensors", "NaN", _retrain(work))
    assert not (tmp_path / "out").exists()


def test_changed_weights_detected(work, tmp_path):
    """Weights replaced after training (here by another model's) are not taken as this one."""
    w = _weights(work)
    w.write_bytes(w.read_bytes() + b"")  # same bytes: still current
    assert _sample(work, tmp_path).exit_code == 0
    with open(w, "r+b") as fh:
        fh.seek(-4, os.SEEK_END)
        fh.write(b"\x01\x02\x03\x04")
    r = _sample(work, tmp_path / "again")
    assert_clear_error(r, "diffusion.safetensors", "changed on disk", _retrain(work))


def test_garbled_dataset_refused_by_train(work):
    ds = work / "dataset.fits"
    ds.write_bytes(ds.read_bytes()[:3000])
    before = snapshot(work)
    r = invoke("diffusion", "train", "-w", work, "--epochs", "2", "--accelerator", "cpu")
    assert_clear_error(r, "dataset.fits", f"helioforge diffusion label -w {work}", "--force")
    assert snapshot(work) == before
    with pytest.raises(ProductError, match="dataset.fits"):
        load_dataset(ds)


def test_garbled_labels_json_is_rebuilt(work, inputs):
    """Old code: a garbled labels.json gave a raw JSONDecodeError on the next ``label``."""
    images, flux = inputs
    (work / "labels.json").write_text("{garbage")
    with pytest.raises(ProductError, match="labels.json"):
        DiffusionWorkspace(work).read_labels_report()
    r = invoke(*label_args(work, images, flux))
    assert r.exit_code == 0, r.output
    assert json.loads((work / "labels.json").read_text())["images_read"] == DAYS * PER_DAY


@pytest.mark.parametrize("cmd", [["train", "--epochs", "1"], ["sample", "-c", "C", "-n", "1", "--steps", "1"],
                                 ["evaluate"]])
def test_garbled_state_json(work, cmd):
    (work / "state.json").write_text("{not json")
    before = snapshot(work)
    r = invoke("diffusion", cmd[0], "-w", work, *cmd[1:])
    assert_clear_error(r, "state.json")
    assert snapshot(work) == before


def test_garbled_profile_json(work):
    (work / "profile.json").write_text("[1, 2")
    before = snapshot(work)
    r = invoke("diffusion", "train", "-w", work, "--epochs", "1")
    assert_clear_error(r, "profile.json", "-p PROFILE")
    assert snapshot(work) == before


def test_damaged_classifier_and_encoder(tmp_path):
    from helioforge.diffusion.classifier import TrainedClassifier
    from helioforge.diffusion.features import FeatureEncoder
    from helioforge.nn.classifier import FlareClassifier
    from helioforge.nn.vae import ConvVAE

    clf = TrainedClassifier(FlareClassifier(16, 5, 4), {"image_size": 16, "n_classes": 5, "width": 4, "dropout": 0.0})
    stem = tmp_path / "classifier" / "classifier"
    clf.save(stem)
    TrainedClassifier.load(stem)
    side = stem.with_suffix(".json")
    cfg = json.loads(side.read_text())
    side.write_text(json.dumps({**cfg, "width": 8}))
    with pytest.raises(ProductError, match="do not match their settings"):
        TrainedClassifier.load(stem)
    stem.with_suffix(".safetensors").write_bytes(b"junk")
    with pytest.raises(ProductError, match="classifier.safetensors"):
        TrainedClassifier.load(stem)

    enc = FeatureEncoder(ConvVAE(16, 4, 4), {"image_size": 16, "latent_dim": 4, "width": 4})
    estem = tmp_path / "features" / "feature_encoder"
    enc.save(estem)
    FeatureEncoder.load(estem)
    estem.with_suffix(".json").write_text("{")
    with pytest.raises(ProductError, match="feature_encoder.json"):
        FeatureEncoder.load(estem)


# --------------------------------------------------------------------------- 6. locking


@pytest.mark.parametrize("cmd", [
    ["train", "--epochs", "2", "--accelerator", "cpu"],
    ["label"],
    ["evaluate", "--accelerator", "cpu"],
    ["augment-experiment", "--additions", "2", "--repeats", "1", "--accelerator", "cpu"],
])
def test_busy_folder_refused(work, inputs, cmd):
    """Old code: a second ``diffusion train`` on a folder in use resumed the other's live
    checkpoint; now every writing command stops with the holder's PID."""
    images, flux = inputs
    extra = ["-p", "tiny", "--images", images, "--flux", flux, "--force"] if cmd[0] == "label" else []
    before = snapshot(work)
    with held_lock(work) as proc:
        r = invoke("diffusion", cmd[0], "-w", work, *cmd[1:], *extra)
        assert_clear_error(r, str(work), "in use", f"PID {proc.pid}")
    assert snapshot(work) == before


def test_ddp_ranks_do_not_take_the_lock(work, monkeypatch):
    """The extra DDP ranks re-run the command while rank 0 holds the lock."""
    with held_lock(work):
        monkeypatch.setenv("LOCAL_RANK", "1")
        with DiffusionWorkspace(work).lock():
            pass


# --------------------------------------------------------------------------- 7. read-only commands


def test_sample_does_not_create_a_missing_folder(tmp_path):
    missing = tmp_path / "nope"
    r = invoke("diffusion", "sample", "-w", missing, "-c", "C", "-o", tmp_path / "s")
    assert_clear_error(r, "no trained class model", f"helioforge diffusion train -w {missing}")
    assert not missing.exists() and not (tmp_path / "s.fits").exists()


@pytest.mark.parametrize("cmd", [["evaluate"], ["train"], ["augment-experiment"]])
def test_commands_on_a_missing_folder_create_nothing(tmp_path, cmd):
    missing = tmp_path / "nope"
    r = invoke("diffusion", *cmd, "-w", missing)
    assert_clear_error(r, "diffusion label")
    assert not missing.exists()


def test_unfinished_model_refused_with_resume_command(work, tmp_path):
    """Training interrupted (the step not marked, the weights of an earlier run still there).
    Old code sampled from them, exit status 0."""
    DiffusionWorkspace(work).unmark("model_class")
    before = snapshot(work)
    r = _sample(work, tmp_path)
    assert_clear_error(r, "unfinished", f"helioforge diffusion train -w {work} --condition class")
    assert "--force" not in r.output
    r = invoke("diffusion", "evaluate", "-w", work, "-r", tmp_path / "rep")
    assert_clear_error(r, "unfinished")
    assert snapshot(work) == before and not (tmp_path / "rep").exists()


def test_first_training_interrupted(work, tmp_path):
    """Only the training checkpoint exists (the first run was stopped): unfinished, resumable."""
    ws = DiffusionWorkspace(work)
    ws.unmark("model_class")
    for p in ws.model_files("class"):
        p.unlink()
    assert (ws.model_dir("class") / "checkpoints" / "last.safetensors").is_file()
    r = _sample(work, tmp_path)
    assert_clear_error(r, "unfinished", f"helioforge diffusion train -w {work} --condition class")


# --------------------------------------------------------------------------- 8. output paths


def test_sample_refuses_to_overwrite_a_real_fits(work, tmp_path):
    """Old code: ``-o`` onto a real AIA file overwrote it."""
    real = write_aia(tmp_path / "aia_real.fits", _disk(5), "2014-01-02T00:00:00")
    before = snapshot(tmp_path)
    r = invoke("diffusion", "sample", "-w", work, "-c", "C", "-n", "1", "--steps", "1", "-o", real)
    assert_clear_error(r, "aia_real.fits", "not written by helioforge")
    assert snapshot(tmp_path) == before


def test_sample_refuses_to_overwrite_the_dataset(work):
    before = snapshot(work)
    r = invoke("diffusion", "sample", "-w", work, "-c", "C", "-n", "1", "--steps", "1", "-o", work / "dataset")
    assert_clear_error(r, "dataset.fits")
    assert snapshot(work) == before


def test_sample_overwrites_its_own_output(work, tmp_path):
    out = tmp_path / "s"
    for _ in range(2):
        r = invoke("diffusion", "sample", "-w", work, "-c", "C", "-n", "1", "--sampler", "ddim", "--steps", "1", "-o", out)
        assert r.exit_code == 0, r.output
    with fits.open(out.with_suffix(".fits")) as h:
        assert h[0].header["CREATOR"].startswith("helioforge") and np.isfinite(h[0].data).all()


# --------------------------------------------------------------------------- GOES fill values


def test_xrs_fill_values_dropped(tmp_path):
    """A 1e30 fill value is no flux (old code: an 'X' label with log10 flux 30)."""
    from helioforge.data.goes import read_xrs_flux

    path = tmp_path / "xrs.csv"
    path.write_text("time,xrsb_1_8A_Wm2\n2014-01-01T00:30:00,1e-6\n2014-01-01T01:30:00,1e30\n"
                    "2014-01-01T02:30:00,-99999\n2014-01-01T03:30:00,2e-6\n")
    flux = read_xrs_flux(path)
    assert list(flux.to_numpy()) == [1e-6, 2e-6] and flux.attrs["dropped"] == 2
