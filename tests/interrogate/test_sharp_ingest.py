"""Bulk SHARP ingest from JSOC (``fetch_sharp_archive``, ``fetch sharp --all-harps``), offline.

A real ``drms.Client`` talks to a replay of recorded JSOC answers (``tests/fixtures/recorded_jsoc/``, see its
README): its HTTP/JSON layer (``HttpJsonClient._json_request``) is replaced by :class:`Replay`,
which answers each CGI request from the recorded JSON files, and its download base URL is a
``file://`` mirror of JSOC's download area holding the exported FITS files. Faults (HTTP errors,
HTML error pages, JSOC error statuses, truncated or missing files, an interruption) are
injected on top of the recording.
"""

from __future__ import annotations

import email.message
import json
import logging
import shutil
import time
import urllib.request
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import parse_qs, urlparse

import drms
import drms.client
import pytest
from typer.testing import CliRunner

from helioforge.cli import app
from helioforge.data.jsoc import (
    MANIFEST_NAME,
    IngestManifest,
    fetch_sharp_archive,
    parse_sharp_record,
    plan_sharp_archive,
    sharp_filename,
)
from helioforge.data.sharp import read_sharp
from helioforge.errors import ProductError
from helioforge.interrogate.data import CorpusStore, fetch_sharp_corpus

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "recorded_jsoc"
SERIES = "hmi.sharp_cea_720s"
#: The recorded ingest: every HARP, 2012-03-06T00:00 to 2012-03-07T12:00 TAI, 12 h, Br + bitmap.
RANGE = dict(start="2012-03-06T00:00:00", end="2012-03-07T12:00:00", cadence="12h", segments=("Br", "bitmap"))
CHUNK1, CHUNK2 = "2012.03.06_00:00:00_TAI/1d@12h", "2012.03.07_00:00:00_TAI/12h@12h"
RECORDS = [(h, f"2012.03.06_{t}_TAI") for t in ("00:00:00", "12:00:00") for h in (1445, 1449)] + \
          [(h, "2012.03.07_00:00:00_TAI") for h in (1445, 1449)]
FILES = sorted(sharp_filename(h, t, s) for h, t in RECORDS for s in ("Br", "bitmap"))
EMAIL = "someone@example.org"
RealClient = drms.Client  # the CLI test replaces drms.Client by a factory of replaying clients


class Replay:
    """Stands in for ``drms.HttpJsonClient._json_request``: the answer to each JSOC CGI request
    is the next recorded file of its route (the last one repeats: a pending then finished
    export status). ``faults[key]`` is served first: ``"http:503"`` raises the HTTP error
    urllib would, a path serves that recorded file, a dict serves that JSON."""

    def __init__(self) -> None:
        self.routes: dict[str, list] = json.loads((RECORDED / "routes.json").read_text())
        self.faults: dict[str, list] = {}
        self.served: dict[str, int] = {}
        self.calls: list[str] = []

    @staticmethod
    def key(url: str) -> str:
        u = urlparse(url)
        cgi, q = u.path.rsplit("/", 1)[-1], {k: v[0] for k, v in parse_qs(u.query).items()}
        if cgi == "checkAddress.sh":
            return cgi
        what = q.get("requestid") if q.get("op") == "exp_status" else q.get("ds")
        return f"{cgi} {q.get('op')} {what}"

    def __call__(self, url: str) -> "_Answer":
        key = self.key(url)
        self.calls.append(key)
        if self.faults.get(key):
            answer = self.faults[key].pop(0)
        else:
            if key not in self.routes:
                raise AssertionError(f"unrecorded JSOC request: {key}")
            seq = self.routes[key]
            answer = seq[min(self.served.get(key, 0), len(seq) - 1)]
            self.served[key] = self.served.get(key, 0) + 1
        if isinstance(answer, str) and answer.startswith("http:"):
            code = int(answer[5:])
            raise HTTPError(url, code, {502: "Bad Gateway", 503: "Service Unavailable"}.get(code, "Error"),
                            email.message.Message(), None)
        body = json.dumps(answer).encode() if isinstance(answer, dict) else (RECORDED / answer).read_bytes()
        return _Answer(url, body)


