"""The ``Examples`` of the shared core run as written (numpydoc examples are doctests)."""

import doctest

import pytest

import helioforge.config
import helioforge.reporting


@pytest.mark.parametrize("module", [helioforge.config, helioforge.reporting], ids=lambda m: m.__name__)
def test_core_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module.__name__} has no examples"
    assert result.failed == 0
