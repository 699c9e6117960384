"""Issue 10 for the SICON subsystem: inputs a user can trust, products that are never taken at
face value (``helioforge invert``, ``inversion synth``, ``make-trainset``, ``train``, ``validate``).

Every bad-input case asserts the exit code (2), a message naming the file or argument, no
traceback, and no file left behind or changed.
"""

from __future__ import annotations

import hashlib
import json
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

runner = CliRunner()


# ----------------------------------------------------------------------------- helpers
def _snapshot(*roots: Path) -> dict[str, tuple[int, str]]:
    """(mtime, sha256) of every file under ``roots`` (files or folders), but the work-folder
    lock files (``.helioforge.lock*``: not products, left by any command that took the lock)."""
    snap = {}
    for root in roots:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            if p.name.startswith(".helioforge.lock"):
                continue
            snap[str(p)] = (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return snap


def _clean_error(r, *names: str) -> None:
    """Exit status 2, one message naming each of ``names``, no traceback."""
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output, r.output
    for name in names:
        assert name in r.output, (name, r.output)


def _invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def sample(data_dir) -> Path:
    return data_dir / "stokes" / "hinode_sp_sample" / "hinode4d.20130912.sample.fits"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir) -> Path:
    """A tiny training set (``ts``) and a tiny concat network trained on it (``work``)."""
    from helioforge.inversion.pipeline import training_dir
    from helioforge.inversion.dataset import make_trainset
    from helioforge.inversion.train import train_sicon

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("reliability_sicon")
        make_trainset(root / "ts", "tiny", progress=False)
        train_sicon(root / "ts", training_dir(root / "work", "concat"), network="concat", profile="tiny",
                    progress=False, accelerator="cpu")
    finally:
        torch.set_num_threads(n)
    return root


@pytest.fixture
def work(trained, tmp_path) -> Path:
    """A private copy of the trained work folder."""
    dst = tmp_path / "work"
    shutil.copytree(trained / "work", dst)
    return dst


@pytest.fixture
def trainset(trained, tmp_path) -> Path:
    """A private copy of the training set."""
    dst = tmp_path / "ts"
    shutil.copytree(trained / "ts", dst)
    return dst


def _chunk(shard: Path, array: str) -> Path:
    """The first chunk file of ``array`` in a zarr shard."""
    return next(p for p in sorted((shard / array / "c").rglob("*")) if p.is_file())


def _invert(sp_map, out, work=None, *extra):
    args = ["invert", sp_map, "-n", "concat", "-o", out, "--device", "cpu", *extra]
    if work is not None:
        args += ["-w", work]
    return _invoke(*args)


# ----------------------------------------------------------------------------- 1. inputs overwritten
def test_invert_refuses_to_overwrite_its_input_map(trained, sample, tmp_path):
    m = tmp_path / "map.fits"
    shutil.copy(sample, m)
    before = _snapshot(tmp_path)
    r = _invert(m, m, trained / "work")
    _clean_error(r, "map.fits", "overwrite")
    assert _snapshot(tmp_path) == before


def test_synth_txt_refuses_to_overwrite_its_model(data_dir, tmp_path):
    m = tmp_path / "m.mod"
    shutil.copy(data_dir / "stokes" / "atmospheres" / "hsra11.mod", m)
    before = _snapshot(tmp_path)
    r = _invoke("inversion", "synth", m, "-o", m, "--format", "txt")
    _clean_error(r, "m.mod", "overwrite")
    assert _snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- 2. damaged shards
@pytest.mark.parametrize("damage", ["deleted chunk", "garbled chunk"])
def test_train_refuses_a_damaged_training_set(trainset, tmp_path, damage):
    shard = trainset / "shard_00001.zarr"
    chunk = _chunk(shard, "stokes")
    if damage == "deleted chunk":
        chunk.unlink()  # reads as zeros
    else:
        chunk.write_bytes(b"garbage" * 10)
    before = _snapshot(trainset)
    w = tmp_path / "W"
    r = _invoke("inversion", "train", "-t", trainset, "-w", w, "-n", "concat", "-p", "tiny", "--accelerator", "cpu")
    _clean_error(r, "shard_00001.zarr", "helioforge inversion make-trainset -o")
    assert "damaged" in r.output
    assert _snapshot(trainset) == before
    assert not w.exists()  # refused before any work folder was made