class _Answer:
    """What drms reads of an ``HttpJsonRequest``: ``url``, ``raw_data`` and ``data``."""

    def __init__(self, url: str, body: bytes) -> None:
        self.url, self.raw_data = url, body

    @property
    def data(self):
        return json.loads(self.raw_data.decode("latin1"))


def replay_client(replay: Replay, mirror: Path, email: str = EMAIL) -> RealClient:
    """A real drms.Client whose JSON transport is ``replay`` and whose downloads come from ``mirror``."""
    server = drms.ServerConfig(
        name="JSOC-replay", cgi_baseurl="http://jsoc.stanford.edu/cgi-bin/ajax/", cgi_show_series="show_series",
        cgi_jsoc_info="jsoc_info", cgi_jsoc_fetch="jsoc_fetch", cgi_check_address="checkAddress.sh",
        cgi_show_series_wrapper="showextseries", show_series_wrapper_dbhost="hmidb2",
        http_download_baseurl=mirror.resolve().as_uri() + "/")
    client = RealClient(server=server)
    client._json._json_request = replay  # the transport: recorded answers instead of the network
    client.email = email  # checkAddress.sh, replayed
    return client


@pytest.fixture
def mirror(tmp_path) -> Path:
    """A copy of the recorded download area (tests may damage it)."""
    dst = tmp_path / "mirror"
    shutil.copytree(RECORDED / "mirror", dst)
    return dst


@pytest.fixture
def downloads(monkeypatch) -> list[str]:
    """URLs drms opens to download files (its ``urlopen``), in order."""
    seen: list[str] = []
    real = urllib.request.urlopen

    def counting(req, *a, **k):
        seen.append(req.full_url if hasattr(req, "full_url") else str(req))
        return real(req, *a, **k)

    monkeypatch.setattr(drms.client, "urlopen", counting)
    return seen


def _mirror_file(mirror: Path, name: str) -> Path:
    return next(mirror.rglob(name))


def _run(out, replay, mirror, sleeps=None, **kw):
    args = {**RANGE, "delay_s": 1.0, "poll_s": 0.0, "backoff_s": 1.0, "retries": 2, "progress": True, **kw}
    return fetch_sharp_archive(out, EMAIL, client=replay_client(replay, mirror),
                               sleep=(sleeps.append if sleeps is not None else lambda s: None), **args)


# ----------------------------------------------------------------------------- planning
def test_plan_cuts_the_range_on_the_cadence_grid():
    chunks = plan_sharp_archive("2012-03-06", "2012-03-07T12:00", cadence="12h", chunk="1d")
    assert [c.key for c in chunks] == [CHUNK1, CHUNK2]  # the last chunk is shorter
    assert chunks[0].query() == f"{SERIES}[][{CHUNK1}]"
    assert chunks[0].query([1449, 1445], ["Br", "bitmap"]) == f"{SERIES}[1445,1449][{CHUNK1}]{{Br,bitmap}}"
    assert len(plan_sharp_archive("2012-01-01", "2013-01-01", cadence="96m", chunk="1d")) == 366
    with pytest.raises(ValueError, match="whole number of cadence steps"):
        plan_sharp_archive("2012-03-06", "2012-03-08", cadence="7m", chunk="1d")
    with pytest.raises(ValueError, match="after start"):
        plan_sharp_archive("2012-03-06", "2012-03-06", cadence="12m")
    with pytest.raises(ValueError, match="cadence"):
        plan_sharp_archive("2012-03-06", "2012-03-07", cadence="12 min")
    with pytest.raises(ValueError, match="unknown SHARP segment"):
        chunks[0].query(None, ["Bz"])


def test_record_strings_and_file_names():
    assert parse_sharp_record(f"{SERIES}[1449][2012.03.06_12:00:00_TAI]") == (1449, "2012.03.06_12:00:00_TAI")
    assert parse_sharp_record("hmi.sharp_720s[4864][2014.11.30_00:00_TAI]{Br}") == (4864, "2014.11.30_00:00:00_TAI")
    with pytest.raises(ValueError, match="not of the form"):
        parse_sharp_record("hmi.sharp_cea_720s[2012.03.06]")
    assert sharp_filename(377, "2011.02.15_00:00:00_TAI", "Br") == "hmi.sharp_cea_720s.377.20110215_000000_TAI.Br.fits"


