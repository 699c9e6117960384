"""Directions in physical units and real magnetograms in the latent space (issue 17, parts 1–2)."""

import math

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from helioforge.cli import app
from helioforge.errors import InputError
from helioforge.interrogate.calibrate import Calibration, ImageScale, fit_response, keep_key, parse_physical_move
from helioforge.interrogate.config import get_profile
from helioforge.interrogate.infer import Interrogator, read_latent

runner = CliRunner()


# ----------------------------------------------------------------------------- analytical cases
def test_image_scale_is_the_sharp_pixel_times_the_resize_factor():
    s = ImageScale(image_size=64, native_side_px=256)
    native_mm = 0.03 * math.pi / 180 * 696.0  # SHARP CEA pixel at RSUN_REF = 696 Mm (JSOC)
    assert s.pixel_mm == pytest.approx(native_mm * 4, rel=1e-6)
    # one pixel of 1000 G over (pixel_mm × 1e8 cm)²
    assert s.flux_mx == pytest.approx(1000 * (native_mm * 4e8) ** 2, rel=1e-6)
    p = s.to_physical({"TUF": np.array([2.0]), "PSEP": np.array([3.0]), "tilt": np.array([10.0])})
    assert p["TUF"][0] == pytest.approx(2 * s.flux_mx) and p["PSEP"][0] == pytest.approx(3 * s.pixel_mm)
    assert p["tilt"][0] == 10.0
    assert ImageScale.of(get_profile("cpu")).native_side_px == 256  # the corpus's tile side


def test_fit_response_recovers_a_line_and_stops_where_it_saturates():
    eps = np.linspace(-3, 3, 13)
    rng = np.random.default_rng(0)
    line = 2.5e21 * eps[None, :] + rng.normal(0, 1e19, (32, 13))
    line[:, 6] = 0.0
    r = fit_response(eps, line)
    assert r["slope"] == pytest.approx(2.5e21, rel=0.01)
    assert r["eps_valid"] == 3.0 and r["r2"] > 0.99
    assert r["slope_ci"][0] < 2.5e21 < r["slope_ci"][1]
    sat = 4.0 * np.tanh(np.tile(eps, (8, 1)) / 1.0)  # linear near 0, flat beyond |ε| ≈ 1
    r = fit_response(eps, sat)
    assert r["eps_valid"] <= 1.0
    noise = rng.normal(0, 1, (32, 13))  # no response: R² near 0 or below
    assert fit_response(eps, noise)["r2"] < 0.1
    with pytest.raises(ValueError, match="non-zero"):
        fit_response(np.zeros(3), np.zeros((2, 3)))


def test_physical_moves_parse_with_units():
    assert parse_physical_move("tuf", "+2e22Mx") == (2e22, "Mx")
    assert parse_physical_move("psep", "5000km") == (pytest.approx(5.0), "Mm")
    assert parse_physical_move("r", "-1.5") == (-1.5, None)
    assert parse_physical_move("TUF", "1e18Wb")[0] == pytest.approx(1e26)  # 1 Wb = 1e8 Mx
    for name, value, msg in (("tuf", "+3Mm", "not a unit of Mx"), ("polarity", "+1Mx", "no physical unit"),
                             ("tuf", "lots", "not a number"), ("tuf", "nan", "finite"), ("psep", "2 furlongs", "not a unit")):
        with pytest.raises(InputError, match=msg):
            parse_physical_move(name, value)
    assert keep_key(["r", "tuf", " "]) == "R,TUF"


