"""The one data-resolution rule, the embedded real sample, and the fresh-machine path: the
interrogator's tiny pipeline on the embedded sample alone (no ../shared/data)."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import helioforge.config as config
from helioforge.cli import app
from helioforge.config import SAMPLE_DIR, data_file, data_root_info, set_data_root
from helioforge.data.sharp import read_sharp, read_sharp_folder

MANIFEST = json.loads((SAMPLE_DIR / "MANIFEST.json").read_text())


@pytest.fixture
def no_shared(monkeypatch, tmp_path):
    """As on a fresh clone: no --data, no $HELIOFORGE_DATA, no ../shared/data, an empty cache."""
    monkeypatch.delenv("HELIOFORGE_DATA", raising=False)
    monkeypatch.setenv("HELIOFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(config, "_shared_data_candidates", lambda: [tmp_path / "no" / "shared" / "data"])
    set_data_root(None)
    yield tmp_path
    set_data_root(None)


def test_rule_order(no_shared, monkeypatch, tmp_path):
    assert data_root_info() == (SAMPLE_DIR, "embedded")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / ".helioforge-complete").write_text("ok\n")
    assert data_root_info() == (cache, "fetched")
    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.setattr(config, "_shared_data_candidates", lambda: [shared])
    assert data_root_info() == (shared.resolve(), "shared")
    env = tmp_path / "env"
    monkeypatch.setenv("HELIOFORGE_DATA", str(env))
    assert data_root_info() == (env.resolve(), "HELIOFORGE_DATA")  # returned even if missing: callers report it
    given = tmp_path / "given"
    given.mkdir()
    set_data_root(given)
    assert data_root_info() == (given.resolve(), "--data")
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        set_data_root(tmp_path / "nowhere")


def test_data_option_and_path_command(no_shared, tmp_path):
    r = CliRunner().invoke(app, ["data", "path"])
    assert r.exit_code == 0 and r.stdout.strip() == str(SAMPLE_DIR)
    assert "embedded sample" in r.stderr
    r = CliRunner().invoke(app, ["--data", str(tmp_path), "data", "path"])
    assert r.exit_code == 0 and r.stdout.strip() == str(tmp_path.resolve())
    r = CliRunner().invoke(app, ["--data", str(tmp_path / "missing"), "data", "path"])
    assert r.exit_code == 2 and "missing: data folder not found" in r.stderr


def test_data_file_takes_the_gzip_form(tmp_path):
    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(b"x\n"))
    (tmp_path / "b.csv").write_text("y\n")
    assert data_file("a.csv", tmp_path) == tmp_path / "a.csv.gz"
    assert data_file("b.csv", tmp_path) == tmp_path / "b.csv"
    assert data_file("c.csv", tmp_path) == tmp_path / "c.csv"


def test_manifest_matches_the_files():
    listed = {e["file"] for e in MANIFEST["files"]}
    on_disk = {p.relative_to(SAMPLE_DIR).as_posix() for p in SAMPLE_DIR.rglob("*") if p.is_file()} - {"MANIFEST.json"}
    assert listed == on_disk
    total = 0
    for e in MANIFEST["files"]:
        data = (SAMPLE_DIR / e["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == e["sha256"], e["file"]
        raw = gzip.decompress(data) if e["gzip"] else data
        assert hashlib.sha256(raw).hexdigest() == e["original_sha256"], e["file"]  # lossless
        assert e["source"] and e["licence"]
        total += len(data)
    assert total == MANIFEST["total_bytes"] <= 25 * 2**20
    tops = {e["file"].split("/")[0] for e in MANIFEST["files"]}
    assert tops == {"sharp", "sharp_bad", "aia", "goes", "stokes"}


def test_sample_is_a_byte_copy_of_the_data_folder(data_dir):
    for e in MANIFEST["files"]:
        original = data_dir / e["original"]
        assert hashlib.sha256(original.read_bytes()).hexdigest() == e["original_sha256"], e["original"]


def test_sharp_reader_opens_gzipped_companions():
    patches, skipped = read_sharp_folder(SAMPLE_DIR / "sharp")
    assert len(patches) == 39 and not skipped
    with_bitmap = [p for p in patches if p.bitmap is not None]
    assert with_bitmap and all(p.bitmap.shape == p.Br.shape for p in with_bitmap)
    assert read_sharp(with_bitmap[0].path).bitmap is not None


@pytest.fixture(scope="module")
def fresh_machine_run(tmp_path_factory):
    """`helioforge interrogate -p tiny` with no data folder at all: the embedded sample."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("fresh")
    mp.delenv("HELIOFORGE_DATA", raising=False)
    mp.setenv("HELIOFORGE_CACHE", str(tmp / "cache"))
    mp.setattr(config, "_shared_data_candidates", lambda: [tmp / "no" / "shared" / "data"])
    work = tmp / "work"
    try:
        r = CliRunner().invoke(app, ["interrogate", "-p", "tiny", "-w", str(work), "--accelerator", "cpu",
                                     "--sharp-dir", str(SAMPLE_DIR / "sharp"), "--sharp-dir", str(SAMPLE_DIR / "sharp_bad")])
        t = CliRunner().invoke(app, ["train", "gan", "-w", str(work)])
    finally:
        mp.undo()
    return work, r, t


def test_fresh_machine_runs_the_interrogator_on_the_embedded_sample(fresh_machine_run):
    work, r, _ = fresh_machine_run
    assert r.exit_code == 0, r.output
    assert f"data: {SAMPLE_DIR} (embedded sample" in r.stderr
    m = json.loads((work / "report" / "metrics.json").read_text())
    assert m["corpus"]["usflux_check"]["n"] == 39
    skipped = [Path(s["file"]).name for s in m["corpus"]["skipped"]]
    assert sum(name.endswith(".Br.fits") for name in skipped) == 3
    assert any("hmi_fulldisk" in s["file"] and "embedded sample" in s["reason"] for s in m["corpus"]["skipped"])
    assert (work / "report" / "index.html").stat().st_size > 0
    # greppable: each skipped file's whole name on one line of the output
    for name in (n for n in skipped if n.endswith(".Br.fits")):
        assert any(name in line for line in r.output.splitlines()), name


def test_train_gan_command_runs(fresh_machine_run):
    """`helioforge train gan` crashed with 'string indices must be integers' (cli.py:204)."""
    _, _, t = fresh_machine_run
    assert t.exit_code == 0, t.output
    assert "generator" in t.output