# ----------------------------------------------------------------------------- the whole range
def test_whole_range_of_all_harps(tmp_path, mirror, downloads, caplog):
    out, replay, sleeps, got = tmp_path / "sharp", Replay(), [], []
    with caplog.at_level(logging.INFO, logger="helioforge.progress"):
        rep = _run(out, replay, mirror, sleeps, on_file=got.append)
    assert rep.complete and rep.chunks == rep.chunks_done == 2 and rep.records == 6
    assert rep.files_downloaded == 12 and rep.requests == ["JSOC_20251106_000101", "JSOC_20251106_000102"]
    # every HARP: listed and exported with an empty HARP filter, one chunk at a time
    assert [k for k in replay.calls if "rs_list" in k or "exp_request" in k] == [
        f"jsoc_info rs_list {SERIES}[][{CHUNK1}]", f"jsoc_fetch exp_request {SERIES}[][{CHUNK1}]{{Br,bitmap}}",
        f"jsoc_info rs_list {SERIES}[][{CHUNK2}]", f"jsoc_fetch exp_request {SERIES}[][{CHUNK2}]{{Br,bitmap}}"]
    assert sorted(p.name for p in out.glob("*.fits")) == FILES
    for name in FILES:  # byte for byte what JSOC served, under its final name; nothing left half-way
        assert (out / name).read_bytes() == _mirror_file(mirror, name).read_bytes()
    assert not (out / ".partial").exists() and not list(out.rglob("*.part"))
    assert len(downloads) == 12 and all(u.startswith("file://") for u in downloads)
    assert sorted(f.path.name for f in got) == FILES and {f.segment for f in got} == {"Br", "bitmap"}
    assert {(f.harpnum, f.t_rec) for f in got} == set(RECORDS)
    patch = read_sharp(out / sharp_filename(1449, "2012.03.06_12:00:00_TAI", "Br"))
    assert patch.noaa_ar == 11429 and patch.bitmap is not None  # the bitmap companion arrived beside it
    with IngestManifest(out) as man:
        s = man.summary()
        assert s["files"] == 12 and s["harps"] == 2 and s["chunks"] == {"done": 2} and s["problems"] == 0
        assert s["settings"]["segments"] == ["Br", "bitmap"] and s["settings"]["harps"] is None
    assert sleeps == [1.0] * 4  # the polite pause after each query and export; no backoff
    assert any("JSOC SHARP chunks: 2/2 chunk (100 %)" in r.getMessage() for r in caplog.records)

    again = Replay()  # a rerun finds everything done: no JSOC request at all
    rep2 = _run(out, again, mirror)
    assert rep2.complete and rep2.chunks_already_done == 2 and rep2.files_downloaded == 0
    assert again.calls == ["checkAddress.sh"] and len(downloads) == 12


def test_exports_are_split_by_max_records(tmp_path, mirror):
    """At most max_records records per export: chunk 1 (2 HARPs × 2 times) goes out per HARP."""
    replay = Replay()
    for h in (1445, 1449):  # the recorded chunk-1 export, as JSOC answers it for one HARP
        status = json.loads((RECORDED / "jsoc_fetch/exp_status.JSOC_20251106_000101.json").read_text())
        status["requestid"] = rid = f"JSOC_20251106_0002{h % 100:02d}"
        status["data"] = [d for d in status["data"] if f"[{h}]" in d["record"]]
        replay.routes[f"jsoc_fetch exp_request {SERIES}[{h}][{CHUNK1}]{{Br,bitmap}}"] = [{"status": 2, "requestid": rid, "wait": 0}]
        replay.routes[f"jsoc_fetch exp_status {rid}"] = [status]
    rep = _run(tmp_path / "sharp", replay, mirror, max_records=2)
    assert rep.complete and rep.files_downloaded == 12
    assert [k.split(" ", 2)[2] for k in replay.calls if "exp_request" in k] == [
        f"{SERIES}[1445][{CHUNK1}]{{Br,bitmap}}", f"{SERIES}[1449][{CHUNK1}]{{Br,bitmap}}",
        f"{SERIES}[][{CHUNK2}]{{Br,bitmap}}"]


# ----------------------------------------------------------------------------- resume
class Interrupted(Exception):
    pass