def test_train_without_verification_still_names_a_garbled_chunk(trainset, tmp_path):
    _chunk(trainset / "shard_00000.zarr", "targets").write_bytes(b"garbage")
    before = _snapshot(trainset)
    r = _invoke("inversion", "train", "-t", trainset, "-w", tmp_path / "W", "-n", "concat", "-p", "tiny",
                "--accelerator", "cpu", "--no-verify")
    _clean_error(r, "shard_00000.zarr", "chunk cannot be read", "make-trainset")
    assert _snapshot(trainset) == before
    assert not (tmp_path / "W" / "train_concat" / "sicon_concat.safetensors").exists()


def test_make_trainset_remakes_damaged_shards(trainset, data_dir, one_torch_thread):
    from helioforge.inversion.dataset import read_manifest, shard_checksum

    _chunk(trainset / "shard_00000.zarr", "targets").unlink()
    _chunk(trainset / "shard_00001.zarr", "stokes").write_bytes(b"not a zstd frame")
    r = _invoke("inversion", "make-trainset", "-o", trainset, "-p", "tiny", "--no-ranges")
    assert r.exit_code == 0, r.output
    man = read_manifest(trainset)
    assert man["complete"] and [e["file"] for e in man["shards"]] == ["shard_00000.zarr", "shard_00001.zarr"]
    for e in man["shards"]:  # both remade: they match the manifest again
        assert shard_checksum(trainset / e["file"]) == e["sha256"]


def test_validate_refuses_a_damaged_valset(trained, trainset, tmp_path):
    _chunk(trainset / "shard_00000.zarr", "stokes").unlink()
    report = tmp_path / "report"
    r = _invoke("inversion", "validate", "--valset", trainset, "-w", trained / "work", "--me-pixels", "4", "-r", report)
    _clean_error(r, "shard_00000.zarr", "make-trainset")
    assert not report.exists()


# ----------------------------------------------------------------------------- 3. non-ASCII names
def test_invert_with_non_ascii_file_names(trained, sample, tmp_path):
    m = tmp_path / "carte_é.fits"
    shutil.copy(sample, m)
    out = tmp_path / "sortie_é.fits"
    r = _invert(m, out, trained / "work")
    assert r.exit_code == 0, r.output
    with fits.open(out) as hdul:
        assert hdul[0].data.shape == (7, 7, 5, 5)
        assert "carte_" in hdul[0].header["HIERARCH HF input"]  # ASCII-escaped, not dropped
        assert hdul[0].header["HIERARCH HF input"].isascii()


@pytest.mark.parametrize("fmt", ["fits", "txt"])
def test_synth_with_non_ascii_file_names(data_dir, tmp_path, fmt):
    m = tmp_path / "modèle.mod"
    shutil.copy(data_dir / "stokes" / "atmospheres" / "hsra11.mod", m)
    out = tmp_path / f"profils_é.{fmt}"
    r = _invoke("inversion", "synth", m, "-o", out, "--format", fmt)
    assert r.exit_code == 0, r.output
    if fmt == "fits":
        with fits.open(out) as hdul:
            assert hdul[0].data.shape == (4, 112) and hdul[0].header["HIERARCH HF model"].startswith("mod")
    else:
        assert np.loadtxt(out).shape == (112, 5)


# ----------------------------------------------------------------------------- 4. argument ranges
@pytest.mark.parametrize("args, name", [
    (["--patches", "0"], "--patches"),
    (["--patches", "-2"], "--patches"),
    (["--size", "0"], "--size"),
    (["--size", "2"], "--size"),
    (["--size", "100000"], "--size"),
    (["--seed", "-1"], "--seed"),
])
def test_make_trainset_argument_ranges(tmp_path, args, name):
    out = tmp_path / "ts"
    r = _invoke("inversion", "make-trainset", "-o", out, "-p", "tiny", *args)
    _clean_error(r, name)
    assert not out.exists()


def test_trainset_config_refuses_an_empty_set():
    import dataclasses

    from helioforge.errors import InputError
    from helioforge.inversion.config import get_trainset_profile

    ts = get_trainset_profile("tiny").trainset
    for change in ({"n_patches": 0}, {"patch_size": 1}, {"seed": -1}, {"shard_size": 0}, {"noise_sigma": float("nan")}):
        with pytest.raises(InputError, match=next(iter(change))):
            dataclasses.replace(ts, **change)