# ----------------------------------------------------------------------------- on a trained work folder
def test_calibration_of_the_tiny_work_folder(tiny_interrogator):
    work, metrics, _ = tiny_interrogator
    cal = Calibration.load(work / "calibration.json")
    fitted = [n for n in ("TUF", "PSEP", "R") if n in metrics["svm_accuracy"]]
    others = [n for n in ("TUF", "PSEP", "R", "polarity") if n in metrics["svm_accuracy"]]
    # every direction, plain and with each subset of the other fitted directions held
    assert len(cal.fits) == sum(2 ** (len(others) - 1) for _ in fitted)
    tuf = cal.get("tuf")
    assert tuf.unit == "Mx" and tuf.slope > 0 and 0 < tuf.r2 <= 1 and tuf.eps_valid > 0
    assert tuf.slope_ci[0] <= tuf.slope <= tuf.slope_ci[1]
    assert cal.get("tuf", ["r"]).keep == "R"
    with pytest.raises(InputError, match="no physical calibration"):
        cal.get("polarity")
    # the report shows it, beside the random-direction yardstick
    rows = metrics["calibration"]["rows"]
    assert {r["direction"] for r in rows} == set(fitted) and "TUF" in metrics["calibration"]["random_direction"]
    html = (work / "report" / "index.html").read_text()
    assert "Directions in physical units" in html and "random unit direction" in html


def test_generate_with_a_physical_move_records_requested_and_achieved(tiny_interrogator, tmp_path):
    work, _, _ = tiny_interrogator
    out = tmp_path / "g.fits"
    r = runner.invoke(app, ["generate", "-w", str(work), "--move", "tuf=+5e21Mx", "--keep", "r", "-n", "8", "--refine", "0",
                            "-o", str(out)])
    assert r.exit_code == 0, r.output
    with fits.open(out) as h:
        hdr = h[0].header
        assert hdr["HF TUF_REQUESTED"] == "+5e+21 Mx"
        assert hdr["HF TUF_ACHIEVED"].endswith(" Mx") and "R2" in hdr["HF TUF_PER_EPS"]
        t = h["PARAMS"].data
        eps0, ach0 = np.asarray(t["eps_TUF"]), np.asarray(t["dTUF_achieved"])
        assert np.allclose(eps0, eps0[0]) and eps0[0] > 0  # one calibrated ε for every image
        assert "TUF_Mx" in t.names and "PSEP_Mm" in t.names
    # refining (secant steps per image, the default 3 rounds) brings each achieved change closer to the request
    r = runner.invoke(app, ["generate", "-w", str(work), "--move", "tuf=+5e21Mx", "--keep", "r", "-n", "8",
                            "-o", str(tmp_path / "refined.fits")])
    assert r.exit_code == 0, r.output
    with fits.open(tmp_path / "refined.fits") as h:
        ach = np.asarray(h["PARAMS"].data["dTUF_achieved"])
    assert np.median(np.abs(ach - 5e21)) < np.median(np.abs(ach0 - 5e21))
    assert np.median(np.abs(ach - 5e21)) < 0.05 * 5e21
    bad = runner.invoke(app, ["generate", "-w", str(work), "--move", "tuf=+5Mm", "-o", str(tmp_path / "x.fits")])
    assert bad.exit_code == 2 and "not a unit of Mx" in bad.output


def test_physical_moves_need_a_current_calibration(tiny_interrogator, tmp_path):
    work, _, _ = tiny_interrogator
    itg = Interrogator.from_workspace(work, with_index=False)
    assert itg.calibration is not None
    itg.calibration = None
    with pytest.raises(InputError, match="directions calibrate"):
        itg.steer(itg.latent(0), ["tuf=+1e21Mx"])
    z, recs = itg.steer(itg.latent(0), ["tuf=+1"])  # a move in ε needs no calibration
    assert recs[0]["unit"] is None and recs[0]["achieved"] is not None


def test_projection_recovers_a_generated_image_and_beats_random_starts(tiny_interrogator):
    work, _, _ = tiny_interrogator
    itg = Interrogator.from_workspace(work, with_index=False)
    target = itg.images_from_latent(itg.latent(123))[0, 0]  # an image the generator can make exactly
    from helioforge.interrogate.project import project_image

    pr = project_image(itg.generator, target, itg.profile)
    assert pr.errors["median_abs_G"] < pr.random_start["median_abs_G"]
    assert pr.errors["rel_dTUF"] < 0.1 and pr.errors["rel_dTUF"] < pr.random_start["rel_dTUF"]
    assert pr.losses == sorted(pr.losses) and len(pr.losses) == itg.profile.projection.restarts
    with pytest.raises(InputError, match="all zero"):
        project_image(itg.generator, np.zeros_like(target), itg.profile)
    with pytest.raises(InputError, match="32x32"):
        project_image(itg.generator, np.zeros((8, 8)), itg.profile)


