"""The ``Examples`` sections of the diffusion entry points run (fast, no data)."""

from __future__ import annotations

import doctest

import pytest
import torch

import helioforge.data.aia
import helioforge.diffusion.config
import helioforge.diffusion.infer


@pytest.mark.parametrize("module", [helioforge.diffusion.infer, helioforge.diffusion.config, helioforge.data.aia],
                         ids=lambda m: m.__name__)
def test_doctests(module, one_torch_thread):
    torch.manual_seed(0)
    res = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert res.attempted > 0 and res.failed == 0