@pytest.mark.parametrize("device", ["tpu", "cuda"])
def test_invert_refuses_an_unusable_device(tmp_path, device):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is here: --device cuda is usable")
    m = tmp_path / "map.fits"
    m.write_bytes(b"")
    r = _invoke("invert", m, "-o", tmp_path / "atmos.fits", "-w", tmp_path / "w", "--device", device)
    _clean_error(r, "--device", device)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.fits"]


def test_validate_me_pixels_range(tmp_path):
    r = _invoke("inversion", "validate", "--valset", tmp_path / "v", "-w", tmp_path / "w", "--me-pixels", "0",
                "-r", tmp_path / "r")
    _clean_error(r, "--me-pixels")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- 5. corrupted products
def _standalone(work: Path, tmp_path: Path) -> Path:
    """The trained weights copied alone (no training folder around them): the --weights case."""
    d = tmp_path / "exported"
    d.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(work / "train_concat" / f"sicon_concat{suffix}", d)
    return d / "sicon_concat"


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _nan_weights(p: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(p))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    save_file(state, str(p))


def _wider_sidecar(p: Path) -> None:
    cfg = json.loads(p.read_text())
    cfg["model"]["width"] = 2 * cfg["model"]["width"]
    p.write_text(json.dumps(cfg))


@pytest.mark.parametrize("case", ["truncated weights", "garbled sidecar", "sidecar of another network", "NaN weights",
                                  "empty weights"])
def test_invert_refuses_damaged_exported_weights(trained, work, sample, tmp_path, case):
    stem = _standalone(work, tmp_path)
    weights, sidecar = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    named = {"truncated weights": weights, "garbled sidecar": sidecar, "sidecar of another network": sidecar,
             "NaN weights": weights, "empty weights": weights}[case]
    if case == "truncated weights":
        _truncate(weights)
    elif case == "garbled sidecar":
        sidecar.write_text('{"network": "concat", ')
    elif case == "sidecar of another network":
        _wider_sidecar(sidecar)
    elif case == "NaN weights":
        _nan_weights(weights)
    else:
        weights.write_bytes(b"")
    out = tmp_path / "atmos.fits"
    before = _snapshot(stem.parent)
    r = _invert(sample, out, None, "--weights", stem)
    _clean_error(r, named.name)
    if case == "NaN weights":
        assert "non-finite" in r.output
    if case == "sidecar of another network":
        assert "do not match" in r.output
    assert not out.exists() and _snapshot(stem.parent) == before


@pytest.mark.parametrize("case", ["truncated weights", "unfinished training", "garbled state"])
def test_invert_refuses_weights_the_work_folder_does_not_vouch_for(work, sample, tmp_path, case):
    from helioforge.workspace import StepState

    folder = work / "train_concat"
    if case == "truncated weights":
        _truncate(folder / "sicon_concat.safetensors")
        named, why = "sicon_concat.safetensors", "changed on disk"
    elif case == "unfinished training":
        StepState(folder).unmark("sicon_concat")  # what a run does when it starts: weights not final any more
        named, why = "sicon_concat.safetensors", "unfinished"
    else:
        (folder / "state.json").write_text("{garbled")
        named, why = "state.json", "unreadable"
    out = tmp_path / "atmos.fits"
    before = _snapshot(work)
    r = _invert(sample, out, work)
    _clean_error(r, named, why)
    if case != "garbled state":
        assert f"helioforge inversion train -t {Path(json.loads((folder / 'sicon_settings.json').read_text())['trainset'])}" in r.output
    assert not out.exists() and _snapshot(work) == before


