"""Stokes profiles of SIR models as Hinode SP records them, their files, and the ``synth`` command."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from helioforge.cli import app
from helioforge.data.sir import SIRReadError, read_sir
from helioforge.inversion.synthesis import StokesProfiles, synthesize_model, write_stokes

runner = CliRunner()


def test_quiet_sun_umbra_and_instrument(atmos_dir):
    qs = synthesize_model(atmos_dir / "hsra11.mod")
    assert qs.stokes.shape == (4, 112) and qs.wavelength.shape == (112,)
    assert qs.unit == "I_c(quiet Sun)" and qs.stokes[0, 0] == pytest.approx(0.995, abs=0.01)
    umbra = synthesize_model(atmos_dir / "emaltby11.mod")
    assert 0.1 < umbra.stokes[0, 0] < 0.4  # umbral continuum at 630 nm is 20–35 % of the quiet Sun
    raw = synthesize_model(atmos_dir / "hsra11.mod", instrument="none", normalise="model")
    # the SP profile (≈ 24 mÅ FWHM) fills the line cores but conserves the equivalent width
    assert qs.stokes[0].min() > raw.stokes[0].min()
    step = np.gradient(qs.wavelength)
    ew_inst = np.sum((1 - qs.stokes[0] / qs.stokes[0, 0]) * step)
    ew_raw = np.sum((1 - raw.stokes[0] / raw.stokes[0, 0]) * step)
    assert ew_inst == pytest.approx(ew_raw, rel=0.02)


def test_mu_darkens_and_bad_arguments(atmos_dir):
    model = read_sir(atmos_dir / "hsra11.mod")
    limb = synthesize_model(model, mu=0.5, normalise="none")
    centre = synthesize_model(model, normalise="none")
    assert limb.ic_model < centre.ic_model
    with pytest.raises(ValueError, match="instrument"):
        synthesize_model(model, instrument="sst")
    with pytest.raises(ValueError, match="normalise"):
        synthesize_model(model, normalise="max")
    with pytest.raises(ValueError, match="mu"):
        synthesize_model(model, mu=0.0)


def test_fits_and_text_round_trip(tmp_path):
    wav = np.linspace(6300.89, 6303.27, 112)
    stokes = np.random.default_rng(0).normal(size=(4, 112))
    res = StokesProfiles(stokes=stokes, wavelength=wav, unit="I_c(quiet Sun)", ic_model=1.0,
                         params={"model": "x.mod", "mu": 0.7})
    f = write_stokes(tmp_path / "s.fits", res)
    with fits.open(f) as hdul:
        assert hdul[0].data.shape == (4, 112)
        h = hdul[0].header
        assert h["CTYPE1"] == "AWAV" and h["CTYPE2"] == "STOKES" and h["MU"] == 0.7
        assert h["CREATOR"].startswith("helioforge")
        assert np.array_equal(hdul["WAVELENGTH"].data["WAVELENGTH"], wav)
        assert np.array_equal(hdul[0].data, stokes)
    t = np.loadtxt(write_stokes(tmp_path / "s.txt", res, fmt="txt"))
    assert t.shape == (112, 5)
    assert np.allclose(t[:, 1:].T, stokes, rtol=1e-7)
    with pytest.raises(ValueError, match="format"):
        write_stokes(tmp_path / "s.h5", res, fmt="hdf5")


def test_cli_synth(tmp_path, atmos_dir):
    out = tmp_path / "pen.fits"
    r = runner.invoke(app, ["inversion", "synth", str(atmos_dir / "penumjti11.mod"), "-o", str(out), "--mu", "0.9"])
    assert r.exit_code == 0, r.output
    with fits.open(out) as hdul:
        assert hdul[0].data.shape == (4, 112) and hdul[0].header["MU"] == 0.9
    r = runner.invoke(app, ["inversion", "synth", "umbra", "-o", str(tmp_path / "u.txt"), "--format", "txt",
                            "--instrument", "none"])
    assert r.exit_code == 0, r.output
    bad = tmp_path / "bad.mod"
    bad.write_text("1 1 0\n1.0 5000 oops\n")
    r = runner.invoke(app, ["inversion", "synth", str(bad), "-o", str(tmp_path / "b.fits")])
    assert r.exit_code == 2 and "bad.mod" in r.output
    assert not (tmp_path / "b.fits").exists()
    r = runner.invoke(app, ["inversion", "synth", "no_such_model", "-o", str(tmp_path / "n.fits")])
    assert r.exit_code == 2 and "no_such_model" in r.output


def test_read_errors_name_the_file(tmp_path):
    bad = tmp_path / "short.mod"
    bad.write_text("1 1 0\n")
    with pytest.raises(SIRReadError, match="short.mod"):
        synthesize_model(bad)


def test_cli_make_trainset_tiny_and_resume(tmp_path, data_dir, one_torch_thread):
    out = tmp_path / "ts"
    args = ["inversion", "make-trainset", "-o", str(out), "-p", "tiny", "--patches", "2", "--size", "8"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    import json

    man = json.loads((out / "manifest.json").read_text())
    assert man["complete"] and man["counts"]["patches"] == 2 and man["patch_size"] == 8
    assert man["targets"]["shape"] == [49, 8, 8] and len(man["targets"]["names"]) == 49
    assert (out / "target_ranges.csv").is_file()
    mtimes = {p.name: p.stat().st_mtime for p in out.iterdir() if p.name.startswith("shard")}
    r = runner.invoke(app, args)  # resume: nothing to do, shards untouched
    assert r.exit_code == 0, r.output
    assert {p.name: p.stat().st_mtime for p in out.iterdir() if p.name.startswith("shard")} == mtimes
    r = runner.invoke(app, ["inversion", "make-trainset", "-o", str(out), "-p", "tiny", "--patches", "3", "--size", "8"])
    assert r.exit_code == 2 and "other settings" in r.output
