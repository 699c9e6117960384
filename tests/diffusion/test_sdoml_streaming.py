"""Streaming SDOMLv2 zarr stores into the diffusion training (issue 16, part 3).

The stores are made here from the real sample (``aia/sdoml_binned``: 4×4-binned SDOML DN/s
frames of 2014) with :func:`helioforge.data.sdoml.write_sdoml_zarr`, copied along the time axis
where a test needs more frames or other years; the correction test uses a hand-made store
whose attributes say counts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from helioforge.config import data_file, data_root
from helioforge.data.aia import read_aia_folder
from helioforge.data.goes import read_xrs_flux
from helioforge.data.goes_labels import label_images
from helioforge.data.sdoml import SDOMLError, _Layout, open_sdoml, sdoml_correction_factor, write_sdoml_zarr
from helioforge.diffusion.config import StreamConfig, get_diffusion_profile
from helioforge.diffusion.data import build_labelled_set, build_sdoml_index, check_data_config, sdoml_digest
from helioforge.diffusion.train import load_diffusion, train_diffusion_stream
from helioforge.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: benchmarks/
from benchmarks.bench_sdoml_stream import measure_peak_rss  # noqa: E402

DAY = np.timedelta64(1, "D")


@pytest.fixture(scope="module")
def images131():
    """The sample's 131 Å DN/s frames (126 in the full sample, 2 in the embedded one)."""
    images, _ = read_aia_folder(data_root() / "aia" / "sdoml_binned", wavelength=131, progress=False)
    assert images, "no 131 Å frame in the sample"
    return images


@pytest.fixture(scope="module")
def images193():
    images, _ = read_aia_folder(data_root() / "aia" / "sdoml_binned", wavelength=193, progress=False)
    return images


@pytest.fixture(scope="module")
def store(tmp_path_factory, images131, images193) -> Path:
    """Two copies of the sample: as observed (2014) and 400 days later (2015), both channels."""
    path = tmp_path_factory.mktemp("sdoml") / "sdomlv2_sample.zarr"
    write_sdoml_zarr(path, images131 + images193, time_offsets=[0 * DAY, 400 * DAY])
    return path


def _profile(store: str | Path, **stream) -> object:
    p = get_diffusion_profile("cpu")
    p.stream = StreamConfig(source="sdoml", store=str(store), **stream)
    return p


def _times(images, offset=0 * DAY) -> np.ndarray:
    return np.array([np.datetime64(im.time, "s") + offset for im in images], dtype="datetime64[ns]")


# --------------------------------------------------------------------------- reading