def test_interrupted_retraining_is_refused_until_resumed(trained, work, sample, tmp_path, monkeypatch, one_torch_thread):
    """A rerun of finished training with the same settings is reused (issue 14: the one step
    protocol); a longer rerun that dies mid-training leaves the previous weights on disk, but no
    longer marked as finished: ``invert`` refuses them and names the command that resumes; after
    it, they are accepted again."""
    import dataclasses

    import helioforge.inversion.train as T
    from helioforge.inversion.config import get_sicon_profile

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "fit_and_save", interrupted)
    # the same run again is current: reused through the step protocol, nothing is trained
    assert T.train_sicon(trained / "ts", work / "train_concat", "concat", "tiny", accelerator="cpu",
                         progress=False) == work / "train_concat" / "sicon_concat"
    r = _invert(sample, tmp_path / "reused.fits", work)
    assert r.exit_code == 0, r.output
    # a longer run resumes the checkpoint, and dies
    tiny = get_sicon_profile("tiny")
    longer = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, epochs=tiny.train.epochs + 1))
    with pytest.raises(KeyboardInterrupt):
        T.train_sicon(trained / "ts", work / "train_concat", "concat", longer, accelerator="cpu", progress=False)
    monkeypatch.undo()
    assert (work / "train_concat" / "sicon_concat.safetensors").is_file()
    out = tmp_path / "atmos.fits"
    r = _invert(sample, out, work)
    _clean_error(r, "sicon_concat.safetensors", "unfinished", "helioforge inversion train")
    assert not out.exists()
    r = _invoke("inversion", "train", "-t", trained / "ts", "-w", work, "-n", "concat", "-p", "tiny", "--accelerator", "cpu")
    assert r.exit_code == 0, r.output
    r = _invert(sample, out, work)
    assert r.exit_code == 0, r.output
    assert out.is_file()


def test_train_refuses_garbled_settings_and_force_starts_afresh(trained, work, one_torch_thread):
    settings = work / "train_concat" / "sicon_settings.json"
    settings.write_text("not json")
    before = _snapshot(work)
    args = ["inversion", "train", "-t", trained / "ts", "-w", work, "-n", "concat", "-p", "tiny", "--accelerator", "cpu"]
    r = _invoke(*args)
    _clean_error(r, "sicon_settings.json", "--force")
    assert _snapshot(work) == before
    r = _invoke(*args, "--force")
    assert r.exit_code == 0, r.output
    assert json.loads(settings.read_text())["digest"]


def test_train_refuses_a_truncated_checkpoint(trained, work):
    ckpt = work / "train_concat" / "checkpoints" / "last.safetensors"
    _truncate(ckpt)
    before = _snapshot(work)
    r = _invoke("inversion", "train", "-t", trained / "ts", "-w", work, "-n", "concat", "-p", "tiny", "--accelerator", "cpu")
    _clean_error(r, "last.safetensors", "--force")
    assert _snapshot(work) == before


@pytest.mark.parametrize("content", ["{garbled", "[]", '{"format": "helioforge-sicon-trainset"}'])
def test_train_refuses_a_garbled_manifest(trainset, tmp_path, content):
    (trainset / "manifest.json").write_text(content)
    before = _snapshot(trainset)
    w = tmp_path / "W"
    r = _invoke("inversion", "train", "-t", trainset, "-w", w, "-n", "concat", "-p", "tiny")
    _clean_error(r, "manifest.json")
    assert _snapshot(trainset) == before and not w.exists()
    r = _invoke("inversion", "make-trainset", "-o", trainset, "-p", "tiny")
    _clean_error(r, "manifest.json")
    assert _snapshot(trainset) == before


# ----------------------------------------------------------------------------- 6. plausibility
def test_synth_refuses_an_implausible_temperature(data_dir, tmp_path):
    lines = (data_dir / "stokes" / "atmospheres" / "hsra11.mod").read_text().splitlines()
    row = lines[5].split()
    row[1] = "1e30"
    lines[5] = " ".join(row)
    m = tmp_path / "hot.mod"
    m.write_text("\n".join(lines) + "\n")
    before = _snapshot(tmp_path)
    r = _invoke("inversion", "synth", m, "-o", tmp_path / "s.fits")
    _clean_error(r, "hot.mod", "line 6", "T = 1e+30")
    assert _snapshot(tmp_path) == before


def test_sir_plausibility_error_is_both_kinds(data_dir, tmp_path):
    from helioforge.data.sir import SIRReadError, read_sir, read_sir_folder
    from helioforge.errors import InputError

    lines = (data_dir / "stokes" / "atmospheres" / "hsra11.mod").read_text().splitlines()
    row = lines[3].split()
    row[1] = "500"  # 500 K
    lines[3] = " ".join(row)
    (tmp_path / "cold.mod").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="cold.mod: line 4: T = 500 K"):
        read_sir(tmp_path / "cold.mod")
    with pytest.raises(SIRReadError):
        read_sir(tmp_path / "cold.mod")
    models, skipped = read_sir_folder(tmp_path)
    assert not models and skipped[0].path.name == "cold.mod"


