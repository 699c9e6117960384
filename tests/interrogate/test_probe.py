"""The probe suite of the reliability issue: the command line on a table of bad inputs, bad
arguments, corrupted artefacts and misused work folders. For every case: the exit code, a
message naming the file or the argument, no traceback, and nothing left behind or changed
(inputs and work folders are hashed before and after).

The work folder is a `tiny` interrogator run on the embedded sample (so the suite runs on a
fresh clone); each case gets its own copy of it. The inversion and diffusion systems have
their own reliability tests (``test_reliability_inversion.py``, ``test_reliability_diffusion.py``);
the cases here cover their argument checks and inputs that need no trained model.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from helioforge.cli import app
from helioforge.config import SAMPLE_DIR

SHARP = SAMPLE_DIR / "sharp"
BR = sorted(SHARP.glob("*.Br.fits"))[0]  # a real SHARP Br frame of the embedded sample
BAD = SAMPLE_DIR / "sharp_bad"
ATMOS = SAMPLE_DIR / "stokes" / "atmospheres"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny interrogator folder (corpus, GAN, directions, SimSiam, index)."""
    work = tmp_path_factory.mktemp("probe") / "w"
    r = CliRunner().invoke(app, ["interrogate", "-p", "tiny", "-w", str(work), "--accelerator", "cpu",
                                 "--sharp-dir", str(SHARP)])
    assert r.exit_code == 0, r.output
    return work


