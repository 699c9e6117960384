"""Dask machinery of the training sets (issue 15): the scheduler, the tasks, the worker cache.

:func:`helioforge.inversion.dataset.make_trainset` makes each shard of a training set as one
task on a `Dask distributed <https://distributed.dask.org>`_ cluster when it is given a
scheduler; this module holds what does not depend on what a shard is:

* :func:`parse_scheduler` reads the scheduler option: ``None``/``"none"`` (no cluster: the
  serial path), ``"local"`` (a :class:`distributed.LocalCluster` of one single-threaded worker
  process per core, made for the run and closed after it), ``"tcp://HOST:PORT"`` or
  ``"tls://HOST:PORT"`` (the scheduler of a running cluster, e.g. one started with
  ``dask-jobqueue``), or a :class:`distributed.Client` (used as it is, left open);
* :func:`dask_client` opens the client (and the local cluster) for the duration of a ``with``;
* :func:`check_workers_see` refuses a cluster whose workers cannot see the folders the tasks
  read and write (the output and data folders must be on a file system every worker shares,
  at the same path);
* :func:`run_tasks` submits one task per item (``client.submit``, ``retries``) and yields the
  outcomes as they complete (``distributed.as_completed``): a result, or the error after the
  retries; the other tasks go on;
* :func:`worker_cached` keeps what a task rebuilds (models, synthesis chain) in the worker
  process, so that consecutive tasks of a run do not load it again;
* :func:`tune_worker_malloc` undoes, in a worker, the malloc setting of Dask's nanny that made
  the synthesis 2× slower there than in a plain process;
* :func:`worker_peak_rss_mb` reports a worker's peak memory (recorded in the manifest).

A worker process that dies while it runs a task (killed, out of memory) is replaced by its
nanny and the scheduler runs the task again on a living worker (up to
``distributed.scheduler.allowed-failures`` deaths, default 3, then the task fails with
``KilledWorker``).

Test hook: when the environment of a worker holds ``HELIOFORGE_DASK_FAULTS=FOLDER``, a task
labelled ``L`` first looks for ``FOLDER/kill-L`` (it deletes it and ends its worker process with
``os._exit``: a worker killed mid-run, once) and ``FOLDER/fail-L`` (it raises while the file is
there: a task that always fails). Without the variable the hook does nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator, TYPE_CHECKING

from helioforge._cpu import usable_cores
from helioforge.errors import InputError

if TYPE_CHECKING:  # distributed is imported where a cluster is used
    from distributed import Client

__all__ = [
    "parse_scheduler",
    "dask_client",
    "check_workers_see",
    "run_tasks",
    "TaskOutcome",
    "worker_cached",
    "worker_peak_rss_mb",
    "tune_worker_malloc",
    "FAULTS_ENV",
]

logger = logging.getLogger(__name__)

#: Environment variable of the test hook (see the module docstring).
FAULTS_ENV = "HELIOFORGE_DASK_FAULTS"

_ADDRESS = re.compile(r"^(tcp|tls)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9._-]*)(?::(\d+))?$")
_SCHEDULER_HELP = "none, local or tcp://HOST:PORT (the address of a running Dask scheduler)"


def parse_scheduler(value: Any) -> "str | Client | None":
    """Check a scheduler option and return it in its canonical form.

    Parameters
    ----------
    value : None, str or distributed.Client
        ``None``, ``"none"`` or ``""`` (no cluster), ``"local"``, ``"tcp://HOST:PORT"`` or
        ``"tls://HOST:PORT"`` (port 1–65535; without a port, Dask's default 8786), or a
        :class:`distributed.Client`.

    Returns
    -------
    None, str or distributed.Client
        ``None``, ``"local"``, the address, or the client as given.

    Raises
    ------
    InputError
        Any other value; the message names ``--scheduler``, the value and the accepted forms.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        from distributed import Client

        if isinstance(value, Client):
            return value
        raise InputError(f"--scheduler must be {_SCHEDULER_HELP}, got {value!r} (a {type(value).__name__})")
    text = value.strip()
    if text.lower() in ("", "none"):
        return None
    if text.lower() == "local":
        return "local"
    m = _ADDRESS.match(text)
    if not m:
        hint = " (a scheduler address starts with tcp:// or tls://)" if "://" not in text and ":" in text else ""
        raise InputError(f"--scheduler must be {_SCHEDULER_HELP}, got {value!r}{hint}")
    if m.group(3) is not None and not 1 <= int(m.group(3)) <= 65535:
        raise InputError(f"--scheduler {value!r}: port {m.group(3)} is not in 1–65535")
    return text


def _describe(client: "Client", kind: str) -> dict[str, Any]:
    import distributed

    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    threads = sorted({int(w.get("nthreads", 0)) for w in workers.values()})
    return {"kind": kind, "address": client.scheduler.address, "n_workers": len(workers),
            "threads_per_worker": threads[0] if len(threads) == 1 else threads,
            "distributed": distributed.__version__}


@contextlib.contextmanager
def dask_client(scheduler: "str | Client", n_workers: int | None = None, threads_per_worker: int = 1,
                ) -> Iterator[tuple["Client", dict[str, Any]]]:
    """A Dask client for the ``with`` block: a local cluster made for it, or a running one.

    Parameters
    ----------
    scheduler : str or distributed.Client
        ``"local"``: a :class:`distributed.LocalCluster` of ``n_workers`` worker processes with
        ``threads_per_worker`` threads each, closed (its processes ended) when the block ends;
        ``"tcp://HOST:PORT"``: a client of that scheduler (closed at the end, the cluster is
        left running); a :class:`distributed.Client`: used as it is and left open.
    n_workers : int, optional
        Worker processes of the local cluster (default: one per usable core,
        :func:`helioforge._cpu.usable_cores`). Not accepted with an address or a client (the
        cluster has its own).
    threads_per_worker : int
        Threads of each local worker (1: one task per process at a time).

    Yields
    ------
    tuple
        ``(client, info)``; ``info`` records the scheduler: ``kind`` (``local``, ``external`` or
        ``client``), ``address``, ``n_workers`` (at the start), ``threads_per_worker`` and the
        ``distributed`` version.

    Raises
    ------
    InputError
        A bad ``scheduler`` (:func:`parse_scheduler`), ``n_workers`` < 1 or given with a
        running cluster, or no scheduler answering at the address (within
        ``distributed.comm.timeouts.connect``, default 30 s).
    """
    with _quiet_distributed_logs():
        yield from _open_client(scheduler, n_workers, threads_per_worker)


@contextlib.contextmanager
def _quiet_distributed_logs() -> Iterator[None]:
    """distributed's INFO lines (connections, nannies) off unless the user asked for debug output."""
    import distributed  # noqa: F401 - its import sets its loggers' levels: set ours after it

    log = logging.getLogger("distributed")
    before = log.level
    if not logging.getLogger().isEnabledFor(logging.DEBUG) and log.getEffectiveLevel() < logging.WARNING:
        log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(before)


def _open_client(scheduler, n_workers, threads_per_worker):
    from distributed import Client, LocalCluster

    spec = parse_scheduler(scheduler)
    if spec is None:
        raise InputError("--scheduler none has no cluster: make the set serially instead")
    if n_workers is not None and (not isinstance(n_workers, int) or n_workers < 1):
        raise InputError(f"--workers must be an integer ≥ 1, got {n_workers!r}")
    if threads_per_worker < 1:
        raise InputError(f"threads_per_worker must be ≥ 1, got {threads_per_worker!r}")
    if not isinstance(spec, str):
        if n_workers is not None:
            raise InputError("--workers applies to --scheduler local only (a running cluster has its own workers)")
        yield spec, _describe(spec, "client")
        return
    if spec == "local":
        n = n_workers or usable_cores()
        logger.info("starting a local Dask cluster: %d worker process(es) × %d thread(s)", n, threads_per_worker)
        with _environment_restored(), \
                LocalCluster(n_workers=n, threads_per_worker=threads_per_worker, processes=True,
                             dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
                Client(cluster, set_as_default=False) as client:
            yield client, _describe(client, "local")
        return
    if n_workers is not None:
        raise InputError(f"--workers applies to --scheduler local only (the cluster at {spec} has its own workers)")
    try:
        client = Client(spec, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise InputError(f"--scheduler {spec}: no Dask scheduler answers there ({type(exc).__name__}: {exc}); "
                         f"start one (dask scheduler, dask-jobqueue) or check the address") from None
    with client:
        info = _describe(client, "external")
        if not info["n_workers"]:
            logger.warning("the Dask cluster at %s has no worker yet: the shards wait for workers to join", spec)
        yield client, info


@contextlib.contextmanager
def _environment_restored() -> Iterator[None]:
    """This process's environment as it was before the block: a local cluster's nannies run here and
    put their workers' variables in it (``OMP_NUM_THREADS=1``, ``MALLOC_TRIM_THRESHOLD_`` ...), which
    later child processes would inherit."""
    import dask

    keys = set(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {}) | {"PYTHONHASHSEED"}
    before = {k: os.environ.get(k) for k in keys}
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _missing(paths: list[tuple[str, bool]]) -> list[str]:
    """Which of ``paths`` (path, must be writable) this process cannot see (run on each worker)."""
    bad = []
    for p, writable in paths:
        if not os.path.isdir(p):
            bad.append(f"{p} (not found)")
        elif writable and not os.access(p, os.W_OK | os.X_OK):
            bad.append(f"{p} (not writable)")
    return bad


def check_workers_see(client: "Client", read: list[str | Path] = (), write: list[str | Path] = ()) -> None:
    """Refuse a cluster whose workers do not see the folders the tasks read and write.

    Parameters
    ----------
    client : distributed.Client
        The cluster's client; every worker connected now is asked.
    read : list of str or Path
        Folders every worker must find (e.g. the data folder).
    write : list of str or Path
        Folders every worker must be able to write into (e.g. the training-set folder).

    Raises
    ------
    InputError
        A worker lacks one of them; the message names the worker, the folders and the remedy
        (a shared file system mounted at the same path on every node).
    """
    paths = [(str(Path(p).resolve()), False) for p in read] + [(str(Path(p).resolve()), True) for p in write]
    if not paths or not client.scheduler_info(n_workers=-1).get("workers"):
        return
    found = client.run(_missing, paths)
    bad = {w: m for w, m in found.items() if m}
    if bad:
        w, m = next(iter(sorted(bad.items())))
        raise InputError(f"Dask worker {w} (and {len(bad) - 1} other(s)) cannot use {', '.join(m)}: the training-set "
                         f"and data folders must be on a file system every worker shares, at the same path")


@dataclasses.dataclass
class TaskOutcome:
    """What became of one task of :func:`run_tasks`.

    Attributes
    ----------
    label : hashable
        The item's label (the key of the ``tasks`` mapping).
    ok : bool
        The task returned (after its retries, if any were needed).
    result : object
        Its return value (``None`` when it failed).
    error : BaseException or None
        The error of its last attempt, ``KilledWorker`` when its workers kept dying, or
        ``CancelledError`` when the scheduler lost it.
    """

    label: Hashable
    ok: bool
    result: Any = None
    error: BaseException | None = None


def run_tasks(client: "Client", fn: Callable[..., Any], tasks: dict[Hashable, tuple], *, retries: int = 2,
              key_prefix: str = "task") -> Iterator[TaskOutcome]:
    """Run ``fn(*args)`` for each item on the cluster; yield the outcomes as they complete.

    Each item is one ``client.submit`` (``pure=False``, key ``f"{key_prefix}-{label}"``) with
    ``retries`` further attempts after an error; a failed item does not stop the others. A
    result is released on the scheduler as soon as it is yielded (a worker that dies later
    does not make the task run again). Leaving the loop early (an exception, Ctrl-C) cancels
    the tasks not yet done.

    Parameters
    ----------
    client : distributed.Client
        The cluster.
    fn : callable
        A module-level (picklable) function; the workers import its module.
    tasks : dict
        ``{label: args}`` in submission order.
    retries : int
        Attempts after the first for a task that raises (≥ 0).
    key_prefix : str
        First part of the Dask keys (make it unique per run).

    Yields
    ------
    TaskOutcome
        One per item, in the order they complete.

    Raises
    ------
    InputError
        ``retries`` < 0.
    """
    from concurrent.futures import CancelledError

    from distributed import as_completed

    if retries < 0:
        raise InputError(f"retries must be ≥ 0, got {retries}")
    futures = {}
    for label, args in tasks.items():
        fut = client.submit(fn, *args, key=f"{key_prefix}-{label}", retries=retries, pure=False)
        futures[fut] = label
    try:
        for fut in as_completed(list(futures), loop=client.loop):
            label = futures.pop(fut)
            if fut.status == "finished":
                outcome = TaskOutcome(label, True, fut.result())
            else:
                try:
                    error = fut.exception()
                except CancelledError as exc:
                    error = exc
                outcome = TaskOutcome(label, False, None, error or CancelledError(f"task {fut.key} was cancelled"))
            fut.release()
            yield outcome
    finally:
        if futures:
            client.cancel(list(futures))


_CACHE: dict[Hashable, Any] = {}
_CACHE_LOCK = threading.Lock()


def worker_cached(key: Hashable, build: Callable[[], Any]) -> Any:
    """The object ``build()`` makes, kept in this process for the next task with the same ``key``.

    One entry is kept: a task with another key (a new run) drops the previous one.

    Parameters
    ----------
    key : hashable
        Identifies what is built (e.g. a token unique to one training-set run).
    build : callable
        Makes it (called once per process and key).

    Returns
    -------
    object
        The cached object.
    """
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE.clear()
            _CACHE[key] = build()
        return _CACHE[key]


def worker_peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far [MiB] (``getrusage``; ``None`` where unavailable).

    Returns
    -------
    float or None
        ``ru_maxrss`` in MiB (Linux reports KiB, macOS bytes).
    """
    try:
        import resource
        import sys
    except ImportError:  # pragma: no cover - not POSIX
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


#: glibc's ``mallopt`` parameter and the threshold restored in the workers (32 MiB: glibc's own
#: largest dynamic value on 64-bit).
_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES = -3, 32 * 2**20
_MALLOC_TUNED = False


def tune_worker_malloc() -> bool:
    """Undo, in this worker process, the glibc setting that halves the speed of the synthesis.

    Dask's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536``
    (``distributed.nanny.pre-spawn-environ``), to give freed memory back to the system. Setting
    any malloc threshold also switches off glibc's dynamic mmap threshold, so that every
    allocation above 128 KiB (most torch temporaries of the synthesis) is a fresh ``mmap`` whose
    pages fault in again: a training patch took 2.0× as long (measured, 10.1 s vs 5.0 s for a
    16×16 ``cpu``-geometry patch). This raises the mmap threshold to 32 MiB with ``mallopt``
    (glibc's own dynamic maximum); the trim threshold is left as Dask set it. It does nothing
    where no threshold is set in the environment, or outside glibc. Called once per process.

    Returns
    -------
    bool
        Whether the threshold was changed (now or by an earlier call).
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    if not any(k in os.environ for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_")):
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:  # the user chose it
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        _MALLOC_TUNED = bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):  # not glibc
        return False
    return _MALLOC_TUNED


def _fault_hook(label: str) -> None:
    """The test hook of the module docstring (nothing without ``HELIOFORGE_DASK_FAULTS``)."""
    folder = os.environ.get(FAULTS_ENV)
    if not folder:
        return
    kill = Path(folder) / f"kill-{label}"
    try:
        kill.unlink()
    except FileNotFoundError:
        pass
    else:
        logger.warning("test hook %s: ending this worker process (pid %d) in task %s", kill, os.getpid(), label)
        os._exit(17)
    if (Path(folder) / f"fail-{label}").exists():
        raise RuntimeError(f"injected failure of {label} (test hook {Path(folder) / f'fail-{label}'})")