def test_project_cli_on_real_patches_then_steer_the_result(tiny_interrogator, sharp_dir, data_dir, tmp_path):
    work, _, _ = tiny_interrogator
    files = sorted(sharp_dir.glob("*.fits"))[:2]
    bad = sorted((data_dir / "sharp_bad").glob("*.fits"))[:1]
    r = runner.invoke(app, ["project", *map(str, files + bad), "-w", str(work), "-o", str(tmp_path / "proj")])
    assert r.exit_code == 0, r.output
    import json

    rep = json.loads((tmp_path / "proj" / "projection.json").read_text())
    assert rep["summary"]["n"] == 2 and len(rep["skipped"]) == len(bad)
    for row in rep["files"]:
        assert row["fit"]["rel_dTUF"] < row["random_start"]["rel_dTUF"]
    zfile = tmp_path / "proj" / (files[0].name.split(".fits")[0] + "_z.fits")
    z = read_latent(zfile)
    assert z.shape == (1, 100)
    with fits.open(zfile) as h:
        assert h[0].header["HF PROJECTED_FROM"] == files[0].name
        side = h[0].header["HF NATIVE_SIDE_PX"]
    with fits.open(files[0]) as h:  # the patch's own scale, not the profile's tile side
        ny, nx = h[-1].data.shape
    assert side == pytest.approx(math.sqrt(ny * nx))
    out = tmp_path / "edited.fits"
    r = runner.invoke(app, ["generate", "-w", str(work), "--from", str(zfile), "--move", "tuf=+1e21Mx", "-o", str(out)])
    assert r.exit_code == 0, r.output
    with fits.open(out) as h:
        assert h[0].header["HF SEED"] == "given z" and h[0].header["HF NATIVE_SIDE_PX"] == pytest.approx(side)
    with pytest.raises(InputError, match="no LATENT table"):
        read_latent(files[0])


def test_a_direction_with_no_measurable_effect_refuses_moves_in_units(tiny_interrogator):
    from helioforge.interrogate.calibrate import DirectionFit

    work, _, _ = tiny_interrogator
    itg = Interrogator.from_workspace(work, with_index=False)
    fit = itg.calibration.get("tuf")
    assert fit.significant
    itg.calibration.fits["TUF|"] = DirectionFit(**{**fit.__dict__, "slope": 1e19, "slope_ci": (-2e20, 3e20)})
    assert not itg.calibration.get("tuf").significant
    with pytest.raises(InputError, match="not distinguishable from 0"):
        itg.steer(itg.latent(0), ["tuf=+1e21Mx"])
    itg.steer(itg.latent(0), ["tuf=+1"])  # ε still works


def test_combined_refined_moves_report_what_the_returned_z_achieves(tiny_interrogator):
    """Each image keeps one round for all its moves together (the review found the achieved
    values of two refined moves taken from different rounds)."""
    from helioforge.interrogate.calibrate import ImageScale
    from helioforge.interrogate.evaluate import image_params

    work, _, _ = tiny_interrogator
    itg = Interrogator.from_workspace(work, with_index=False)
    z = itg.latent(3, 6)
    zm, recs = itg.steer(z, ["tuf=+5e21Mx", "psep=+3Mm"], refine=3)
    scale = ImageScale.of(itg.profile)
    p0 = scale.to_physical(image_params(itg.images_from_latent(z), itg.profile))
    p1 = scale.to_physical(image_params(itg.images_from_latent(zm), itg.profile))
    for r, key in zip(recs, ("TUF", "PSEP")):
        np.testing.assert_allclose(r["achieved"], p1[key] - p0[key], rtol=1e-6)
    with pytest.raises(InputError, match="beyond"):
        itg.steer(z, ["tuf=+1e30Mx"])
