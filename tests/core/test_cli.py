"""CLI: help for every step, what `data path` and `data fetch --list` print, one `error:` line
and exit status 2 for a bad option value, params on real and bad files, the JSOC query of
`fetch sharp`."""

import json

import pytest
from typer.testing import CliRunner

from helioforge.cli import app
from helioforge.config import set_data_root
from helioforge.data.fetch import read_registry, select_entries

runner = CliRunner()


@pytest.fixture
def data_override_undone():
    """``--data`` sets the data folder of the whole process: undo it after the test."""
    yield
    set_data_root(None)


def _one_error_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


@pytest.mark.parametrize("cmd", [[], ["params"], ["fetch", "sharp"], ["train", "gan"], ["train", "simsiam"],
                                 ["directions", "fit"], ["generate"], ["index", "build"], ["search"], ["interrogate"],
                                 ["data"], ["data", "path"], ["data", "fetch"]])
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


def test_data_path_prints_the_folder_the_rule_picks(tmp_path, monkeypatch, data_override_undone):
    monkeypatch.setenv("HELIOFORGE_DATA", str(tmp_path))
    r = runner.invoke(app, ["data", "path"])
    assert r.exit_code == 0, r.output
    assert r.stdout == f"{tmp_path.resolve()}\n"  # stdout: the path alone, for $(helioforge data path)
    assert r.stderr.strip() == f"data: {tmp_path.resolve()} (from $HELIOFORGE_DATA)"
    given = tmp_path / "given"
    given.mkdir()
    r = runner.invoke(app, ["--data", str(given), "data", "path"])  # --data wins over the variable
    assert r.exit_code == 0, r.output
    assert r.stdout == f"{given.resolve()}\n"
    assert r.stderr.strip() == f"data: {given.resolve()} (given with --data)"


def test_bad_data_option_exits_2_with_one_error_line_naming_it(tmp_path, data_override_undone):
    missing = tmp_path / "nowhere"
    r = runner.invoke(app, ["--data", str(missing), "data", "path"])
    line = _one_error_line(r)
    assert line == f"error: {missing}: data folder not found (given with --data)"
    assert r.stdout == ""


def test_data_fetch_list_prints_the_registry_entries_of_a_part():
    r = runner.invoke(app, ["data", "fetch", "stokes/instrument", "--list"])
    assert r.exit_code == 0, r.output
    entries = select_entries(read_registry(), ["stokes/instrument"])
    assert entries and r.stdout.splitlines() == [f"{e.path}\t{e.size}\t{e.url or '(no public URL)'}\t{e.source}"
                                                 for e in entries]
    assert r.stderr.strip() == f"{len(entries)} file(s), {sum(e.size for e in entries) / 2**20:.1f} MiB"


def test_data_fetch_unknown_part_exits_2_naming_it():
    line = _one_error_line(runner.invoke(app, ["data", "fetch", "nosuchpart", "--list"]))
    assert "'nosuchpart'" in line and "sharp" in line and "stokes" in line  # names the part and the valid ones


def test_invert_of_a_missing_map_exits_2_naming_it(tmp_path):
    missing = tmp_path / "nosuch.fits"
    line = _one_error_line(runner.invoke(app, ["invert", str(missing), "-o", str(tmp_path / "atmos.fits")]))
    assert str(missing) in line
    assert not (tmp_path / "atmos.fits").exists()