def test_resume_after_an_interruption_downloads_only_the_missing_records(tmp_path, mirror, downloads):
    out, seen = tmp_path / "sharp", []

    def stop_at_tenth(f):
        seen.append(f.path.name)
        if len(seen) == 10:  # chunk 2's second file is in place, not yet recorded as done
            raise Interrupted

    with pytest.raises(Interrupted):
        _run(out, Replay(), mirror, on_file=stop_at_tenth)
    with IngestManifest(out) as man:
        assert man.summary()["files"] == 9 and man.chunk_status(CHUNK1) == "done" and man.chunk_status(CHUNK2) is None
        assert man.export_id(f"{SERIES}[][{CHUNK2}]{{Br,bitmap}}")[0] == "JSOC_20251106_000102"
    (out / ".partial").mkdir()  # what a download killed half-way leaves behind
    partial = out / ".partial" / FILES[0]
    partial.with_name(partial.name + ".part").write_bytes(b"SIMPLE  =                    T" + b" " * 100)

    first = len(downloads)
    replay, got = Replay(), []
    rep = _run(out, replay, mirror, on_file=lambda f: got.append(f.path.name))
    assert rep.complete and rep.chunks_already_done == 1 and rep.chunks_done == 1
    assert rep.files_adopted == 1 and rep.files_downloaded == 2 and rep.files_skipped_done == 2
    assert len(downloads) - first == 2  # only the two files never downloaded
    assert len(set(got) | set(seen[:9])) == 12 and seen[9] in got  # the unrecorded one is handed on again
    assert not any(CHUNK1 in k for k in replay.calls)  # the finished chunk is not asked for again
    assert not any("exp_request" in k for k in replay.calls)  # chunk 2's export is reused by its id
    assert "jsoc_fetch exp_status JSOC_20251106_000102" in replay.calls
    assert sorted(p.name for p in out.glob("*.fits")) == FILES and not (out / ".partial").exists()
    for name in FILES:
        assert (out / name).read_bytes() == _mirror_file(mirror, name).read_bytes()


def test_a_broken_file_under_its_final_name_is_downloaded_again(tmp_path, mirror, downloads):
    """A file in the folder that the manifest does not hold is taken only when complete."""
    out = tmp_path / "sharp"
    out.mkdir()
    good = sharp_filename(1445, "2012.03.06_00:00:00_TAI", "Br")
    broken = sharp_filename(1449, "2012.03.06_00:00:00_TAI", "Br")
    shutil.copy(_mirror_file(mirror, good), out / good)
    (out / broken).write_bytes(_mirror_file(mirror, broken).read_bytes()[:7000])
    rep = _run(out, Replay(), mirror)
    assert rep.complete and rep.files_adopted == 1 and rep.files_downloaded == 11 and len(downloads) == 11
    assert (out / broken).read_bytes() == _mirror_file(mirror, broken).read_bytes()


# ----------------------------------------------------------------------------- faults
@pytest.mark.parametrize("fault, shows", [
    ("http:503", "HTTP Error 503: Service Unavailable"),
    ("errors/proxy_502.html", "JSONDecodeError"),
    ("jsoc_info/rs_list.bad_series.json", "series does not exist"),
])
def test_a_failed_request_is_retried_then_reported(tmp_path, mirror, fault, shows, caplog):
    key = f"jsoc_info rs_list {SERIES}[][{CHUNK1}]"
    # fails twice, then answers: the run succeeds after two backoffs
    out, replay, sleeps = tmp_path / "a", Replay(), []
    replay.faults[key] = [fault, fault]
    with caplog.at_level(logging.WARNING, logger="helioforge.data.jsoc"):
        rep = _run(out, replay, mirror, sleeps, retries=2, backoff_s=5.0)
    assert rep.complete and rep.files_downloaded == 12
    assert replay.calls.count(key) == 3 and sleeps[:2] == [5.0, 10.0]  # exponential backoff
    assert sum("retry" in r.getMessage() and shows in r.getMessage() for r in caplog.records) == 2

    # fails every time: chunk 1 is reported, chunk 2 is done all the same
    out, replay = tmp_path / "b", Replay()
    replay.faults[key] = [fault] * 3
    rep = _run(out, replay, mirror, retries=2)
    assert not rep.complete and rep.chunks_done == 1 and rep.files_downloaded == 4
    (failed,) = rep.failed_chunks
    assert failed["chunk"] == CHUNK1
    assert f"keyword query {SERIES}[][{CHUNK1}]: failed after 3 attempt(s)" in failed["error"] and shows in failed["error"]
    with IngestManifest(out) as man:
        assert man.chunk_status(CHUNK1) == "failed" and man.chunk_status(CHUNK2) == "done"
    rep = _run(out, Replay(), mirror)  # JSOC is back: a rerun does what is left
    assert rep.complete and rep.chunks_done == 1 and rep.chunks_already_done == 1 and rep.files_downloaded == 8


