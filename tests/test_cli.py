"""CLI: help for every step, params on real and bad files, the JSOC query of `fetch sharp`."""

import json

import pytest
from typer.testing import CliRunner

from helioforge.cli import app

runner = CliRunner()


@pytest.mark.parametrize("cmd", [[], ["params"], ["fetch", "sharp"], ["train", "gan"], ["train", "simsiam"],
                                 ["directions", "fit"], ["generate"], ["index", "build"], ["search"], ["interrogate"]])
def test_help(cmd):
    r = runner.invoke(app, [*cmd, "--help"])
    assert r.exit_code == 0 and "Usage" in r.output


def test_params_json_paper_and_physical(sharp_dir):
    f = str(sharp_dir / "hmi.sharp_cea_720s.1447.20120307_082400_TAI.Br.fits")
    r = runner.invoke(app, ["params", f, "--format", "json"])
    assert r.exit_code == 0, r.output
    (rec,) = json.loads(r.stdout)
    assert {"file", "TUF", "TPF", "TNF", "PSEP", "R", "tilt"} <= set(rec)
    r = runner.invoke(app, ["params", f, "--format", "json", "--units", "physical"])
    (phys,) = json.loads(r.stdout)
    assert 1e21 < phys["TUF"] < 1e23  # Mx, an active region (header USFLUX 1.2e22)
    assert 1 < phys["PSEP"] < 200  # Mm


def test_params_skips_bad_files_and_goes_on(data_dir):
    good = str(data_dir / "sharp" / "hmi.sharp_cea_720s.1447.20120307_082400_TAI.Br.fits")
    bad = sorted(str(p) for p in (data_dir / "sharp_bad").glob("*.fits"))
    r = runner.invoke(app, ["params", *bad, good, "--format", "json"])
    assert r.exit_code == 0
    assert len(json.loads(r.stdout)) == 1
    for b in bad:
        assert b.split("/")[-1][:30] in r.stderr.replace("\n", "")
    assert "truncated" in r.stderr and "empty" in r.stderr


def test_params_all_bad_fails(data_dir):
    bad = sorted(str(p) for p in (data_dir / "sharp_bad").glob("*.fits"))
    r = runner.invoke(app, ["params", *bad])
    assert r.exit_code == 1


def test_fetch_sharp_dry_run_prints_the_query():
    r = runner.invoke(app, ["fetch", "sharp", "--email", "a@b.org", "--harp", "377", "--start", "2011-02-15T00:00",
                            "--end", "2011-02-16T00:00", "--segment", "Br", "--segment", "bitmap", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "hmi.sharp_cea_720s[377][2011.02.15_00:00:00_TAI-2011.02.16_00:00:00_TAI@12m]{Br,bitmap}" in r.stdout


def test_fetch_sharp_bad_arguments():
    r = runner.invoke(app, ["fetch", "sharp", "--email", "a@b.org", "--start", "2011-02-16", "--end", "2011-02-15", "--harp", "1"])
    assert r.exit_code == 2 and "error" in r.stderr
