"""SVM latent directions, conditional manipulation and the Fig. 4 projection on analytic cases."""

import numpy as np
import pytest

from helioforge.interrogate.config import DirectionsConfig
from helioforge.interrogate.directions import (
    LatentDirections,
    conditional_direction,
    conditioning_effect,
    fit_directions,
    monotonicity,
    project_2d,
    traverse,
)


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def test_conditional_direction_single_condition_is_paper_formula():
    rng = np.random.default_rng(0)
    a, b = _unit(rng.normal(size=10)), _unit(rng.normal(size=10))
    paper = (a - (a @ b) * b) / np.linalg.norm(a - (a @ b) * b)
    np.testing.assert_allclose(conditional_direction(a, [b]), paper, atol=1e-12)


def test_conditional_direction_multiple_conditions_orthogonal_unit():
    rng = np.random.default_rng(1)
    x, c1, c2 = (_unit(rng.normal(size=20)) for _ in range(3))
    d = conditional_direction(x, [c1, c2])
    assert np.linalg.norm(d) == pytest.approx(1.0)
    assert abs(d @ c1) < 1e-10 and abs(d @ c2) < 1e-10
    assert d @ x > 0
    with pytest.raises(ValueError, match="span"):
        conditional_direction(c1 + c2, [c1, c2])


def _synthetic(n=2000, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, dim))
    n_tuf, n_r, n_psep, n_pol = (_unit(rng.normal(size=dim)) for _ in range(4))
    params = {
        "TUF": np.exp(z @ n_tuf),
        "R": z @ n_r,
        "PSEP": 10 + z @ n_psep,
        "leading_sign": np.sign(z @ n_pol),
    }
    return z, params, {"TUF": n_tuf, "R": n_r, "PSEP": n_psep, "polarity": n_pol}


def test_fit_directions_recovers_true_normals():
    z, params, truth = _synthetic()
    d = fit_directions(z, params, DirectionsConfig(n_samples=len(z)))
    for name, n in truth.items():
        assert d.get(name) @ n > 0.95, name
        assert d.accuracy[name] > 0.9
        assert d.n_train[name] == 1400 and d.n_val[name] == 600  # 70/30


def test_unfittable_direction_is_skipped_with_its_reason():
    z, params, _ = _synthetic(200)
    params["leading_sign"] = np.ones(200)  # never a negative leading polarity
    params["PSEP"] = np.full(200, np.nan)  # never both polarities
    d = fit_directions(z, params, DirectionsConfig())
    assert set(d.normals) == {"TUF", "R"}
    assert "polarity" in d.skipped and "PSEP" in d.skipped and "both polarities" in d.skipped["PSEP"]
    assert not d.has("psep") and d.has("tuf", "r")
    with pytest.raises(KeyError, match="both polarities"):
        d.get("psep")
    params["TUF"] = params["R"] = np.ones(200)  # ties: nothing above the median
    with pytest.raises(ValueError, match="no latent direction"):
        fit_directions(z, params, DirectionsConfig())


def test_save_load_round_trip(tmp_path):
    z, params, _ = _synthetic(500)
    d = fit_directions(z, params, DirectionsConfig())
    d.save(tmp_path / "d.json")
    back = LatentDirections.load(tmp_path / "d.json")
    np.testing.assert_allclose(back.get("tuf"), d.get("TUF"))
    assert back.accuracy == d.accuracy


def test_traverse_and_monotonicity_of_linear_parameters():
    z, params, truth = _synthetic(1000)
    d = fit_directions(z, params, DirectionsConfig())

    def params_of_z(zz):
        return {"TUF": np.exp(zz @ truth["TUF"]), "R": zz @ truth["R"], "PSEP": 10 + zz @ truth["PSEP"],
                "leading_sign": np.sign(zz @ truth["polarity"])}

    base = np.random.default_rng(5).standard_normal((50, 16))
    zz = traverse(base, d.get("TUF"), [-1, 0, 1])
    assert zz.shape == (150, 16)
    np.testing.assert_allclose(zz[1], base[0])
    mono = monotonicity(base, d, params_of_z, np.linspace(-3, 3, 7))
    for name in ("TUF", "PSEP", "R"):
        assert mono[name]["mean_rho"] == pytest.approx(1.0)
    assert mono["polarity"]["pooled_rho"] > 0.5


def test_conditioning_removes_the_change_of_r():
    rng = np.random.default_rng(3)
    dim = 12
    n_r = _unit(rng.normal(size=dim))
    n_tuf = _unit(n_r + rng.normal(size=dim))  # TUF direction entangled with R
    d = LatentDirections({"TUF": n_tuf, "R": n_r, "PSEP": n_r, "polarity": n_r}, {k: 0.0 for k in ("TUF", "R", "PSEP", "polarity")}, {})

    def params_of_z(zz):
        return {"TUF": 5 + zz @ n_tuf, "R": 5 + zz @ n_r}

    res = conditioning_effect(rng.standard_normal((50, dim)), d, params_of_z, 2.0)
    assert res["R_change_reduction"] == pytest.approx(1.0, abs=1e-9)  # R is linear: fully removed
    assert 0 < res["TUF_change_kept"] < 1


def test_project_2d_turns_the_hyperplane_into_the_line():
    rng = np.random.default_rng(2)
    n = _unit(rng.normal(size=8))
    b = 0.3
    z = rng.standard_normal((100, 8))
    z_on = z - ((z @ n + b)[:, None]) * n[None, :]  # points on the hyperplane n·z + b = 0
    p = project_2d(z_on, n)
    np.testing.assert_allclose(p[:, 1], -(n[0] * p[:, 0] + b) / n[1], atol=1e-10)