def test_an_export_that_fails_on_the_server_is_retried_then_reported(tmp_path, mirror):
    replay = Replay()
    replay.routes["jsoc_fetch exp_status JSOC_20251106_000101"] = ["jsoc_fetch/exp_status.failed.json"]
    rep = _run(tmp_path / "sharp", replay, mirror, retries=1)
    (failed,) = rep.failed_chunks
    assert failed["chunk"] == CHUNK1 and "Export processing failed, check the record set [status=4]" in failed["error"]
    assert replay.calls.count(f"jsoc_fetch exp_request {SERIES}[][{CHUNK1}]{{Br,bitmap}}") == 2
    assert rep.files_downloaded == 4 and not rep.problems  # chunk 2 went on
    with IngestManifest(tmp_path / "sharp") as man:  # a failed request is not reused on resume
        assert man.export_id(f"{SERIES}[][{CHUNK1}]{{Br,bitmap}}") is None


def test_an_empty_result_is_a_finished_chunk(tmp_path, mirror, caplog):
    replay = Replay()
    replay.routes[f"jsoc_info rs_list {SERIES}[][{CHUNK1}]"] = ["jsoc_info/rs_list.empty.json"]
    with caplog.at_level(logging.INFO, logger="helioforge.data.jsoc"):
        rep = _run(tmp_path / "sharp", replay, mirror)
    assert rep.complete and rep.chunks_done == 2 and rep.files_downloaded == 4
    assert not any(CHUNK1 in k and "exp_request" in k for k in replay.calls)
    assert any(f"chunk {CHUNK1}: no SHARP records" in r.getMessage() for r in caplog.records)


def test_truncated_and_missing_files_are_retried_then_reported_by_record(tmp_path, mirror, downloads):
    out = tmp_path / "sharp"
    cut = _mirror_file(mirror, sharp_filename(1449, "2012.03.06_12:00:00_TAI", "Br"))
    whole = cut.read_bytes()
    cut.write_bytes(whole[:6000])  # the server's file ends early
    gone = _mirror_file(mirror, sharp_filename(1445, "2012.03.07_00:00:00_TAI", "bitmap"))
    kept = gone.read_bytes()
    gone.unlink()  # a 404 for this one
    rep = _run(out, Replay(), mirror, retries=1)
    assert not rep.complete and rep.chunks_partial == 2 and rep.files_downloaded == 10 and len(downloads) == 14
    probs = {(p["record"], p["segment"]): p["reason"] for p in rep.problems}
    assert set(probs) == {("[1449][2012.03.06_12:00:00_TAI]", "Br"), ("[1445][2012.03.07_00:00:00_TAI]", "bitmap")}
    trunc = probs[("[1449][2012.03.06_12:00:00_TAI]", "Br")]
    assert f"download of {SERIES}[1449][2012.03.06_12:00:00_TAI] Br: failed after 2 attempt(s)" in trunc
    assert "truncated download: 6000 bytes is not a whole number of 2880-byte FITS blocks" in trunc
    assert "download failed (HTTP or network error" in probs[("[1445][2012.03.07_00:00:00_TAI]", "bitmap")]
    assert not (out / cut.name).exists() and not (out / gone.name).exists()  # never under their final names
    assert not (out / ".partial").exists()
    with IngestManifest(out) as man:
        assert len(man.problems()) == 2 and man.chunk_status(CHUNK1) == "partial"

    cut.write_bytes(whole)  # fixed at the source: a rerun fetches just those two
    gone.write_bytes(kept)
    first = len(downloads)
    rep = _run(out, Replay(), mirror)
    assert rep.complete and rep.files_downloaded == 2 and len(downloads) - first == 2
    with IngestManifest(out) as man:
        assert man.problems() == [] and man.summary()["chunks"] == {"done": 2}


