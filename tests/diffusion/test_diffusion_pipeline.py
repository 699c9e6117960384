"""Tiny end-to-end run on the real AIA + GOES sample: label → train → sample → evaluate
(→ augmentation experiment), through the command line, in a few minutes on 2 cores.

The run is pinned to one torch thread and reproduces, to 1e-6, the numbers the code before the
architecture change (commit 20472ee) gave on the same inputs (``GOLDEN``)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from astropy.io import fits
from typer.testing import CliRunner

from helioforge.cli import app

#: The tiny pipeline on this module's inputs (every 6th 193 Å browse image + one empty file,
#: profile ``tiny``, one torch thread), run on commit 20472ee (before issue 14's restructuring)
#: with the same commands: label, train, ``sample --flare-class B -n 3 --steps 3 --cfg-scale 2``,
#: evaluate. The restructured code gave the same values bit for bit.
GOLDEN = {
    "labelled": 71,
    "histogram": {"A": 11, "B": 54, "C": 5, "M": 1, "X": 0, "unlabelled": 0},
    "train": {"A": 7, "B": 43, "C": 3, "M": 0, "X": 0},
    "test": {"A": 4, "B": 11, "C": 2, "M": 1, "X": 0},
    "dataset_sum": -17309.130579360528,
    "sample_b": (0.07600308269291152, 0.7144720686328239),  # mean, std of the 3 B-class images
    "frechet_generated": [5.845011865581471, 5.486219275438577],
    "frechet_real_test": 0.053729171122420816,
    "frechet_baseline_mean": 0.4029297083898373,
    "cluster_real_test": {"cluster_error": 2.0761051190888016, "cluster_distance": 1.1907026897764355,
                          "cluster_std": 0.9940702465023354},
    "cluster_generated_error": [16.397494260789713, 14.674460059171592],
    "gt_cluster_error_mean": 1.2649329963466864,
    "state_digests": {"label": "1fa65cab8b9f", "model_class": "4417d13fd615", "feature_encoder": "80f9d45f5a27",
                      "classifier": "99c69fc2947a"},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for the whole module: the golden numbers were made so."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
        # world coordinates of the downsampled full disk: 0.6" x 4096 / 32 per pixel
        assert h[0].header["CTYPE1"] == "HPLN-TAN" and h[0].header["CDELT1"] == pytest.approx(76.8)
    assert out.with_suffix(".png").stat().st_size > 0
    # no sampler option: the work folder's profile decides (tiny: DDIM, 5 steps)
    out2 = work / "s" / "profile_default"
    r = CliRunner().invoke(app, ["diffusion", "sample", "-w", str(work), "--flare-class", "B", "-n", "2", "-o", str(out2)])
    assert r.exit_code == 0, r.output
    with fits.open(out2.with_suffix(".fits")) as h:
        assert h[0].header["HIERARCH HF sampler"] == "ddim" and h[0].header["HIERARCH HF steps"] == 5
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
    reps = m["generated"]["repeats"]
    assert reps == 2  # the tiny profile's repeats: every generated metric is mean ± std over them
    for key in ("cluster_error", "cluster_distance", "cluster_std"):
        g = m["cluster"]["generated"][key]
        assert len(g["values"]) == reps and np.isfinite(g["mean"]) and g["std"] >= 0
        assert np.isfinite(m["cluster"]["real_test"][key]) and np.isfinite(m["cluster"]["baseline"][key]["mean"])
    assert m["frechet"]["generated_vs_train"]["mean"] >= 0 and m["frechet"]["real_test_vs_train"] >= 0
    k = m["classifier"]
    assert 0 <= k["real_test"]["macro_f1"] <= 1 and len(k["ratio"]["macro_f1"]["values"]) == reps
    # one class set on both sides of the ratio
    assert k["real_test"]["macro_classes"] == k["classes"]
    assert set(k["classes"]) <= set(m["generated"]["classes"])
    assert 0 <= k["generated_chance"]["macro_f1"]["mean"] <= 1 and 0 <= k["real_test_chance"]["macro_f1"] <= 1
    # the sampler is the profile's (tiny: DDIM 5 steps), and the report says so
    assert (m["generated"]["sampler"], m["generated"]["steps"]) == ("ddim", 5)
    html = (rep / "index.html").read_text()
    assert "ddim (5 steps" in html and "What this sample allows one to conclude" in html
    assert set(m["conclusions"]) == {"cluster_error", "cluster_distance", "cluster_std", "frechet", "f1", "real_f1",
                                     "ratio", "macro_precision", "macro_recall"}
    assert k["real_test_bootstrap"]["macro_f1_std"] >= 0
    for f in ("index.html", "std_maps.png", "samples_per_class.png", "class_histogram.png"):
        assert (rep / f).stat().st_size > 0
    assert "Table 1" in html
    assert m["labels"]["labelled"] > 0 and "unlabelled_by_reason" in m["labels"]
    # the report's numbers are the metrics' numbers
    fd = m["frechet"]["generated_vs_train"]
    assert f"{fd['mean']:.3f} ± {fd['std']:.3f}" in html
    assert f"{m['cluster']['real_test']['cluster_error']:.3f}" in html
    assert f"{m['frechet']['real_test_vs_train']:.3f}" in " ".join(r.output.split())


def test_pipeline_reproduces_the_golden_numbers(run):
    """Values, not only finiteness: the dataset, a sample and the evaluation on a fixed seed equal
    those of the code before the restructuring (``GOLDEN``)."""
    work, _ = run
    rep = json.loads((work / "labels.json").read_text())
    assert rep["labelled"] == GOLDEN["labelled"] and rep["histogram"] == GOLDEN["histogram"]
    assert (rep["train"], rep["test"]) == (GOLDEN["train"], GOLDEN["test"])
    with fits.open(work / "dataset.fits") as h:
        assert float(h[0].data.astype(np.float64).sum()) == pytest.approx(GOLDEN["dataset_sum"], rel=1e-9)
    with fits.open(work / "s" / "b.fits") as h:
        d = h[0].data.astype(np.float64)
        assert (d.mean(), d.std()) == pytest.approx(GOLDEN["sample_b"], abs=1e-6)
    m = json.loads((work / "rep" / "metrics.json").read_text())
    assert m["frechet"]["generated_vs_train"]["values"] == pytest.approx(GOLDEN["frechet_generated"], abs=1e-6)
    assert m["frechet"]["real_test_vs_train"] == pytest.approx(GOLDEN["frechet_real_test"], abs=1e-6)
    assert m["frechet"]["baseline_vs_train"]["mean"] == pytest.approx(GOLDEN["frechet_baseline_mean"], abs=1e-6)
    for key, value in GOLDEN["cluster_real_test"].items():
        assert m["cluster"]["real_test"][key] == pytest.approx(value, abs=1e-6)
    assert m["cluster"]["generated"]["cluster_error"]["values"] == pytest.approx(GOLDEN["cluster_generated_error"], abs=1e-6)
    assert m["cluster"]["gt_real_halves"]["cluster_error"]["mean"] == pytest.approx(GOLDEN["gt_cluster_error_mean"], abs=1e-6)
    state = json.loads((work / "state.json").read_text())
    assert {k: state[k]["digest"] for k in GOLDEN["state_digests"]} == GOLDEN["state_digests"]


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


def test_paper_profile_is_the_paper():
    """Defect: the paper profile labelled by hourly flux on 193 Å browse JPEGs and evaluated with
    DPM-Solver 20 steps (EvaluateConfig's own sampler settings) while documenting DDPM-1000."""
    from dataclasses import fields

    from helioforge.diffusion.config import EvaluateConfig, get_diffusion_profile

    p = get_diffusion_profile("paper")
    assert (p.data.wavelength, p.data.label_source, p.data.tolerance_min) == (171, "events", 7.0)
    assert p.data.default_folder == "aia/sdoml_binned"  # calibrated DN/s FITS, not browse JPEGs
    assert (p.sample.sampler, p.sample.steps, p.train.num_train_timesteps) == ("ddpm", None, 1000)
    assert (p.evaluate.repeats, p.evaluate.n_generated, p.evaluate.n_per_class) == (10, 1000, 200)
    # the evaluation has no sampler settings of its own: it cannot disagree with the profile
    assert not {"sampler", "steps", "cfg_scale", "eta"} & {f.name for f in fields(EvaluateConfig)}
    cpu = get_diffusion_profile("cpu")
    assert cpu.sample.sampler == "dpm" and cpu.evaluate.repeats >= 5


def test_evaluate_and_augment_sample_with_the_profile_sampler(run, monkeypatch, tmp_path):
    import helioforge.diffusion.evaluate as ev_mod
    from helioforge.diffusion.pipeline import DiffusionWorkspace

    work, _ = run
    ws = DiffusionWorkspace(work, create=False)
    prof = ws.load_profile()
    prof.sample.sampler, prof.sample.steps, prof.sample.cfg_scale = "ddpm", None, 1.5
    prof.evaluate.repeats = 1
    seen = []
    real_sample = ev_mod.sample

    def spy(net, train_cfg, cond, **kw):
        seen.append((kw["sampler"], kw["steps"], kw["cfg_scale"]))
        return real_sample(net, train_cfg, cond, **{**kw, "sampler": "ddim", "steps": 2})

    monkeypatch.setattr(ev_mod, "sample", spy)
    m = ev_mod.evaluate(prof, ws, tmp_path / "rep", accelerator="cpu", progress=False)
    assert set(seen) == {("ddpm", None, 1.5)} and m["generated"]["sampler"] == "ddpm"
    # the report's metrics are the returned metrics
    from helioforge.io import write_json

    write_json(tmp_path / "returned.json", m)  # the same JSON conventions (NaN → null)
    assert json.loads((tmp_path / "rep" / "metrics.json").read_text()) == json.loads((tmp_path / "returned.json").read_text())
    assert "ddpm (100 steps, w = 1.5)" in (tmp_path / "rep" / "index.html").read_text()  # T of the tiny model
    seen.clear()
    prof.augment.additions, prof.augment.repeats = (2,), 1
    r = ev_mod.augment_experiment(prof, ws, tmp_path / "aug", accelerator="cpu", progress=False)
    assert seen and set(seen) == {("ddpm", None, 1.5)} and r["sampler_label"].startswith("ddpm")


def test_label_reports_every_skip_and_unlabelled_reason(data_dir, tmp_path):
    """Bad input: an image without DATE-OBS/T_OBS, an image outside the flux series, images in a
    gap of the flux series. Labelling goes on with the rest and counts each reason."""
    import pandas as pd

    src = sorted((data_dir / "aia" / "sdoml_binned").glob("aia.0131A.*.fits"))
    if len(src) < 100:
        pytest.skip("needs the full sample's aia/sdoml_binned (../shared/data or HELIOFORGE_DATA)")
    folder = tmp_path / "aia"
    folder.mkdir()
    for f in src:
        os.symlink(f, folder / f.name)
    with fits.open(src[0]) as h:
        hdu = h[0] if h[0].data is not None else h[1]
        data, hdr = hdu.data.copy(), hdu.header.copy()
    for key in ("DATE-OBS", "T_OBS"):
        hdr.remove(key, ignore_missing=True)
    fits.PrimaryHDU(data, hdr).writeto(folder / "aia.0131A.notime.256px.fits")
    hdr["DATE-OBS"] = "2019-06-01T00:00:00"  # after the end of the GOES-15 series (2018-10)
    fits.PrimaryHDU(data, hdr).writeto(folder / "aia.0131A.20190601_000000.256px.fits")
    hourly = pd.read_csv(data_dir / "goes" / "goes15_xrs_hourly_2010-2018.csv")
    t = pd.to_datetime(hourly["time"] if "time" in hourly else hourly.iloc[:, 0])
    gap = (t >= "2014-10-19") & (t < "2014-10-20")  # 14 images that day
    flux = tmp_path / "xrs_with_gap.csv"
    hourly[~gap.to_numpy()].to_csv(flux, index=False)
    work = tmp_path / "w"
    r = CliRunner().invoke(app, ["diffusion", "label", "-w", str(work), "-p", "tiny", "--images", str(folder),
                                 "--wavelength", "131", "--source", "flux", "--flux", str(flux)])
    assert r.exit_code == 0, r.output
    rep = json.loads((work / "labels.json").read_text())
    assert rep["skipped_by_reason"] == {"no observation time": 1}
    why = rep["unlabelled_by_reason"]
    assert why[next(k for k in why if k.startswith("outside the flux series"))] == 1
    n_gap = why[next(k for k in why if k.startswith("in a gap of the flux series"))]
    assert 14 <= n_gap <= 16  # the day's 14 images, and any within half an hour of its ends
    assert rep["labelled"] == len(src) - n_gap and rep["images_read"] == len(src) + 1
    out = " ".join(r.output.split())
    assert "notime" in json.dumps(rep["skipped"]) and f"unlabelled {n_gap}: in a gap" in out
