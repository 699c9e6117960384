"""The ``Examples`` section of the SICON inference entry point runs (fast, no data)."""

from __future__ import annotations

import doctest

import torch

import helioforge.inversion.infer


def test_doctests(one_torch_thread):
    torch.manual_seed(0)
    res = doctest.testmod(helioforge.inversion.infer, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                          verbose=False)
    assert res.attempted > 0 and res.failed == 0
