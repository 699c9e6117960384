"""Compiled kernels on several cores without OpenMP: contiguous slices on a pool of Python threads.

The numba kernels of :mod:`helioforge.physics.lte_fused`,
:mod:`helioforge.physics.hydrostatic_fused` and :mod:`helioforge.physics.params` release the GIL (``nogil=True``) and work on
independent columns, so a batch split into contiguous slices runs in parallel on ordinary
threads. numba's own ``parallel=True`` was not used: with its OpenMP threading layer the worker
threads spin-wait after a kernel returns, and on this 2-core machine the torch code that runs
between two kernel calls (the training-set chain alternates both) became ten times slower.
Threads of this pool sleep when idle. A column is computed by the same code whatever the
slicing, so the results do not depend on the number of threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
import torch

__all__ = ["run_in_slices"]

_POOL: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    if threads not in _POOL:
        _POOL[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"helioforge-{threads}")
    return _POOL[threads]


def run_in_slices(fn: Callable[[slice], None], n: int, threads: int | None = None) -> None:
    """Call ``fn(slice)`` on contiguous slices covering ``range(n)``, one per thread.

    Parameters
    ----------
    fn : callable
        ``fn(sl)`` processes items ``sl`` (writing its results in place); it should release the
        GIL (a ``numba.njit(nogil=True)`` kernel) for the slices to run in parallel.
    n : int
        Number of items (columns, atmospheres).
    threads : int, optional
        Number of slices; default :func:`torch.get_num_threads` (so torch and the kernels obey
        one setting), at most ``n``.

    Raises
    ------
    Exception
        Whatever ``fn`` raises (from the first failing slice).
    """
    threads = max(1, min(int(threads or torch.get_num_threads()), n))
    if threads == 1:
        if n:
            fn(slice(0, n))
        return
    bounds = np.linspace(0, n, threads + 1).astype(int)
    slices = [slice(int(bounds[k]), int(bounds[k + 1])) for k in range(threads)]
    list(_pool(threads).map(fn, slices))
