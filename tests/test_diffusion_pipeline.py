"""Tiny end-to-end run on the real AIA + GOES sample: label → train → sample → evaluate
(→ augmentation experiment), through the command line, in a few minutes on 2 cores."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from helioforge.cli import app


@pytest.fixture(scope="module")
def subset(data_dir, tmp_path_factory):
    """Every 6th browse 193 Å image (≈70, A/B/C classes) plus one broken file, as symlinks."""
    src = sorted((data_dir / "aia" / "browse").glob("*_193_512.jpg"))[::6]
    folder = tmp_path_factory.mktemp("aia")
    for f in src:
        os.symlink(f, folder / f.name)
    (folder / "20110101_000000_SDO_AIA_193_512.jpg").write_bytes(b"")  # empty: skipped, reported
    return folder, len(src)


@pytest.fixture(scope="module")
def run(subset, tmp_path_factory):
    folder, n = subset
    work = tmp_path_factory.mktemp("diffusion")
    r = CliRunner().invoke(app, ["diffusion", "label", "-w", str(work), "-p", "tiny", "--images", str(folder)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["diffusion", "train", "-w", str(work), "--accelerator", "cpu"])
    assert r.exit_code == 0, r.output
    return work, n


def test_label_products(run):
    work, n = run
    rep = json.loads((work / "labels.json").read_text())
    assert rep["images_read"] == n and len(rep["skipped"]) == 1
    assert "empty" in rep["skipped"][0]["reason"].lower() or "size" in rep["skipped"][0]["reason"].lower()
    assert rep["labelled"] + rep["unlabelled"] == n
    assert sum(v for k, v in rep["histogram"].items() if k != "unlabelled") == rep["labelled"]
    assert (work / "class_histogram.png").stat().st_size > 0
    with fits.open(work / "dataset.fits") as h:
        cube = h[0].data
        assert cube.shape[1:] == (32, 32) and cube.min() >= -1 and cube.max() <= 1
        assert h[0].header["CREATOR"].startswith("helioforge")
        assert set(h["LABELS"].data["split"]) == {"train", "test"}


def test_sample_writes_fits_and_png(run):
    work, _ = run
    out = work / "s" / "b"
    r = CliRunner().invoke(app, ["diffusion", "sample", "-w", str(work), "--flare-class", "B", "-n", "3",
                                 "--steps", "3", "--cfg-scale", "2", "-o", str(out)])
    assert r.exit_code == 0, r.output
    with fits.open(out.with_suffix(".fits")) as h:
        assert h[0].data.shape == (3, 32, 32)
        assert h[0].header["HIERARCH HF cfg_scale"] == 2 and h[0].header["HIERARCH HF flare_class"] == "B"
    assert out.with_suffix(".png").stat().st_size > 0
    r = CliRunner().invoke(app, ["diffusion", "sample", "-w", str(work), "--flare-class", "X", "-n", "2", "--steps", "2"])
    assert r.exit_code == 2 and "no X-class image" in r.output.replace("\n", " ")
    r = CliRunner().invoke(app, ["diffusion", "sample", "-w", str(work), "--flare-class", "Q", "--steps", "2"])
    assert r.exit_code == 2 and "not one of" in r.output


def test_evaluate_report(run):
    work, _ = run
    rep = work / "rep"
    r = CliRunner().invoke(app, ["diffusion", "evaluate", "-w", str(work), "-r", str(rep), "--accelerator", "cpu"])
    assert r.exit_code == 0, r.output
    m = json.loads((rep / "metrics.json").read_text())
    for key in ("cluster_error", "cluster_distance", "cluster_std"):
        assert np.isfinite(m["cluster"]["generated"][key]) and np.isfinite(m["cluster"]["real_test"][key])
    assert m["frechet"]["generated_vs_train"] >= 0 and m["frechet"]["real_test_vs_train"] >= 0
    assert 0 <= m["classifier"]["real_test"]["macro_f1"] <= 1
    for f in ("index.html", "std_maps.png", "samples_per_class.png", "class_histogram.png"):
        assert (rep / f).stat().st_size > 0
    assert "Table 1" in (rep / "index.html").read_text()


def test_augment_experiment(run):
    work, _ = run
    rep = work / "rep"
    r = CliRunner().invoke(app, ["diffusion", "augment-experiment", "-w", str(work), "-r", str(rep),
                                 "--additions", "2,4", "--repeats", "1", "--accelerator", "cpu"])
    assert r.exit_code == 0, r.output
    res = json.loads((rep / "augmentation.json").read_text())
    assert "X" in res["dropped_classes"]  # never seen in training: not generated
    assert (rep / "augmentation.html").is_file() and (rep / "augmentation_summary.csv").is_file()
    assert not res["paper_scale"] and "CPU run" in (rep / "augmentation.html").read_text()


def test_evaluate_without_model_names_command(tmp_path):
    r = CliRunner().invoke(app, ["diffusion", "evaluate", "-w", str(tmp_path)])
    assert r.exit_code == 2 and "diffusion label" in r.output.replace("\n", " ")


def test_flux_model_train_and_sample(run):
    work, _ = run
    r = CliRunner().invoke(app, ["diffusion", "train", "-w", str(work), "--condition", "flux", "--epochs", "1",
                                 "--accelerator", "cpu"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((work / "model_flux" / "diffusion.json").read_text())
    lo, hi = cfg["log10_flux_range"]
    assert cfg["condition"] == "flux" and -9 < lo < hi < -3
    out = work / "s" / "flux"
    r = CliRunner().invoke(app, ["diffusion", "sample", "-w", str(work), "--condition", "flux", "--flux", "3e-6",
                                 "-n", "2", "--steps", "2", "-o", str(out)])
    assert r.exit_code == 0, r.output
    with fits.open(out.with_suffix(".fits")) as h:
        assert h[0].header["HIERARCH HF flux_Wm2"] == pytest.approx(3e-6)
    r = CliRunner().invoke(app, ["diffusion", "sample", "-w", str(work), "--condition", "flux", "--flare-class", "C",
                                 "--steps", "2"])
    assert r.exit_code == 2 and "--flux" in r.output
