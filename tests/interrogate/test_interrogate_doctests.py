"""The runnable ``Examples`` of the interrogator's entry points (numpydoc docstrings) run as
tests: :func:`helioforge.interrogate.infer.magnetogram_params` (array, Quantity and units),
:func:`~helioforge.interrogate.infer.parse_moves`, :func:`~helioforge.interrogate.calibrate.fit_response`,
:func:`~helioforge.interrogate.calibrate.parse_physical_move` and
:func:`helioforge.physics.params.as_value`. No data folder and no network needed."""

import doctest

import pytest

import helioforge.interrogate.calibrate
import helioforge.interrogate.infer
import helioforge.physics.params


@pytest.mark.parametrize("module", [helioforge.interrogate.infer, helioforge.interrogate.calibrate, helioforge.physics.params],
                         ids=lambda m: m.__name__)
def test_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
