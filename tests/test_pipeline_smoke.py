"""Full pipeline on real data with the tiny profile, then every CLI step on its work folder."""

import json
import time

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from helioforge.cli import app
from helioforge.interrogate.config import get_profile
from helioforge.interrogate.pipeline import Interrogator, interrogate

runner = CliRunner()


def _tiny(data_dir):
    p = get_profile("tiny")
    p.data.sharp_dirs = (str(data_dir / "sharp"), str(data_dir / "sharp_bad"))
    return p


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    work = tmp_path_factory.mktemp("tiny")
    t = time.perf_counter()
    metrics = interrogate(_tiny(data_dir), work, progress=False)
    return work, metrics, time.perf_counter() - t


def test_bad_input_and_flux_check_reach_the_report(run):
    work, m, _ = run
    skipped = {s["file"].split("/")[-1]: s["reason"] for s in m["corpus"]["skipped"]}
    assert len(skipped) == 3 and all(name.endswith(".Br.fits") for name in skipped)
    assert any("empty" in r for r in skipped.values()) and sum("truncated" in r for r in skipped.values()) == 2
    assert any("377" in w and "R_VALUE" in w for w in m["corpus"]["warnings"])
    u = m["corpus"]["usflux_check"]
    assert u["n"] == 39 and u["spearman"] >= 0.9  # 37 frames of 14 HARPs + HARPs 2491 and 2007
    html = (work / "report" / "index.html").read_text()
    assert "truncated" in html and "USFLUX" in html


def test_report_contents(run):
    work, m, _ = run
    report = work / "report"
    for name in ("metrics.json", "index.html", "queries.ecsv", "fig2_zoo.png", "fig4_latent_projection.png",
                 "fig5_traversal.png", "fig6_retrieval.png", "fig6_histograms.png"):
        assert (report / name).stat().st_size > 0, name
    on_disk = json.loads((report / "metrics.json").read_text())
    assert set(on_disk["correlations"]) == {"TUF", "PSEP", "R", "TPF", "TNF"}
    assert on_disk["correlations"]["TUF"]["paper_pearson"] == 0.78
    # every direction is either fitted or reported with the reason it could not be
    assert set(on_disk["svm_accuracy"]) | set(on_disk["svm_skipped"]) == {"TUF", "PSEP", "R", "polarity"}
    assert "TUF" in on_disk["svm_accuracy"]
    assert on_disk["corpus"]["n_patches"] >= 100  # tiny tiles are 512 px; the default corpus (>= 300) is tested in test_data_corpus
    assert on_disk["monotonicity"]["TUF"]["n_base"] >= 50
    assert "R_change_reduction" in on_disk["conditioning_TUF_given_R"]
    html = (report / "index.html").read_text()
    assert "Pearson" in html and "fig6_histograms.png" in html and "0.78" in html


def test_second_run_reuses_models(run, data_dir):
    work, _, first = run
    gen = work / "gan" / "generator.safetensors"
    mtime = gen.stat().st_mtime
    m = interrogate(_tiny(data_dir), work, progress=False)
    assert gen.stat().st_mtime == mtime  # not retrained
    assert m["timings_s"]["gan"] < 5 and m["timings_s"]["simsiam"] < 5


def test_interrogator_queries(run, sharp_dir):
    work, _, _ = run
    itg = Interrogator.from_workspace(work)
    by_z = itg.search_latent(np.zeros((2, itg.generator.latent_dim)), k=3)
    assert len(by_z) == 2 and [m.rank for m in by_z[0]] == [1, 2, 3]
    assert by_z[0][0].score >= by_z[0][1].score
    f = sharp_dir / "hmi.sharp_cea_720s.1447.20120307_082400_TAI.Br.fits"
    hits = itg.search_fits(f, k=1)[0]
    # the patch itself is in the corpus: it is its own nearest neighbour
    assert hits[0].file == f.name and hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_cli_generate_search_directions_index(run, tmp_path):
    work, metrics, _ = run
    out = tmp_path / "q.fits"
    keep = ",".join(k.lower() for k in metrics["svm_accuracy"] if k != "TUF")  # e.g. r,psep,polarity
    r = runner.invoke(app, ["generate", "-w", str(work), "--move", "tuf=+2", "--keep", keep, "--seed", "0", "-o", str(out)])
    assert r.exit_code == 0, r.output
    with fits.open(out) as h:
        assert h[0].data.shape == (32, 32)
        assert "HF TUF" in h[0].header and h[0].header["CREATOR"].startswith("helioforge")
        assert h[0].header["HF MOVE"] == "tuf=+2"
        assert h["LATENT"].data.shape == (1, 100)
    assert out.with_suffix(".png").stat().st_size > 0
    r = runner.invoke(app, ["search", str(out), "-w", str(work), "-k", "3", "--format", "json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert len(rows) == 3 and rows[0]["rank"] == 1
    r = runner.invoke(app, ["generate", "-w", str(work), "--move", "flux=+2", "-o", str(tmp_path / "x.fits")])
    assert r.exit_code == 2 and "no latent direction" in r.output
    r = runner.invoke(app, ["directions", "fit", "-w", str(work)])
    assert r.exit_code == 0 and "TUF" in r.stdout
    r = runner.invoke(app, ["index", "build", "-w", str(work)])
    assert r.exit_code == 0, r.output


def test_search_a_generated_cube(run, tmp_path):
    work, _, _ = run
    out = tmp_path / "cube.fits"
    r = runner.invoke(app, ["generate", "-w", str(work), "-n", "3", "--seed", "1", "-o", str(out)])
    assert r.exit_code == 0, r.output
    with fits.open(out) as h:
        assert h[0].data.shape == (3, 32, 32) and len(h["PARAMS"].data) == 3
    hits = Interrogator.from_workspace(work).search_fits(out, k=2)
    assert len(hits) == 3 and all(len(m) == 2 for m in hits)