def test_odd_export_rows_are_skipped_by_name(tmp_path, mirror, caplog):
    replay = Replay()
    status = json.loads((RECORDED / "jsoc_fetch/exp_status.JSOC_20251106_000102.json").read_text())
    status["data"][0]["filename"] = "../" + status["data"][0]["filename"]  # would land outside the folder
    status["data"][1]["record"] = "hmi.sharp_cea_720s[1445]"  # a record string without its T_REC
    status["data"][3]["filename"] = "hmi.sharp_cea_720s.1449.20120307_000000_TAI.Bz.fits"  # a segment not asked for
    replay.routes["jsoc_fetch exp_status JSOC_20251106_000102"] = [status]
    with caplog.at_level(logging.WARNING, logger="helioforge.data.jsoc"):
        rep = _run(tmp_path / "sharp", replay, mirror)
    assert rep.files_downloaded == 9 and rep.chunks_partial == 1
    assert {(p["record"], p["segment"]) for p in rep.problems} == {
        ("[1445][2012.03.07_00:00:00_TAI]", "Br"), ("[1445][2012.03.07_00:00:00_TAI]", "bitmap"),
        ("[1449][2012.03.07_00:00:00_TAI]", "bitmap")}
    assert all(p["reason"] == "JSOC gave no file for this record and segment" for p in rep.problems)
    msgs = " ".join(r.getMessage() for r in caplog.records)
    assert "not of the form series[HARPNUM][T_REC]" in msgs and "segment 'Bz' was not asked for" in msgs
    assert "is not a plain file name" in msgs and not (tmp_path / status["data"][0]["filename"][3:]).exists()


def test_bad_arguments_and_other_settings_in_the_same_folder(tmp_path, mirror, monkeypatch):
    with pytest.raises(ValueError, match="registered email"):
        fetch_sharp_archive(tmp_path, "", **RANGE)
    with pytest.raises(ValueError, match="max_records"):
        fetch_sharp_archive(tmp_path, EMAIL, max_records=0, **RANGE)
    with pytest.raises(ValueError, match="unknown SHARP segment"):
        fetch_sharp_archive(tmp_path, EMAIL, **{**RANGE, "segments": ("Br", "Bz")})
    out = tmp_path / "sharp"
    _run(out, Replay(), mirror)
    with pytest.raises(ValueError, match=rf"{MANIFEST_NAME}: this folder holds an ingest with segments=\['Br', 'bitmap'\]"):
        _run(out, Replay(), mirror, segments=("Br",))
    refused = Replay()
    refused.routes["checkAddress.sh"] = [{"status": 4, "msg": "Address has neither been validated nor registered"}]
    monkeypatch.setattr(drms, "Client", lambda *a, email=None, **k: replay_client(refused, mirror, email))
    with pytest.raises(ValueError, match="JSOC refuses the email 'nobody@example.org'.*register it at"):
        fetch_sharp_archive(tmp_path / "x", "nobody@example.org", **RANGE)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / MANIFEST_NAME).write_bytes(b"this is no database" * 200)
    with pytest.raises(ProductError, match=f"{MANIFEST_NAME}: not a readable ingest manifest"):
        _run(junk, Replay(), mirror)


