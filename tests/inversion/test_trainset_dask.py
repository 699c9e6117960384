"""Training sets on Dask (issue 15): a real LocalCluster of 2 single-threaded worker processes.

The same shards as the serial path, bit for bit (the manifests' SHA-256 per shard); a resumed
run makes only the missing shards; a worker killed mid-run is replaced and the set completes
identically; a task that always fails is reported (shard, patches, seeds, error) while the
other shards complete; the CLI's ``--scheduler local`` and ``tcp://`` paths; bad ``--scheduler``
values. The faults come from the test hook of :mod:`helioforge.inversion.cluster`
(``HELIOFORGE_DASK_FAULTS``), set in the environment of this module's workers only.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from helioforge.cli import app
from helioforge.inversion.cluster import FAULTS_ENV, _environment_restored, parse_scheduler, tune_worker_malloc
from helioforge.inversion.config import DepthGridConfig, get_trainset_profile
from helioforge.inversion.dataset import (
    ShardsFailed,
    TrainsetDataset,
    make_trainset,
    read_manifest,
    verify_trainset,
)

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()


def _tiny(n_patches=6, shard_size=2, seed=1):
    """Three shards of 2 patches of 4×4 SP pixels on a coarse depth grid (≈ 0.3 s a patch)."""
    p = get_trainset_profile("tiny")
    p.trainset = dataclasses.replace(p.trainset, n_patches=n_patches, shard_size=shard_size, patch_size=4,
                                     qs_reference_size=4, seed=seed)
    p.grid = DepthGridConfig(log_tau_step=0.3, log_tau_bottom=1.2, log_tau_top=-3.9)
    return p


def _sums(manifest) -> dict[str, str]:
    return {e["file"]: e["sha256"] for e in manifest["shards"]}


def _gone(pids, timeout=15.0) -> list[int]:
    """The pids of ``pids`` still alive after ``timeout`` seconds."""
    t0 = time.monotonic()
    while True:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive or time.monotonic() - t0 > timeout:
            return alive
        time.sleep(0.2)


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    """The folder of the test hook: ``kill-shard_NNNNN`` / ``fail-shard_NNNNN`` files."""
    return tmp_path_factory.mktemp("dask_faults")


@pytest.fixture(scope="module")
def client(faults, data_dir):
    """A LocalCluster of 2 worker processes (1 thread each) with the fault hook armed; every worker
    process it ever ran (a killed one's replacement too) has ended when the module is done."""
    from distributed import Client, LocalCluster

    pids: set[int] = set()
    with _environment_restored(), LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=40, env={FAULTS_ENV: str(faults)}) as cluster, \
            Client(cluster, set_as_default=False) as c:
        c.wait_for_workers(2)
        c.pids = pids  # the tests add the pids they see
        pids.update(c.run(os.getpid).values())
        yield c
        pids.update(c.run(os.getpid).values())
    assert not _gone(pids), f"worker processes left behind: {_gone(pids)}"


@pytest.fixture(scope="module")
def serial(tmp_path_factory, data_dir):
    """The tiny set made serially: the reference checksums."""
    out = tmp_path_factory.mktemp("serial") / "set"
    return dict(make_trainset(out, _tiny(), root=data_dir, progress=False), _folder=str(out))


def test_cluster_set_is_the_serial_set(client, serial, tmp_path, data_dir):
    man = make_trainset(tmp_path / "c", _tiny(), root=data_dir, progress=False, scheduler=client)
    assert man["complete"] and man["failed"] == []
    assert _sums(man) == _sums(serial) and len(_sums(man)) == 3
    assert man["quiet_sun_reference"]["id"] == serial["quiet_sun_reference"]["id"]
    # what the manifest records
    on_disk = verify_trainset(tmp_path / "c")
    assert on_disk["scheduler"]["kind"] == "client" and on_disk["scheduler"]["n_workers"] == 2
    assert on_disk["scheduler"]["address"] == client.scheduler.address
    assert on_disk["scheduler"]["threads_per_worker"] == 1 and on_disk["scheduler"]["retries"] == 2
    code = on_disk["code"]
    assert on_disk["synthesis_kernel"] == "fused" and code["helioforge"] and len(code["source_sha256"]) == 16
    assert len(code.get("git_commit", "0" * 40)) == 40  # in a git checkout: its commit
    run = on_disk["runs"][-1]
    assert run["shards_made"] == 3 and run["patches_made"] == 6 and run["worker_peak_rss_mb"] > 50
    assert on_disk["timing"]["patches_timed"] == 6 and on_disk["timing"]["scheduler"] == "client"
    assert serial["scheduler"]["kind"] == "serial" and serial["code"] == code
    assert len(TrainsetDataset(tmp_path / "c")) == 6
    assert not list((tmp_path / "c").glob(".*partial"))
    # the workers run with glibc's mmap threshold raised again (Dask's MALLOC_TRIM_THRESHOLD_ halves the speed)
    assert all(client.run(tune_worker_malloc).values())


