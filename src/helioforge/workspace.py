"""Bookkeeping of a work folder shared by the pipelines: which step's product is current.

Each step records the digest of the configuration (and of its inputs) that made its product
in ``state.json``; a later run reuses the product only when the digest matches and the files
exist, and a step is un-marked before it is rebuilt, so an interrupted rebuild is never taken
for the old product.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helioforge.io import write_json

__all__ = ["StepState"]


@dataclass
class StepState:
    """Step bookkeeping of the work folder ``root`` (created if missing)."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    state_file = property(lambda self: self.root / "state.json")

    def state(self) -> dict[str, Any]:
        """The work folder's bookkeeping: step → digest of the configuration that made it."""
        return json.loads(self.state_file.read_text()) if self.state_file.is_file() else {}

    def mark(self, step: str, digest: str) -> None:
        """Record that ``step``'s product is complete and was made with ``digest``."""
        state = self.state()
        state[step] = digest
        write_json(self.state_file, state)

    def unmark(self, step: str) -> None:
        """Forget that ``step``'s product is current (called before it is rebuilt)."""
        state = self.state()
        if state.pop(step, None) is not None:
            write_json(self.state_file, state)

    def record_time(self, step: str, seconds: float) -> None:
        """Remember how long making ``step``'s product took (shown in later reports)."""
        state = self.state()
        state.setdefault("training_s", {})[step] = round(seconds, 1)
        write_json(self.state_file, state)

    def is_current(self, step: str, digest: str, *paths: Path) -> bool:
        """Whether ``step`` was completed with ``digest`` and its files all exist."""
        return self.state().get(step) == digest and all(p.exists() for p in paths)