# ----------------------------------------------------------------------------- into a corpus store
def test_ingest_feeds_a_corpus_store_as_files_arrive_and_resumes_without_duplicates(tmp_path, mirror, monkeypatch):
    out, store_dir = tmp_path / "sharp", tmp_path / "sharp.corpus"
    sizes: list[int] = []
    kw = {**RANGE, "delay_s": 0.0, "poll_s": 0.0, "retries": 0, "progress": False, "sleep": lambda s: None}

    class Stop(Exception):
        pass

    real = CorpusStore.on_archive_file

    def watch(self, f):
        real(self, f)
        sizes.append(len(self))
        if len(sizes) == 7:
            raise Stop

    monkeypatch.setattr(CorpusStore, "on_archive_file", watch)
    with pytest.raises(Stop):
        fetch_sharp_corpus(out, EMAIL, store_dir, image_size=32, client=replay_client(Replay(), mirror), **kw)
    monkeypatch.setattr(CorpusStore, "on_archive_file", real)
    assert sizes[:7] == [1, 1, 2, 2, 3, 3, 4]  # one patch per Br file, appended as it arrived
    with CorpusStore.open(store_dir) as s:
        assert len(s) == 4
    rep, store = fetch_sharp_corpus(out, EMAIL, store_dir, image_size=32, client=replay_client(Replay(), mirror), **kw)
    with store:
        assert rep.complete and len(store) == 6  # no duplicate of the patch whose file was in place
        tab = store.table()
        assert sorted(zip(tab["HARPNUM"], tab["T_REC"])) == sorted(RECORDS)
        row = store.row(int((tab["HARPNUM"] == 1449).nonzero()[0][0]))
        assert row["NOAA_AR"] == 11429 and row["NOAA_ARS"] == "11429,11430" and row["folder"] == str(out.resolve())
        assert any(p.get("made_by") == "fetch_sharp_corpus" and p.get("cadence") == "12h" for p in store.provenance())
        corpus = store.as_corpus()
        assert corpus.images.shape == (6, 1, 32, 32) and abs(corpus.images).max() <= 1.0
    with pytest.raises(ValueError, match="not 64×64"):
        fetch_sharp_corpus(out, EMAIL, store_dir, image_size=64, client=replay_client(Replay(), mirror), **kw)


# ----------------------------------------------------------------------------- the command
def test_fetch_sharp_all_harps_command(tmp_path, mirror, monkeypatch):
    runner = CliRunner()
    made, replays = [], []

    def client_factory(*a, email=None, **k):
        made.append(email)
        return replay_client(replays.pop(0) if replays else Replay(), mirror)

    monkeypatch.setattr(drms, "Client", client_factory)
    args = ["fetch", "sharp", "--all-harps", "--email", EMAIL, "--start", "2012-03-06", "--end", "2012-03-07T12:00",
            "--cadence", "12h", "--segment", "Br", "--segment", "bitmap", "-o", str(tmp_path / "sharp"), "--delay", "0"]
    r = runner.invoke(app, [*args, "--dry-run"])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [f"{SERIES}[][{CHUNK1}]{{Br,bitmap}}", f"{SERIES}[][{CHUNK2}]{{Br,bitmap}}"]
    monkeypatch.setattr(time, "sleep", lambda s: None)  # drms' polling of the pending export
    r = runner.invoke(app, [*args, "--corpus", str(tmp_path / "c"), "--profile", "tiny"])
    assert r.exit_code == 0, r.output
    assert "12 file(s) downloaded" in r.stderr and "corpus store" in r.stderr and "6 patch(es)" in r.stderr
    assert made == [EMAIL]
    with CorpusStore.open(tmp_path / "c") as s:
        assert s.image_size == 32 and len(s) == 6
    failing = Replay()
    failing.routes["jsoc_fetch exp_status JSOC_20251106_000101"] = ["jsoc_fetch/exp_status.failed.json"]
    replays.append(failing)
    r = runner.invoke(app, [*args[:-3], str(tmp_path / "other"), "--delay", "0", "--retries", "0"])
    assert r.exit_code == 1, r.output  # incomplete: says what and how to go on
    assert f"failed chunk {CHUNK1}: JSOC export {SERIES}[][{CHUNK1}]{{Br,bitmap}}: failed after 1 attempt(s)" in r.stderr
    assert "[status=4]" in r.stderr and "rerun the same command" in r.stderr and "4 file(s) downloaded" in r.stderr
    r = runner.invoke(app, ["fetch", "sharp", "--all-harps", "--harp", "1", "--email", EMAIL, "--start", "2012-03-06",
                            "--end", "2012-03-07"])
    assert r.exit_code == 2 and "--all-harps takes every HARP" in r.stderr
    r = runner.invoke(app, [*args[:-4], "--chunk", "5h"])
    assert r.exit_code == 2 and "not a whole number of cadence steps" in r.stderr
    r = runner.invoke(app, ["fetch", "sharp", "--harp", "1", "--email", EMAIL, "--start", "2012-03-06", "--end", "2012-03-07",
                            "--corpus", str(tmp_path / "c2")])
    assert r.exit_code == 2 and "--corpus goes with --all-harps" in r.stderr