def test_shards_compressed_with_the_chosen_codec_and_old_shards_still_read(serial, tmp_path):
    """Blosc zstd for new shards; a shard written with zarr's default Zstd (every set before issue 15)
    reads the same and keeps its checksum (it hashes the decoded arrays)."""
    import shutil

    import numpy as np
    import zarr
    from zarr.codecs import ZstdCodec

    src = Path(serial["_folder"])
    meta = zarr.open_group(str(src / "shard_00000.zarr"), mode="r")["stokes"].metadata.to_dict()
    assert [c["name"] for c in meta["codecs"]][-1] == "blosc"
    out = tmp_path / "old"
    shutil.copytree(src, out)
    shard = out / "shard_00001.zarr"
    g = zarr.open_group(str(src / "shard_00001.zarr"), mode="r")
    shutil.rmtree(shard)
    old = zarr.open_group(str(shard), mode="w")
    for k in ("stokes", "targets"):
        a = np.asarray(g[k][:])
        old.create_array(k, shape=a.shape, chunks=(1, *a.shape[1:]), dtype="float32", compressors=[ZstdCodec(level=0)])[:] = a
    for k in ("kind", "patch_index"):
        old.create_array(k, shape=g[k].shape, dtype=g[k].dtype)[:] = g[k][:]
    old.attrs.update(dict(g.attrs))
    assert zarr.open_group(str(shard), mode="r")["stokes"].metadata.to_dict()["codecs"][-1]["name"] == "zstd"
    verify_trainset(out)  # same checksums
    s_new, t_new = TrainsetDataset(src)[3]
    s_old, t_old = TrainsetDataset(out)[3]
    assert bool((s_new == s_old).all()) and bool((t_new == t_old).all())


def test_resume_makes_only_the_missing_shards(client, serial, tmp_path, data_dir):
    out = tmp_path / "r"
    man = make_trainset(out, _tiny(), root=data_dir, progress=False, scheduler=client, max_shards=1)
    assert not man["complete"] and list(_sums(man)) == ["shard_00000.zarr"]
    kept = (out / "shard_00000.zarr" / "zarr.json").stat().st_mtime_ns
    (out / ".shard_00001.zarr.partial").mkdir()  # a half-written shard of the interrupted run
    man = make_trainset(out, _tiny(), root=data_dir, progress=False, scheduler=client)
    assert man["complete"] and _sums(man) == _sums(serial)
    assert man["runs"][-1]["shards_made"] == 2 and len(man["runs"]) == 2
    assert (out / "shard_00000.zarr" / "zarr.json").stat().st_mtime_ns == kept
    assert not list(out.glob(".*partial"))
    # nothing left to make: no task is submitted, the manifest keeps the scheduler that made the shards
    man = make_trainset(out, _tiny(), root=data_dir, progress=False, scheduler=client)
    assert man["runs"][-1]["shards_made"] == 0 and man["runs"][-1]["scheduler"]["kind"].startswith("unused")
    assert man["scheduler"]["kind"] == "client"
    # the serial path resumes a cluster-made set too (same digest, same shards)
    assert _sums(make_trainset(out, _tiny(), root=data_dir, progress=False)) == _sums(serial)


def test_worker_killed_mid_run_and_the_set_completes_identically(client, serial, faults, tmp_path, data_dir):
    marker = faults / "kill-shard_00001"
    marker.touch()  # the task of shard 1 ends its worker process with the shard half written, once
    before = set(client.run(os.getpid).values())
    try:
        man = make_trainset(tmp_path / "k", _tiny(), root=data_dir, progress=False, scheduler=client)
    finally:
        marker.unlink(missing_ok=True)
    assert not marker.exists() or pytest.fail("the hook did not run")
    client.wait_for_workers(2, timeout=60)  # the nanny has started a new worker
    after = set(client.run(os.getpid).values())
    client.pids.update(before | after)
    assert before - after, "no worker process was replaced"
    assert man["complete"] and man["failed"] == [] and _sums(man) == _sums(serial)
    assert not list((tmp_path / "k").glob(".*partial"))
    verify_trainset(tmp_path / "k")


