"""Progress that works on a terminal and in a log.

On a terminal (stderr is a TTY) long steps show a tqdm bar. Anywhere else (``2>log``, CI, a
batch job) a bar would be one endless line of carriage returns, so the same steps write a plain
log line through :mod:`logging` (logger ``helioforge.progress``) each time another ~10 % is done
or 30 s have passed, with the count, elapsed time, ETA and the step's latest numbers (loss ...).

Used by every step longer than a few seconds: GAN, SimSiam, diffusion and SICON training
(:class:`helioforge.nn.training.LogProgress`, a Lightning callback), SVM sampling, diffusion sampling, training-set
synthesis, file reading and downloads (:func:`track`, :func:`progress_bar`).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Iterable, Iterator, TypeVar

__all__ = ["stderr_is_terminal", "track", "progress_bar", "LogBar"]

log = logging.getLogger("helioforge.progress")
T = TypeVar("T")

#: A log line at least every this many seconds ...
LOG_EVERY_S = 30.0
#: ... and every time this fraction of the work is done.
LOG_EVERY_FRACTION = 0.10


def stderr_is_terminal() -> bool:
    """Whether progress goes to a terminal (stderr is a TTY)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _hms(seconds: float) -> str:
    seconds = int(round(max(seconds, 0.0)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class LogBar:
    """A progress counter that writes log lines (every 10 % or 30 s) instead of drawing a bar.

    Same calls as the tqdm bars it replaces: ``update(n)``, ``set_postfix(**numbers)``,
    ``close()``; also a context manager.

    Parameters
    ----------
    total : expected count (``None``: unknown, then lines come every 30 s only).
    desc : name of the step, first word of each line.
    unit : what is counted (``"epoch"``, ``"patch"`` ...).
    initial : count already done (a resumed run).
    """

    def __init__(self, total: int | None, desc: str, unit: str = "it", initial: int = 0) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self.start_n = int(initial)
        self.t0 = self._last_t = time.monotonic()
        self._last_fraction = (initial / total) if total else 0.0
        self.postfix: dict[str, Any] = {}
        self._closed = False

    def set_postfix(self, **numbers: Any) -> None:
        """Numbers shown at the end of the next line (e.g. ``loss=0.12``)."""
        self.postfix.update(numbers)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more; write a line when 10 % more is done or 30 s have passed.

        A line is also written when the count reaches ``total``.

        Parameters
        ----------
        n : int
            Units done since the previous call.
        """
        self.n += n
        now = time.monotonic()
        fraction = self.n / self.total if self.total else 0.0
        done = self.total is not None and self.n >= self.total
        if done or now - self._last_t >= LOG_EVERY_S or (self.total and fraction - self._last_fraction >= LOG_EVERY_FRACTION - 1e-9):
            self._emit(now)

    def _emit(self, now: float) -> None:
        self._last_t = now
        elapsed = now - self.t0
        parts = [f"{self.desc}: {self.n}"]
        if self.total:
            self._last_fraction = self.n / self.total
            parts[0] += f"/{self.total} {self.unit} ({100 * self._last_fraction:.0f} %)"
            rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
            eta = (self.total - self.n) / rate if rate > 0 else float("nan")
            parts.append(f"elapsed {_hms(elapsed)}")
            parts.append(f"ETA {_hms(eta)}" if eta == eta else "ETA ?")
        else:
            parts[0] += f" {self.unit}"
            parts.append(f"elapsed {_hms(elapsed)}")
        if self.postfix:
            parts.append(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.postfix.items()))
        log.info(", ".join(parts))

    def close(self) -> None:
        """End the step (writes a last line if the count moved since the previous one)."""
        if not self._closed:
            self._closed = True
            if self.n != self.start_n and time.monotonic() != self._last_t and (self.total is None or self.n < self.total):
                self._emit(time.monotonic())

    def __enter__(self) -> "LogBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(total: int | None, desc: str, unit: str = "it", initial: int = 0, disable: bool = False, leave: bool = True):
    """A tqdm bar on a terminal, a :class:`LogBar` elsewhere, a silent :class:`LogBar` when
    ``disable``.

    Parameters
    ----------
    total : int or None
        Expected count (``None``: unknown).
    desc : str
        Name of the step.
    unit : str
        What is counted.
    initial : int
        Count already done (a resumed run).
    disable : bool
        Show and log nothing.
    leave : bool
        Keep the tqdm bar on the terminal when it closes (ignored by :class:`LogBar`).

    Returns
    -------
    tqdm.tqdm or LogBar
        An object with ``update``, ``set_postfix`` and ``close``.
    """
    if disable:
        bar = LogBar(total, desc, unit, initial)
        bar._emit = lambda now: None  # type: ignore[method-assign]
        return bar
    if stderr_is_terminal():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=leave)
    return LogBar(total, desc, unit, initial)


def track(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it", disable: bool = False,
          leave: bool = True) -> Iterator[T]:
    """Iterate with progress: a tqdm bar on a terminal, log lines (10 % / 30 s) elsewhere.

    Parameters
    ----------
    iterable : iterable
        The items.
    desc : str
        Name of the step.
    total : int, optional
        Expected number of items; defaults to ``len(iterable)`` when it has one.
    unit : str
        What is counted.
    disable : bool
        Show and log nothing.
    leave : bool
        Keep the tqdm bar on the terminal when done.

    Yields
    ------
    object
        The items of ``iterable``; the bar is closed when the loop ends or is left.
    """
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    bar = progress_bar(total, desc, unit, disable=disable, leave=leave)
    try:
        for item in iterable:
            yield item
            bar.update(1)
    finally:
        bar.close()
