"""Report figures on edge cases: a parameter with no defined value must not break the figure."""

import warnings

import numpy as np

from helioforge.interrogate.pipeline import PAPER_CORRELATIONS
from helioforge.interrogate.report import fig_histograms


def test_histograms_with_an_undefined_parameter(tmp_path):
    rng = np.random.default_rng(0)
    q = {k: rng.random(50) * 100 for k in PAPER_CORRELATIONS}
    m = {k: v + rng.random(50) for k, v in q.items()}
    q["PSEP"][:] = np.nan  # no query has both polarities
    corr = {k: {"pearson": 0.5, "spearman": 0.5, "paper_pearson": p, "paper_spearman": s}
            for k, (p, s) in PAPER_CORRELATIONS.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = fig_histograms(q, m, {k: rng.random(200) * 100 for k in q}, corr, tmp_path / "h.png")
    assert out.stat().st_size > 0
