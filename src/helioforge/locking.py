"""One lock per work folder: two helioforge processes never build in the same folder at once.

The lock is ``<folder>/.helioforge.lock`` held with the :mod:`filelock` library (an OS lock,
released by the kernel when the process dies, so a killed run leaves no stale lock);
``<folder>/.helioforge.lock.json`` says who holds it (PID, command, start time) for the
message the second process prints.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import sys
from pathlib import Path
from typing import Iterator

from helioforge.errors import FolderInUse

__all__ = ["workdir_lock", "LOCK_NAME"]

LOCK_NAME = ".helioforge.lock"


@contextlib.contextmanager
def workdir_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the work folder's lock for the block (the folder is created if missing).

    Re-entrant within one process (a pipeline step inside a locked command takes it again).
    DDP ranks other than 0 pass through (rank 0, which launched them, holds the lock).

    Raises
    ------
    FolderInUse : another process holds it; the message names its PID, command and start time.
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if _ddp_worker():  # Lightning re-runs the command in every extra DDP rank: rank 0 holds the lock
        yield folder
        return
    lock_path = folder / LOCK_NAME
    info = folder / (LOCK_NAME + ".json")
    key = str(lock_path.resolve())
    lock = _LOCKS.get(key)
    if lock is None:
        lock = _LOCKS[key] = FileLock(str(lock_path), timeout=0)
    first = not lock.is_locked
    try:
        lock.acquire()
    except Timeout:
        who = "another process"
        try:
            d = json.loads(info.read_text())
            who = f"PID {d.get('pid')} ({d.get('command', '?')}) since {d.get('since', '?')}"
        except (OSError, ValueError):
            pass
        raise FolderInUse(f"{folder}: work folder in use by {who}; wait for it to finish, stop it, "
                          "or use another folder") from None
    try:
        if first:
            info.write_text(json.dumps({"pid": os.getpid(), "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:200],
                                        "since": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}))
        yield folder
    finally:
        lock.release()


_LOCKS: dict[str, object] = {}


def _ddp_worker() -> bool:
    """Whether this process is a DDP rank other than 0 (started by Lightning's launcher)."""
    for var in ("LOCAL_RANK", "NODE_RANK"):
        try:
            if int(os.environ.get(var, "0")) > 0:
                return True
        except ValueError:
            continue
    return False