def test_a_failing_task_is_reported_and_the_others_complete(client, serial, faults, tmp_path, data_dir):
    out = tmp_path / "f"
    marker = faults / "fail-shard_00001"
    marker.touch()
    try:
        with pytest.raises(ShardsFailed) as err:
            make_trainset(out, _tiny(), root=data_dir, progress=False, scheduler=client, retries=1)
    finally:
        marker.unlink()
    (f,) = err.value.failed
    assert f["shard"] == 1 and f["file"] == "shard_00001.zarr" and (f["first_patch"], f["n"]) == (2, 2)
    assert f["patches"] == "2–3" and f["seed"] == 1 and "default_rng([1, i])" in f["rng"]
    assert "RuntimeError" in f["error"] and "injected failure" in f["error"] and f["retries"] == 1
    msg = str(err.value)
    assert "1 of 3 shard(s) failed after 1 retry" in msg and "shard_00001.zarr (patches 2–3, default_rng([1, i]))" in msg
    assert f"make-trainset -o {out}" in msg and f"--scheduler {client.scheduler.address}" in msg
    man = read_manifest(out)
    assert not man["complete"] and man["failed"] == [f] and man["runs"][-1]["failed_shards"] == [1]
    assert _sums(man) == {k: v for k, v in _sums(serial).items() if k != "shard_00001.zarr"}
    # the cause gone, a rerun makes the missing shard only and clears the failure
    man = make_trainset(out, _tiny(), root=data_dir, progress=False, scheduler=client)
    assert man["complete"] and man["failed"] == [] and man["runs"][-1]["shards_made"] == 1
    assert _sums(man) == _sums(serial)


def test_cli_failure_names_the_shard_and_the_resume_command(client, serial, faults, tmp_path, data_dir):
    out = tmp_path / "cli_tcp"
    args = ["inversion", "make-trainset", "-o", str(out), "-p", "tiny", "--patches", "4", "--size", "4",
            "--shard-size", "1", "--scheduler", client.scheduler.address, "--no-ranges"]
    marker = faults / "fail-shard_00002"
    marker.touch()
    try:  # (the serial set's quiet-Sun reference saves making one)
        r = runner.invoke(app, [*args, "--retries", "0", "--reference-from", serial["_folder"]])
    finally:
        marker.unlink()
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert "shard_00002.zarr (patches 2–2" in lines[0] and "injected failure" in lines[0]
    assert f"--shard-size 1 --scheduler {client.scheduler.address}" in lines[0]
    assert read_manifest(out)["counts"]["shards"] == 3
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    man = read_manifest(out)
    assert man["complete"] and man["scheduler"]["kind"] == "external" and man["runs"][-1]["shards_made"] == 1


def test_cli_scheduler_local(serial, tmp_path, data_dir):
    out = tmp_path / "cli_local"
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    r = runner.invoke(app, ["inversion", "make-trainset", "-o", str(out), "-p", "tiny", "--patches", "2", "--size", "4",
                            "--scheduler", "local", "--workers", "1", "--no-ranges",
                            "--reference-from", serial["_folder"]])
    assert r.exit_code == 0, r.output
    assert "on the Dask cluster tcp://" in r.stdout and "(complete)" in r.stdout
    man = verify_trainset(out)
    assert man["scheduler"]["kind"] == "local" and man["scheduler"]["n_workers"] == 1
    assert man["runs"][-1]["workers_used"] == 1 and man["counts"]["patches"] == 2
    left = {p.pid for p in psutil.Process().children(recursive=True)} - children
    assert not _gone(left), "the local cluster left processes behind"


@pytest.mark.parametrize("value, words", [
    ("tcp//host:8786", "starts with tcp://"),
    ("tcp://", "--scheduler must be"),
    ("tcp://host:99999", "not in 1–65535"),
    ("slurm", "--scheduler must be none, local or tcp://HOST:PORT"),
    ("local:4", "--scheduler must be"),
])
def test_cli_bad_scheduler_is_one_clear_line(tmp_path, value, words):
    out = tmp_path / "ts"
    r = runner.invoke(app, ["inversion", "make-trainset", "-o", str(out), "-p", "tiny", "--scheduler", value])
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and lines[-1].startswith("error: ") and words in lines[-1], r.output
    assert "Traceback" not in r.output and not out.exists()


def test_bad_worker_and_retry_options_and_an_unreachable_scheduler(tmp_path):
    import dask

    out = tmp_path / "ts"
    r = runner.invoke(app, ["inversion", "make-trainset", "-o", str(out), "-p", "tiny", "--workers", "2"])
    assert r.exit_code == 2 and "--workers applies to --scheduler local only" in r.output and not out.exists()
    r = runner.invoke(app, ["inversion", "make-trainset", "-o", str(out), "-p", "tiny", "--retries", "-1"])
    assert r.exit_code == 2 and "--retries" in r.output and not out.exists()
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        r = runner.invoke(app, ["inversion", "make-trainset", "-o", str(out), "-p", "tiny",
                                "--scheduler", "tcp://127.0.0.1:9"])
    assert r.exit_code == 2 and "no Dask scheduler answers there" in r.output and not out.exists(), r.output
    assert parse_scheduler(" NONE ") is None and parse_scheduler("tls://[::1]:8786") == "tls://[::1]:8786"
