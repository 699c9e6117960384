"""Behaviour on a shared CPU: OpenMP threads that sleep instead of spinning when idle.

PyTorch's CPU kernels run on OpenMP (libgomp). By default an idle OpenMP thread spins for a
while before it sleeps; with two threads on two cores and one other busy process, every
parallel region then waits for the thread that shares its core with the other process, and the
spinning thread steals that core's time as well (measured in ``benchmarks/bench_shared_cpu.py``).
``OMP_WAIT_POLICY=PASSIVE`` makes idle threads sleep at once. It must be in the environment
before the OpenMP runtime loads (before ``import torch``), so :mod:`helioforge` sets it on import;
a value the user already set is kept.
"""

from __future__ import annotations

import os

__all__ = ["set_openmp_wait_policy", "usable_cores"]


def set_openmp_wait_policy() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user set a policy (no effect once torch has
    loaded its OpenMP runtime)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity, e.g. a cluster job's allocation), ≥ 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