def _cube_like(sample: Path, dest: Path, data: np.ndarray) -> Path:
    with fits.open(sample) as hdul:
        hdus = fits.HDUList([fits.PrimaryHDU(data.astype(np.float32), header=hdul[0].header)]
                            + [h.copy() for h in hdul[1:]])
        hdus.writeto(dest)
    return dest


@pytest.mark.parametrize("case", ["1e30", "negative continuum", "flat profiles"])
def test_invert_refuses_an_implausible_map(trained, sample, tmp_path, case):
    raw = fits.getdata(sample).astype(np.float64)
    data = {"1e30": np.full_like(raw, 1e30), "negative continuum": -raw,
            "flat profiles": np.broadcast_to(raw[..., :1], raw.shape)}[case]
    m = _cube_like(sample, tmp_path / "odd.fits", np.array(data))
    out = tmp_path / "atmos.fits"
    before = _snapshot(tmp_path)
    r = _invert(m, out, trained / "work")
    why = {"1e30": "beyond the range", "negative continuum": "negative", "flat profiles": "no Fe I"}[case]
    _clean_error(r, "odd.fits", why)
    assert _snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- 7. NaN pixels masked
def test_one_nan_pixel_is_masked_not_fatal(trained, sample, tmp_path):
    raw = fits.getdata(sample).astype(np.float32)  # (x, y, IQUV, λ)
    raw[2, 3, 1, 40] = np.nan  # one value of pixel x = 2, y = 3
    m = _cube_like(sample, tmp_path / "holed.fits", raw)
    out = tmp_path / "atmos.fits"
    r = _invert(m, out, trained / "work")
    assert r.exit_code == 0, r.output
    assert "masked" in r.output and "holed.fits" in r.output and "1 of 25" in r.output
    with fits.open(out) as hdul:
        cube, bxyz = hdul[0].data, hdul["BXYZ"].data
        assert hdul[0].header["HIERARCH HF masked_pixels"] == 1
    assert np.isnan(cube[..., 3, 2]).all() and np.isnan(bxyz[..., 3, 2]).all()
    keep = np.ones((5, 5), bool)
    keep[3, 2] = False
    assert np.isfinite(cube[..., keep]).all() and np.isfinite(bxyz[..., keep]).all()


# ----------------------------------------------------------------------------- 8. locking
@pytest.fixture
def held_lock(tmp_path):
    """Hold the lock of a folder from another process (as a second helioforge run would)."""
    procs = []

    def hold(folder: Path) -> Path:
        code = ("import sys\nfrom helioforge.locking import workdir_lock\n"
                "with workdir_lock(sys.argv[1]):\n    print('locked', flush=True)\n    sys.stdin.read()\n")
        p = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "locked"
        return folder

    yield hold
    for p in procs:
        p.stdin.close()
        p.wait(timeout=30)


def test_make_trainset_on_a_folder_in_use(held_lock, tmp_path):
    out = held_lock(tmp_path / "ts")
    r = _invoke("inversion", "make-trainset", "-o", out, "-p", "tiny")
    _clean_error(r, str(out), "in use", "PID")
    assert not (out / "manifest.json").exists() and not list(out.glob("shard_*"))


def test_train_on_a_work_folder_in_use(held_lock, trained, tmp_path):
    w = held_lock(tmp_path / "W")
    r = _invoke("inversion", "train", "-t", trained / "ts", "-w", w, "-n", "concat", "-p", "tiny", "--accelerator", "cpu")
    _clean_error(r, str(w), "in use")
    assert not (w / "train_concat").exists()


# ----------------------------------------------------------------------------- 9. read-only invert
def test_invert_with_a_missing_work_folder_creates_nothing(sample, tmp_path):
    w = tmp_path / "nowhere"
    r = _invert(sample, tmp_path / "atmos.fits", w)
    _clean_error(r, "nowhere", f"helioforge inversion train -t TRAINSET -w {w} -n concat")
    assert list(tmp_path.iterdir()) == []


def test_invert_leaves_the_work_folder_unchanged(work, sample, tmp_path):
    before = _snapshot(work)
    r = _invert(sample, tmp_path / "atmos.fits", work)
    assert r.exit_code == 0, r.output
    assert _snapshot(work) == before