def test_lazy_open_time_range_and_channel(store, images131, images193):
    import dask.array as da

    frames = open_sdoml(store, 131)
    assert isinstance(frames.data, da.Array)  # nothing read yet
    assert frames.dims == ("time", "y", "x") and frames.dtype == np.float32 and frames.attrs["units"] == "DN/s"
    expected = np.concatenate([_times(images131), _times(images131, 400 * DAY)])
    np.testing.assert_array_equal(np.sort(frames["time"].values), np.sort(expected))
    assert set(frames["year"].values.tolist()) == {2014, 2015}
    # the frames are the sample's pixels (DN/s, factor 1)
    first = int(np.argmin(frames["time"].values))
    k = int(np.argmin(_times(images131)))
    np.testing.assert_array_equal(frames.isel(time=first).values, images131[k].data)
    # a time range: only frames inside it (inclusive), only the year groups it overlaps
    t = np.sort(_times(images131))
    start, end = t[len(t) // 4], t[len(t) // 2]
    window = open_sdoml(store, 131, start=str(start), end=str(end))
    want = expected[(expected >= start) & (expected <= end)]
    np.testing.assert_array_equal(np.sort(window["time"].values), np.sort(want))
    later = open_sdoml(store, 131, start="2015-01-01")
    assert set(later["year"].values.tolist()) == {2015} and len(later.time) == len(images131)
    # the channel select
    assert len(open_sdoml(store, 193).time) == 2 * len(images193)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_exposure_and_degradation_correction_by_hand(tmp_path, zarr_format):
    """SDOMLv2 (aia_fits_to_zarr.py): stored DN/s frames are already X/(max(EXPTIME, 0.01)·DEG_COR)
    and are used as stored; counts frames get that same division here."""
    import zarr

    path = tmp_path / "counts.zarr"
    g = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    arr = g.require_group("2012").create_array("171A", shape=(4, 16, 16), chunks=(2, 16, 16), dtype="f4")
    raw = np.random.default_rng(1).uniform(50, 5000, size=(4, 16, 16)).astype("f4")
    arr[:] = raw
    arr.attrs.update({
        "T_OBS": ["2012-03-07T00:00:00.34Z", "2012-03-07T00:06:00.34Z", "2012-03-07T00:12:00.34Z",
                  "2012-03-07T00:18:00.34Z"],
        "CDELT1": [2.4] * 4,  # SDOMLv2 keeps every keyword: the reader skips those it does not use
        "PIXLUNIT": ["DN/s", "DN", "DN", None],
        "EXPTIME": [2.0, 2.0, 0.004, 1.9],
        "QUALITY": [{"flag": 0}] * 4,
        "DEG_COR": [0.9, 0.8, 0.5, 0.7],
    })
    frames = open_sdoml(path, 171)
    # only the four keyword lists are kept; the pixel arrays carry no keyword lists
    pixels, lists = _Layout(str(path), {}, zarr.open_group(str(path), mode="r")).open("2012/171A")
    assert dict(pixels.attrs) == {} and sorted(lists) == ["DEG_COR", "EXPTIME", "PIXLUNIT", "T_OBS"]
    got = frames.values
    np.testing.assert_array_equal(got[0], raw[0])                       # DN/s: as stored
    np.testing.assert_allclose(got[1], raw[1] / (2.0 * 0.8), rtol=1e-6)   # DN: / (EXPTIME·DEG_COR)
    np.testing.assert_allclose(got[2], raw[2] / (0.01 * 0.5), rtol=1e-6)  # EXPTIME floored at 0.01 s
    np.testing.assert_array_equal(got[3], raw[3])                       # no PIXLUNIT: DN/s
    np.testing.assert_allclose(frames["factor"].values, [1.0, 1.6, 0.005, 1.0], rtol=1e-6)
    assert str(frames["time"].values[0]) == "2012-03-07T00:00:00.000000000"  # rounded to the second
    # what the correction needs, and cannot do without
    with pytest.raises(SDOMLError, match=r"2012/171A\[0\]: PIXLUNIT 'DN' \(counts\) but DEG_COR None"):
        sdoml_correction_factor(["DN"], [2.0], None, 1, store="s", name="2012/171A")
    with pytest.raises(SDOMLError, match="EXPTIME"):
        sdoml_correction_factor(["DN"], [float("nan")], [0.9], 1)
    with pytest.raises(SDOMLError, match="neither DN/s nor DN"):
        sdoml_correction_factor(["photons"], [1.0], [1.0], 1)


# --------------------------------------------------------------------------- labels


def test_label_join_by_time_and_unlabelled_report(tmp_path, images131):
    """Flux labels: the XRS-B sample nearest each frame within half the series' cadence. The copy
    shifted to 2020 lies after the GOES-15 hourly series (which ends in 2018): unlabelled, counted
    by reason, never streamed."""
    path = tmp_path / "labels.zarr"
    write_sdoml_zarr(path, images131, time_offsets=[0 * DAY, 2200 * DAY])
    p = _profile(path)
    p.data.label_source = "flux"
    index = build_sdoml_index(p)
    t = index.table
    n = len(images131)
    assert len(t) == 2 * n and index.report["frames_in_range"] == 2 * n
    late = t["time"].to_numpy() > np.datetime64("2019-01-01")
    assert (t.loc[late, "class_index"] == -1).all() and (t.loc[late, "split"] == "").all()
    assert index.report["unlabelled"] >= n
    assert sum(index.report["unlabelled_by_reason"].values()) == index.report["unlabelled"]
    assert any("outside" in r for r in index.report["unlabelled_by_reason"])
    # the same join as label_images on the frame times
    ref = label_images(index.frames["time"].values, flux=read_xrs_flux(data_file("goes/goes15_xrs_hourly_2010-2018.csv")),
                       source="flux")
    np.testing.assert_array_equal(t["class_index"].to_numpy(), ref["class_index"].to_numpy())
    # only labelled training frames are streamed
    got = sorted(int(item[2]) for item in index.stream(with_time=True))
    want = sorted(t.loc[t["split"] == "train", "time"].to_numpy(dtype="datetime64[ns]").astype(np.int64).tolist())
    assert got == want


def test_stream_is_the_in_memory_set(tmp_path, data_dir):
    """One copy of the sample folder as a store: the streamed training set holds exactly the
    images, labels and split of the in-memory path (events+flux, the `cpu` profile)."""
    folder = data_dir / "aia" / "sdoml_binned"
    p = get_diffusion_profile("cpu")
    made = build_labelled_set(p, folder, "x", progress=False)
    images, _ = read_aia_folder(folder, wavelength=p.data.wavelength, progress=False)
    path = tmp_path / "one_copy.zarr"
    write_sdoml_zarr(path, images)
    p.stream = StreamConfig(source="sdoml", store=str(path))
    index = build_sdoml_index(p)
    lab = index.table[index.table["split"] != ""]
    mem = made.labelled.table
    assert len(lab) == len(mem) == made.report["labelled"] and index.report["histogram"] == made.report["histogram"]
    by_time = lab.set_index(lab["time"].astype("datetime64[ns]"))
    mem_t = mem["time"].astype("datetime64[ns]")
    for col in ("class_index", "split", "label_source"):
        assert by_time.loc[mem_t, col].tolist() == mem[col].tolist()
    np.testing.assert_allclose(by_time.loc[mem_t, "log10_flux"].to_numpy(dtype=float), mem["log10_flux"].to_numpy(dtype=float))
    # the streamed pixels equal the in-memory cube, frame by frame
    x_mem, c_mem, _ = made.labelled.split("train")
    t_mem = mem_t[mem["split"] == "train"].to_numpy().astype(np.int64)
    streamed = {int(t): (x.numpy(), int(c)) for x, c, t in index.stream(with_time=True)}
    assert sorted(streamed) == sorted(t_mem.tolist())
    for x, c, t in zip(x_mem, c_mem, t_mem):
        np.testing.assert_array_equal(streamed[int(t)][0], x)
        assert streamed[int(t)][1] == c


# --------------------------------------------------------------------------- fsspec


def test_fsspec_memory_and_file_urls(store, images131):
    import fsspec

    url = "memory://helioforge-test/sdoml.zarr"
    try:
        write_sdoml_zarr(url, images131[:20], time_offsets=[0 * DAY, 3 * DAY], chunk_frames=4)
        mem = open_sdoml(url, 131)
        assert mem.attrs["store"] == url and len(mem.time) == 2 * min(20, len(images131))
        k = int(np.argmin(mem["time"].values))
        np.testing.assert_array_equal(mem.isel(time=k).values, images131[int(np.argmin(_times(images131[:20])))].data)
        p = _profile(url, shuffle_buffer=8)
        p.data.label_source, p.train.batch_size = "flux", 4
        items = list(build_sdoml_index(p).stream())
        assert items and items[0][0].shape == (1, 64, 64) and items[0][0].dtype == torch.float32
    finally:
        fsspec.filesystem("memory").rm("/helioforge-test", recursive=True)
    local = open_sdoml(store, 131)
    via_file = open_sdoml(f"file://{store}", 131)
    np.testing.assert_array_equal(via_file["time"].values, local["time"].values)
    np.testing.assert_array_equal(via_file.isel(time=[0, -1]).values, local.isel(time=[0, -1]).values)
    # the digest follows the frames, not where the store lies
    p = _profile(store)
    assert sdoml_digest(p, via_file) == sdoml_digest(p, local)
    p.stream.start = "2015-01-01"
    assert sdoml_digest(p, open_sdoml(store, 131, start="2015-01-01")) != sdoml_digest(_profile(store), local)


# --------------------------------------------------------------------------- training


def test_dataloader_workers_stream_each_frame_once(store):
    p = _profile(store, shuffle_buffer=16)
    p.data.label_source = "flux"
    stream = build_sdoml_index(p).stream(with_time=True)
    expected = sorted(stream.times.tolist())
    epochs = []
    loader = DataLoader(stream, batch_size=8, num_workers=2, persistent_workers=True)
    for _ in range(2):
        seen = [int(t) for _, _, tb in loader for t in tb]
        assert sorted(seen) == expected  # every training frame once, none twice, across the workers
        epochs.append(seen)
    assert epochs[0] != epochs[1]  # a new order every epoch
    assert epochs[0] != expected  # shuffled, not in time order
    x, c, _ = next(iter(DataLoader(stream, batch_size=8)))
    assert x.shape == (8, 1, 64, 64) and c.dtype == torch.int64 and float(x.min()) >= -1 and float(x.max()) <= 1


def test_training_streams_from_the_store(store, tmp_path, one_torch_thread):
    p = get_diffusion_profile("tiny")
    p.data.wavelength, p.data.label_source = 131, "flux"
    p.stream = StreamConfig(source="sdoml", store=str(store), start="2014-10-18", end="2014-11-30", shuffle_buffer=32)
    p.train.epochs, p.train.batch_size = 1, 8
    index = build_sdoml_index(p)
    stream = index.stream()
    stem = train_diffusion_stream(stream, p.unet, p.train, tmp_path / "model", extra_config={"data": index.report},
                                  progress=False)
    net, config = load_diffusion(stem)
    assert config["image_size"] == 32 and config["epochs_trained"] == 1 and np.isfinite(config["final_metrics"]["loss"])
    assert config["data"]["store"] == str(store)
    flux_stream = index.stream(condition="flux")
    _, cond = next(iter(flux_stream))
    assert cond.dtype == torch.float32 and -9 < float(cond) < -2


def _peak(mode: str, store: Path) -> dict:
    # one malloc arena: zarr decodes chunks in threads, and glibc's per-thread arenas add a
    # fragmentation term that is bounded (by the number of arenas) but saturates only after
    # several hundred frames, longer than these stores (the benchmark measures with the
    # default allocator)
    return measure_peak_rss(mode, store, size=64, workers=0, buffer=32, arena_max=1)


def test_streaming_memory_is_bounded(tmp_path, images131):
    """Peak RSS above the imports (ru_maxrss, in a fresh process): streaming a store 4× longer
    costs no more memory; the eager reader (read_sdoml_zarr + the cube) holds its pixels."""
    small, large = tmp_path / "x2.zarr", tmp_path / "x8.zarr"
    reps = max(1, -(-60 // len(images131)))  # ≥ 60 frames even with the embedded sample
    write_sdoml_zarr(small, images131, time_offsets=[k * DAY for k in range(2 * reps)])
    write_sdoml_zarr(large, images131, time_offsets=[k * DAY for k in range(8 * reps)])
    frame_mib = images131[0].data.nbytes / 2**20
    s2, s8, m8 = _peak("stream", small), _peak("stream", large), _peak("memory", large)
    grow = lambda r: (r["peak_kib"] - r["base_kib"]) / 1024  # noqa: E731 - MiB above the imports
    raw8 = 8 * reps * len(images131) * frame_mib  # MiB of float32 pixels in the larger store
    assert s8["n"] > 3 * s2["n"]
    assert grow(s8) - grow(s2) < 8.0, (s2, s8)  # 6 copies more: 190 MiB more pixels with the full sample
    assert grow(m8) - grow(s8) > 0.5 * raw8, (s8, m8)


# --------------------------------------------------------------------------- bad input


def test_bad_input_names_the_store_and_the_problem(tmp_path, store):
    import zarr

    with pytest.raises(SDOMLError, match=r"sdomlv2_sample\.zarr: no 94A array in year\(s\) 2014, 2015; "
                                          r"channels found: 131A, 193A"):
        open_sdoml(store, 94)
    with pytest.raises(SDOMLError, match=r"no 131A frame between 2014-12-01 and 2014-12-31; .* span 2014-01-04"):
        open_sdoml(store, 131, start="2014-12-01", end="2014-12-31")
    with pytest.raises(SDOMLError, match=r"sdomlv2_sample\.zarr: start 'soon' is not a time"):
        open_sdoml(store, 131, start="soon")
    with pytest.raises(SDOMLError, match="empty time range: end 2014-01-01 is before start 2014-02-01"):
        open_sdoml(store, 131, start="2014-02-01", end="2014-01-01")
    with pytest.raises(SDOMLError, match="no year group between 2020-01-01 and None; years found: 2014, 2015"):
        open_sdoml(store, 131, start="2020-01-01")
    with pytest.raises(FileNotFoundError, match="nowhere.zarr: no such zarr store"):
        open_sdoml(tmp_path / "nowhere.zarr", 131)
    junk = tmp_path / "junk.zarr"
    junk.mkdir()
    (junk / ".zgroup").write_text("{not json")
    with pytest.raises(SDOMLError, match=r"junk\.zarr: not a readable zarr group"):
        open_sdoml(junk, 131)
    flat = zarr.open_group(str(tmp_path / "flat.zarr"), mode="w", zarr_format=2)
    flat.create_array("171A", shape=(2, 8, 8), dtype="f4")
    with pytest.raises(SDOMLError, match=r"flat\.zarr: no year group .* not an SDOMLv2 store"):
        open_sdoml(tmp_path / "flat.zarr", 171)
    bad = zarr.open_group(str(tmp_path / "bad.zarr"), mode="w", zarr_format=2).require_group("2014")
    a = bad.create_array("171A", shape=(3, 8, 8), dtype="f4")
    with pytest.raises(SDOMLError, match=r"bad\.zarr: 2014/171A has no T_OBS attribute"):
        open_sdoml(tmp_path / "bad.zarr", 171)
    a.attrs["T_OBS"] = ["2014-01-01T00:00:00Z"] * 2
    with pytest.raises(SDOMLError, match=r"2014/171A: attribute T_OBS has 2 entries for 3 frames"):
        open_sdoml(tmp_path / "bad.zarr", 171)
    a.attrs["T_OBS"] = ["2014-01-01T00:00:00Z", "yesterday", "2014-01-01T00:12:00Z"]
    with pytest.raises(SDOMLError, match=r"unparsable T_OBS\[1\] = 'yesterday'"):
        open_sdoml(tmp_path / "bad.zarr", 171)
    (tmp_path / "bad.zarr" / "2014" / "171A" / ".zattrs").write_text('{"T_OBS": ["2014-01-01T00:00:00Z", ')
    with pytest.raises(SDOMLError, match=r"bad\.zarr: 2014/171A/\.zattrs is not valid JSON"):
        open_sdoml(tmp_path / "bad.zarr", 171)
    bad.create_array("193A", shape=(8, 8), dtype="f4")
    with pytest.raises(SDOMLError, match=r"2014/193A has shape \(8, 8\), expected \(t, ny, nx\)"):
        open_sdoml(tmp_path / "bad.zarr", 193)
    with pytest.raises(SDOMLError, match=r"s3://.*needs an fsspec back-end.*helioforge\[cloud\]"):
        open_sdoml("s3://no-such-bucket/sdomlv2.zarr", 171)
    # settings
    with pytest.raises(ValueError, match="StreamConfig.source must be one of 'folder', 'sdoml'"):
        StreamConfig(source="cloud")
    p = get_diffusion_profile("cpu")
    p.stream.source = "sdoml"
    with pytest.raises(InputError, match="no stream.store"):
        check_data_config(p)
    p = _profile(store, start="last tuesday")
    with pytest.raises(InputError, match="stream.start 'last tuesday' is not a time"):
        build_sdoml_index(p)
    p = _profile(store)
    p.data.image_size = 512
    with pytest.raises(SDOMLError, match=r"131A frames are 256×256 pixels: need square frames of at least 512×512"):
        build_sdoml_index(p)
    p = _profile(store, start="2015-01-01")
    p.train.batch_size = 10_000
    with pytest.raises(ValueError, match=r"sdomlv2_sample\.zarr: only \d+ training and \d+ test frames"):
        build_sdoml_index(p)


def test_the_work_folder_pipeline_refuses_an_sdoml_profile(tmp_path):
    """The commands read image folders: a profile that streams an SDOML store is refused, not
    silently trained on the folder."""
    import dataclasses

    from helioforge.diffusion.config import get_diffusion_profile
    from helioforge.diffusion.pipeline import require_folder_source
    from helioforge.errors import InputError

    prof = get_diffusion_profile("tiny")
    require_folder_source(prof)  # the default: an image folder
    prof = dataclasses.replace(prof, stream=dataclasses.replace(prof.stream, source="sdoml", store=str(tmp_path)))
    with pytest.raises(InputError, match="stream an SDOML store with the Python API"):
        require_folder_source(prof)
