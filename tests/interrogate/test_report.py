"""The interrogator's report: its page and metrics.json show exactly the numbers the pipeline
returned, and its figures survive edge cases (a parameter with no defined value)."""

import json
import math
import warnings
from html.parser import HTMLParser

import matplotlib.image
import numpy as np
import pytest
import torch

from helioforge.config import SAMPLE_DIR
from helioforge.interrogate.config import get_profile
from helioforge.interrogate.evaluate import PAPER_CORRELATIONS
from helioforge.interrogate.pipeline import interrogate
from helioforge.interrogate.report import fig_histograms


class _Tables(HTMLParser):
    """Every ``<table>`` of a page as a list of rows of cell texts."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(" ".join(self._cell.split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _table(tables, first_header):
    return next(t for t in tables if t and t[0] and t[0][0] == first_header)


def _same(a, b):
    """JSON values equal, NaN (written as null by write_json) equal to itself."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and not math.isfinite(a):
        return b is None or (isinstance(b, float) and math.isnan(b) and math.isnan(a))
    return a == b


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """The tiny pipeline on the embedded sample (no data folder needed), one torch thread."""
    p = get_profile("tiny")
    p.data.sharp_dirs = (str(SAMPLE_DIR / "sharp"),)
    p.data.use_fulldisk = False
    work = tmp_path_factory.mktemp("report")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        metrics = interrogate(p, work, progress=False, accelerator="cpu")
    finally:
        torch.set_num_threads(n)
    return work / "report", metrics


def test_metrics_json_is_what_the_pipeline_returned(sample_run):
    report, m = sample_run
    on_disk = json.loads((report / "metrics.json").read_text())
    returned = json.loads(json.dumps(m, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    assert _same(returned, on_disk)


def test_page_shows_the_pipelines_numbers(sample_run):
    report, m = sample_run
    parser = _Tables()
    parser.feed((report / "index.html").read_text())
    f2 = lambda v: f"{v:.2f}"  # noqa: E731 - the page's format
    corr = _table(parser.tables, "parameter")
    assert [row[0] for row in corr[1:]] == list(m["correlations"])
    for row in corr[1:]:
        r = m["correlations"][row[0]]
        assert row[1] == f"{f2(r['pearson'])} [{f2(r['pearson_ci'][0])}, {f2(r['pearson_ci'][1])}]"
        assert row[2] == f"{f2(r['spearman'])} [{f2(r['spearman_ci'][0])}, {f2(r['spearman_ci'][1])}]"
        assert row[3] == f"{f2(r['paper_pearson'])} / {f2(r['paper_spearman'])}"
        assert row[4:7] == [f2(r.get(f"{k}_spearman", 0)) for k in ("shuffled", "activity", "oracle")]
        assert row[7] == str(r["n"])
    svm = _table(parser.tables, "direction")
    assert {row[0]: row[1] for row in svm[1:]} == {k: f"{v:.3f}" for k, v in m["svm_accuracy"].items()}
    assert {row[0]: row[3] for row in svm[1:]} == {k: f2(m["monotonicity"][k]["mean_rho"]) for k in m["svm_accuracy"]}
    health = _table(parser.tables, "check")
    assert [(row[0], row[1]) for row in health[1:]] == [(c["name"], f"{c['value']:.3f}") for c in m["health"]["checks"]]
    splits = _table(parser.tables, "database")
    assert len(splits) - 1 == len(m["retrieval_table"])
    for row, r in zip(splits[1:], m["retrieval_table"]):
        assert row[:5] == [r["database"], r["queries"], r["method"], str(r["n_database"]), str(r["n_queries"])]
        assert row[5].startswith(f2(r["TUF"]["spearman"]) + " [")
    page = (report / "index.html").read_text()
    assert f"{m['corpus']['n_patches']} real patches" in page
    assert f"Mean cosine score of the best match {m['match_cosine']['mean']:.3f}" in page


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
    img = matplotlib.image.imread(out)
    assert img.ndim == 3 and img.shape[1] > 3 * img.shape[0]  # one panel per parameter, side by side
    assert img[..., :3].std() > 0  # something was drawn
