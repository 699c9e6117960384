"""Output that works in logs: no wrapping or cut cells off a terminal, progress lines in a log,
the OpenMP wait policy, and one CLI convention (with the old spellings deprecated)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import typer
from typer.testing import CliRunner

from helioforge.cli import app
from helioforge.cli.common import make_console
from helioforge.config import SAMPLE_DIR
from helioforge.progress import LogBar, track


def test_console_off_a_terminal_neither_wraps_nor_cuts(capsys):
    c = make_console(stderr=False)
    assert not c.is_terminal
    long_name = "hmi.sharp_cea_720s.1446.20120306_142400_TAI.Br.fits " * 4
    c.print(f"skipped {long_name}")
    from rich.table import Table

    t = Table()
    t.add_column("file")
    t.add_column("TUF")
    t.add_row(long_name.strip(), "6.842123e+21")
    c.print(t)
    text = capsys.readouterr().out
    assert f"skipped {long_name}".rstrip() in text.replace("\n", "\n")
    assert long_name.strip() in text and "6.842123e+21" in text


def test_params_table_piped_keeps_names_and_numbers():
    files = sorted((SAMPLE_DIR / "sharp").glob("*.Br.fits"))[:2]
    r = CliRunner().invoke(app, ["params", *map(str, files), "--units", "physical"])
    assert r.exit_code == 0, r.output
    for f in files:
        assert any(f.name in line for line in r.stdout.splitlines())
    assert "…" not in r.stdout


def test_logbar_writes_a_line_every_tenth(caplog):
    with caplog.at_level(logging.INFO, logger="helioforge.progress"):
        list(track(range(50), "step", unit="item"))
    lines = [r.getMessage() for r in caplog.records if r.name == "helioforge.progress"]
    assert len(lines) == 10 and lines[-1].startswith("step: 50/50 item (100 %)")
    assert all("elapsed" in line and "ETA" in line for line in lines)


def test_logbar_postfix_and_time(caplog, monkeypatch):
    import helioforge.progress as progress

    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    with caplog.at_level(logging.INFO, logger="helioforge.progress"):
        bar = LogBar(1000, "GAN", "epoch")
        bar.set_postfix(loss=0.123456)
        bar.update(1)  # 0.1 %: no line yet
        now[0] = 31.0
        bar.update(1)  # 30 s passed: a line
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["GAN: 2/1000 epoch (0 %), elapsed 0:31, ETA 4:17:49, loss=0.1235"]


def test_import_sets_passive_openmp_wait_unless_set():
    code = "import helioforge, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"


def _defaults(command_path: list[str]) -> dict[str, object]:
    cmd = typer.main.get_command(app)
    for name in command_path:
        cmd = cmd.commands[name]
    return {p.name: p.default for p in cmd.params}


def test_one_workdir_default_for_the_interrogator():
    paths = [["interrogate"], ["generate"], ["search"], ["index", "build"], ["directions", "fit"], ["train", "gan"],
             ["train", "simsiam"]]
    defaults = {str(_defaults(p)["workdir"]) for p in paths}
    assert defaults == {"runs/demo"}


def test_option_spellings():
    cmd = typer.main.get_command(app)
    for path, name, opts in ((["inversion", "validate"], "report", {"--report", "-r"}),
                             (["interrogate"], "report", {"--report", "-r"}),
                             (["fetch", "sharp"], "out_dir", {"--output", "-o"}),
                             (["data", "fetch"], "output", {"--output", "-o"})):
        c = cmd
        for n in path:
            c = c.commands[n]
        assert set(next(p for p in c.params if p.name == name).opts) == opts, path


def test_old_spellings_still_work_with_a_warning(tmp_path):
    r = CliRunner().invoke(app, ["fetch", "sharp", "--email", "a@b.c", "--start", "2011-02-15T00:00", "--end",
                                 "2011-02-15T01:00", "--harp", "377", "--out", str(tmp_path), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "deprecated: --out is now --output/-o" in r.stderr
    r = CliRunner().invoke(app, ["inversion", "validate", "-w", str(tmp_path / "none"), "-o", str(tmp_path / "rep"),
                                 "--valset", str(tmp_path / "none")])
    assert "deprecated: -o" in r.stderr and "-r/--report" in r.stderr