def _snapshot(*roots: Path) -> dict[str, str]:
    snap = {}
    for root in roots:
        if root.is_file():
            snap[str(root)] = hashlib.sha256(root.read_bytes()).hexdigest()
        elif root.is_dir():
            for p in sorted(root.rglob("*")):
                if p.is_file() and not p.name.startswith(".helioforge.lock"):
                    snap[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return snap


def _fits(path: Path, data: np.ndarray, **cards) -> Path:
    hdr = fits.Header()
    hdr.update({"T_REC": "2012.03.06_14:24:00_TAI", "HARPNUM": 1, "CDELT1": 0.03, **cards})
    fits.PrimaryHDU(data, header=hdr).writeto(path)
    return path


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garble(path: Path) -> None:
    path.write_bytes(b"\x00garbage\xff" * 50)


@dataclass
class Case:
    """One probe: ``setup(tmp, work) -> argv`` prepares files and returns the command line;
    ``rc`` the exit code; ``match`` a regex the output must contain; ``frozen`` the paths that
    must be unchanged afterwards (``"work"``: the work folder copy; ``"inputs"``: tmp/in)."""

    id: str
    setup: Callable[[Path, Path], list[str]]
    rc: int
    match: str
    needs_work: bool = False
    frozen: tuple[str, ...] = ("inputs",)
    no_new: tuple[str, ...] = ()  # paths (relative to tmp) that must not exist afterwards


def w(tmp, work):
    return str(work)


def _case_list() -> list[Case]:
    C = Case
    cases: list[Case] = []
    # ---- 9: argument checks -------------------------------------------------------------
    for k in ("0", "-1"):
        cases.append(C(f"search-k{k}", lambda t, wk, k=k: ["search", "--seed", "0", "-w", w(t, wk), "-k", k], 2, r"-k", True, ("work",)))
    for n in ("0", "-1"):
        cases.append(C(f"generate-n{n}", lambda t, wk, n=n: ["generate", "-w", w(t, wk), "-n", n, "-o", str(t / "g.fits")], 2, r"-n",
                       True, ("work",), ("g.fits",)))
    for q in ("0", "-1"):
        cases.append(C(f"interrogate-q{q}", lambda t, wk, q=q: ["interrogate", "-w", str(t / "new"), "-q", q], 2, r"--queries|-q",
                       no_new=("new",)))
    for size in ("0", "-5", "100000"):
        cases.append(C(f"params-size{size}", lambda t, wk, s=size: ["params", str(BR), "--size", s], 2, r"--size"))
    for thr in ("-10", "nan", "inf"):
        cases.append(C(f"params-threshold{thr}", lambda t, wk, v=thr: ["params", str(BR), "--threshold", v], 2, r"--threshold"))
    for model, e in (("gan", "0"), ("simsiam", "-3")):
        cases.append(C(f"train-{model}-epochs{e}", lambda t, wk, m=model, e=e: ["train", m, "-w", str(t / "new"), "--epochs", e], 2,
                       r"--epochs", no_new=("new",)))
    cases.append(C("directions-m0", lambda t, wk: ["directions", "fit", "-w", w(t, wk), "-m", "0"], 2, r"--samples|-m", True, ("work",)))
    for mv, rx in (("tuf=nan", r"finite"), ("tuf=inf", r"finite"), ("tuf", r"NAME=EPS"), ("bogus=1", r"bogus"),
                   ("tuf=abc", r"not a number")):
        cases.append(C(f"generate-move-{mv}", lambda t, wk, mv=mv: ["generate", "-w", w(t, wk), "--move", mv, "-o", str(t / "g.fits")],
                       2, rx, True, ("work",), ("g.fits", "g.png")))
    for p in ("0", "-2"):
        cases.append(C(f"make-trainset-patches{p}", lambda t, wk, p=p: ["inversion", "make-trainset", "-o", str(t / "ts"), "-p", "tiny",
                                                                         "--patches", p], 2, r"--patches", no_new=("ts",)))
    cases.append(C("diffusion-train-epochs-1", lambda t, wk: ["diffusion", "train", "-w", str(t / "d"), "--epochs", "-1"], 2, r"--epochs",
                   no_new=("d",)))
    cases.append(C("diffusion-sample-n0", lambda t, wk: ["diffusion", "sample", "-w", str(t / "d"), "-n", "0", "-o", str(t / "s")], 2,
                   r"-n", no_new=("d", "s.fits")))
    for v in ("nan", "-1"):
        cases.append(C(f"diffusion-sample-cfg{v}", lambda t, wk, v=v: ["diffusion", "sample", "-w", str(t / "d"), "--cfg-scale", v, "-o",
                                                                        str(t / "s")], 2, r"cfg-scale", no_new=("d", "s.fits")))
    # ---- 8: corrupted artefacts ---------------------------------------------------------
    gen = "gan/generator.safetensors"
    for rel, how, cmd in ((gen, _truncate, "generate"), (gen, _garble, "generate"), ("gan/generator.json", _garble, "generate"),
                          ("simsiam/simsiam.safetensors", _truncate, "search"), ("index/index.faiss", _garble, "search"),
                          ("index/lookup.ecsv", _garble, "search"), ("corpus.fits", _truncate, "search"),
                          ("directions.json", _garble, "generate-move"), ("profile.json", _garble, "generate"),
                          ("state.json", _garble, "generate"), ("corpus_report.json", _truncate, "search")):
        def setup(t, wk, rel=rel, how=how, cmd=cmd):
            how(wk / rel)
            if cmd == "search":
                return ["search", str(BR), "-w", str(wk)]
            extra = ["--move", "tuf=1"] if cmd == "generate-move" else []
            return ["generate", "-w", str(wk), *extra, "-o", str(t / "g.fits")]
        cases.append(C(f"corrupt-{how.__name__[1:]}-{Path(rel).name}", setup, 2, re_escape_name(rel), True, ("work",), ("g.fits",)))

    def half_trained(t, wk):
        import json

        state = json.loads((wk / "state.json").read_text())
        state.pop("gan")
        (wk / "state.json").write_text(json.dumps(state))  # as after a kill during GAN training
        return ["generate", "-w", str(wk), "-o", str(t / "g.fits")]
    cases.append(C("half-trained-generator", half_trained, 2, r"unfinished.*helioforge train gan", True, ("work",), ("g.fits",)))

    def other_corpus(t, wk):
        import json

        state = json.loads((wk / "state.json").read_text())
        state.pop("corpus")  # an interrupted profile switch: the corpus is being rebuilt
        (wk / "state.json").write_text(json.dumps(state))
        return ["search", str(BR), "-w", str(wk)]
    cases.append(C("interrupted-profile-switch", other_corpus, 2, r"(unfinished|stale).*run `helioforge", True, ("work",)))

    def nan_weights(t, wk):
        import torch
        from safetensors.torch import load_file, save_file

        path = wk / gen
        state = load_file(str(path))
        key = next(k for k, v in state.items() if v.is_floating_point())
        state[key] = torch.full_like(state[key], float("nan"))
        save_file(state, str(path))
        return ["generate", "-w", str(wk), "-o", str(t / "g.fits")]
    cases.append(C("nan-weights", nan_weights, 2, r"generator.safetensors", True, ("work",), ("g.fits",)))

    def bad_ckpt(t, wk):
        ck = wk / "gan" / "checkpoints" / "last.safetensors"
        ck.parent.mkdir(parents=True, exist_ok=True)
        _garble(ck)
        return ["train", "gan", "-w", str(wk), "--epochs", "8", "--accelerator", "cpu"]
    cases.append(C("corrupt-checkpoint", bad_ckpt, 2, r"last.safetensors", True, ()))
    # ---- 10, 12: bad input files ----------------------------------------------------------
    def inp(t):
        d = t / "in"
        d.mkdir(exist_ok=True)
        return d

    def sharp_like(name, data, **cards):
        return lambda t, wk: ["params", str(_fits(inp(t) / name, data, **cards))]
    cases += [
        C("params-all-nan", sharp_like("nan.Br.fits", np.full((64, 64), np.nan)), 1, r"nan.Br.fits.*finite"),
        C("params-all-zero", sharp_like("zero.Br.fits", np.zeros((64, 64))), 1, r"zero.Br.fits.*zero"),
        C("params-1e30", sharp_like("huge.Br.fits", np.full((64, 64), 1e30)), 1, r"huge.Br.fits.*G"),
        C("params-1x1", sharp_like("one.Br.fits", np.ones((1, 1))), 1, r"one.Br.fits.*too small"),
        C("params-bunit-furlong", sharp_like("u.Br.fits", np.ones((64, 64)), BUNIT="furlong"), 1, r"u.Br.fits.*BUNIT"),
        C("params-bunit-tesla", sharp_like("t.Br.fits", np.full((64, 64), 0.1), BUNIT="T"), 0, r"converted to gauss"),
        C("params-missing", lambda t, wk: ["params", str(t / "nope.Br.fits")], 1, r"nope.Br.fits.*no such file"),
        C("params-directory", lambda t, wk: ["params", str(inp(t))], 1, r"in.*directory"),
        C("params-empty", lambda t, wk: ["params", str(BAD / "hmi.sharp_cea_720s.1446.20120306_142400_TAI.Br.fits")], 1, r"1446.*empty"),
        C("params-truncated", lambda t, wk: ["params", str(BAD / "hmi.sharp_cea_720s.1447.20120307_022400_TAI.Br.fits")], 1,
          r"1447.*truncated"),
        C("search-all-nan", lambda t, wk: ["search", str(_fits(inp(t) / "nan.Br.fits", np.full((64, 64), np.nan))), "-w", str(wk)], 2,
          r"nan.Br.fits", True, ("work", "inputs")),
        C("search-directory", lambda t, wk: ["search", str(inp(t)), "-w", str(wk)], 2, r"directory", True, ("work",)),
    ]

    def loop(t, wk):
        d = inp(t)
        os.symlink(d / "b.fits", d / "a.fits")
        os.symlink(d / "a.fits", d / "b.fits")
        return ["params", str(d / "a.fits")]
    cases.append(C("params-symlink-loop", loop, 1, r"a.fits.*symbolic-link loop"))

    def gen_over_sharp(t, wk):
        target = inp(t) / BR.name
        shutil.copyfile(BR, target)
        return ["generate", "-w", str(wk), "-o", str(target)]
    cases.append(C("generate-over-real-sharp", gen_over_sharp, 2, r"not written by helioforge", True, ("work", "inputs")))

    def synth_over_model(t, wk):
        m = inp(t) / "hsra11.mod"
        shutil.copyfile(ATMOS / "hsra11.mod", m)
        return ["inversion", "synth", str(m), "-o", str(m), "--format", "txt"]
    cases.append(C("synth-over-input", synth_over_model, 2, r"hsra11.mod.*overwrite"))

    def synth_hot(t, wk):
        lines = (ATMOS / "hsra11.mod").read_text().splitlines()
        cols = lines[1].split()
        cols[1] = "1e30"
        lines[1] = "  ".join(cols)
        m = inp(t) / "hot.mod"
        m.write_text("\n".join(lines) + "\n")
        return ["inversion", "synth", str(m), "-o", str(t / "out.fits")]
    cases.append(C("synth-T-1e30", synth_hot, 2, r"hot.mod", no_new=("out.fits",)))

    def synth_non_ascii(t, wk):
        m = inp(t) / "modèle_é.mod"
        shutil.copyfile(ATMOS / "hsra11.mod", m)
        return ["inversion", "synth", str(m), "-o", str(t / "sortie_é.fits")]
    cases.append(C("synth-non-ascii-name", synth_non_ascii, 0, r"sortie"))

    def invert_over_map(t, wk):
        m = inp(t) / "map.fits"
        shutil.copyfile(SAMPLE_DIR / "stokes" / "hinode_sp_sample" / "hinode4d.20130912.sample.fits", m)
        return ["invert", str(m), "-o", str(m), "-w", str(t / "inv")]
    cases.append(C("invert-over-input", invert_over_map, 2, r"map.fits", no_new=("inv",)))
    # ---- 2, 11, 12: work folders ----------------------------------------------------------------
    for cmd in (["generate"], ["search", "--seed", "1"], ["directions", "fit"], ["index", "build"]):
        cases.append(C(f"missing-folder-{cmd[0]}", lambda t, wk, cmd=cmd: [*cmd, "-w", str(t / "none")], 2, r"none", no_new=("none",)))
    return cases


def re_escape_name(rel: str) -> str:
    import re

    return re.escape(Path(rel).name)


CASES = _case_list()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_probe(case: Case, tmp_path, request):
    work = tmp_path / "w"
    if case.needs_work:
        shutil.copytree(request.getfixturevalue("trained"), work)
    argv = case.setup(tmp_path, work)
    inputs = tmp_path / "in"
    before = {k: _snapshot(work if k == "work" else inputs) for k in case.frozen}
    before_sample = _snapshot(SAMPLE_DIR / "sharp", ATMOS)
    r = CliRunner().invoke(app, argv)
    text = r.output
    assert "Traceback" not in text, text
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == case.rc, f"rc {r.exit_code}: {text}"
    import re

    assert re.search(case.match, text, re.S), text
    for k, snap in before.items():
        assert _snapshot(work if k == "work" else inputs) == snap, f"{k} changed"
    for rel in case.no_new:
        assert not (tmp_path / rel).exists(), f"{rel} left behind"
    assert _snapshot(SAMPLE_DIR / "sharp", ATMOS) == before_sample


def _holder(folder: Path) -> subprocess.Popen:
    code = ("import sys, time; from helioforge.locking import workdir_lock\n"
            "with workdir_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


@pytest.mark.parametrize("argv", [["interrogate", "-p", "tiny"], ["train", "gan", "-p", "tiny"], ["directions", "fit"],
                                  ["index", "build"], ["diffusion", "train"], ["inversion", "make-trainset", "-p", "tiny"]],
                         ids=["interrogate", "train-gan", "directions-fit", "index-build", "diffusion-train", "make-trainset"])
def test_folder_in_use(argv, trained, tmp_path):
    """Two processes never build in one folder: the second is told who holds it."""
    work = tmp_path / "w"
    if argv[0] in ("interrogate", "train", "directions", "index"):
        shutil.copytree(trained, work)
    else:
        work.mkdir()  # a folder of the other systems, in use from its start
    holder = _holder(work)
    try:
        before = _snapshot(work)
        flag = "-o" if argv[0] == "inversion" else "-w"
        r = CliRunner().invoke(app, [*argv, flag, str(work)])
        assert r.exit_code == 2, r.output
        assert f"in use by PID {holder.pid}" in r.output and "Traceback" not in r.output
        assert _snapshot(work) == before
    finally:
        holder.kill()
        holder.wait()


def _default_sigint() -> None:
    """In the child: Ctrl-C handled as on a terminal even when the test runner ignores SIGINT (a
    background job of a non-interactive shell inherits SIG_IGN, and Python then never installs its
    KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_exits_130_with_a_message(tmp_path):
    """Ctrl-C used to exit 1 with no message.

    The signal is sent as soon as the corpus step starts (its log line), while it reads the SHARP
    files. It used to be sent when ``corpus.fits`` appeared, which raced with the rest of the tiny
    run; and under a runner that ignores SIGINT the child ignored it too."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "helioforge.cli", "interrogate", "-p", "tiny", "-w", str(tmp_path / "w"),
                          "--sharp-dir", str(SHARP), "--accelerator", "cpu"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         text=True, env=env, preexec_fn=_default_sigint)
    seen = []
    for line in p.stderr:
        seen.append(line)
        if "step: corpus" in line:
            break
    p.send_signal(signal.SIGINT)
    err = "".join(seen) + p.stderr.read()
    p.wait(timeout=120)
    assert p.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err


def test_probe_table_is_large_enough():
    assert len(CASES) >= 60
