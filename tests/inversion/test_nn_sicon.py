"""SICON networks and input preprocessing (helioforge.nn.sicon; paper §3)."""

from __future__ import annotations

import math

import pytest
import torch

from helioforge.nn.sicon import (
    CONCAT_STOKES_SCALE,
    Concatenate,
    EncoderDecoder,
    check_stokes,
    concat_inputs,
    count_parameters,
    encdec_inputs,
)


def _conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


def _encdec_count(cin: int, cout: int, w: int) -> int:
    """Parameters of the layout in the EncoderDecoder docstring: conv weights + biases, and
    2 × C_in per BatchNorm (every block but the final 1×1 head has one)."""
    blocks = [(cin, w, 3)]
    blocks += [(w, 2 * w, 3), (2 * w, 2 * w, 3), (2 * w, 2 * w, 3), (2 * w, 2 * w, 1)]
    blocks += [(2 * w, 2 * w, 3)] * 3 + [(2 * w, 2 * w, 1)]
    blocks += [(2 * w, 4 * w, 3), (4 * w, 4 * w, 3), (4 * w, 4 * w, 3), (4 * w, 4 * w, 1)]
    blocks += [(4 * w, 8 * w, 3), (8 * w, 8 * w, 3), (8 * w, 8 * w, 3), (8 * w, 8 * w, 1)]
    blocks += [(8 * w, 4 * w, 3)] + [(4 * w, 4 * w, 3)] * 3
    blocks += [(4 * w, 2 * w, 3)] + [(2 * w, 2 * w, 3)] * 3
    blocks += [(2 * w, 2 * w, 3)] * 3
    return sum(_conv(a, b, k) + 2 * a for a, b, k in blocks) + _conv(2 * w, cout, 1)


def test_parameter_counts_match_paper():
    # §3.1: "~3.31 million free parameters"; §3.2: "~1 M free parameters"
    enc = EncoderDecoder()
    assert count_parameters(enc) == _encdec_count(451, 49, 32) == 3_311_223
    cat = Concatenate()
    per_branch = _conv(448, 32, 3) + _conv(32, 32, 3) + _conv(32, 7, 3) + _conv(7, 7, 3)
    assert count_parameters(cat) == 7 * per_branch == 985_425
    assert count_parameters(EncoderDecoder(width=8)) == _encdec_count(451, 49, 8)


@pytest.mark.parametrize("H,W", [(16, 16), (16, 24), (32, 16)])
def test_encdec_shapes(one_torch_thread, H, W):
    net = EncoderDecoder(width=4).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 451, H, W)).shape == (2, 49, H, W)


@pytest.mark.parametrize("H,W", [(12, 16), (16, 20), (8, 8)])
def test_encdec_rejects_sizes_it_cannot_keep(H, W):
    with pytest.raises(ValueError, match="multiples of 8"):
        EncoderDecoder(width=4)(torch.randn(1, 451, H, W))


@pytest.mark.parametrize("H,W", [(5, 7), (13, 13), (2, 3)])
def test_concat_keeps_any_size(one_torch_thread, H, W):
    net = Concatenate(width=4)
    assert net(torch.randn(1, 448, H, W)).shape == (1, 49, H, W)
    with pytest.raises(ValueError, match="≥ 2"):
        net(torch.randn(1, 448, 1, 5))


def test_encdec_adds_continuum_to_T_and_z_only(one_torch_thread):
    net = EncoderDecoder(width=4).eval()
    torch.nn.init.zeros_(net.head.weight)
    torch.nn.init.zeros_(net.head.bias)
    x = torch.randn(1, 451, 16, 16)
    with torch.no_grad():
        y = net(x)
    cont = x[:, 0]
    for q in range(7):
        expected = cont if q in (0, 2) else torch.zeros_like(cont)  # T = 0-6, z = 14-20
        for k in range(7):
            assert torch.equal(y[:, 7 * q + k], expected)
    # no continuum anywhere
    net2 = EncoderDecoder(width=4, continuum_quantities=()).eval()
    torch.nn.init.zeros_(net2.head.weight)
    torch.nn.init.zeros_(net2.head.bias)
    with torch.no_grad():
        assert torch.count_nonzero(net2(x)) == 0
    with pytest.raises(ValueError, match="unknown quantity"):
        EncoderDecoder(width=4, continuum_quantities=("Bx",))


def test_concat_mini_networks_are_independent(one_torch_thread):
    net = Concatenate(width=4)
    x = torch.randn(1, 448, 6, 6)
    y = net(x)
    y[:, 14:21].sum().backward()  # quantity 2 (z) only
    for q, branch in enumerate(net.branches):
        grads = [p.grad for p in branch.parameters()]
        if q == 2:
            assert all(g is not None and g.abs().sum() > 0 for g in grads)
        else:
            assert all(g is None or g.abs().sum() == 0 for g in grads)


def test_concat_receptive_field_is_9x9(one_torch_thread):
    net = Concatenate(width=4)
    x = torch.randn(1, 448, 21, 21, requires_grad=True)
    net(x)[0, :, 10, 10].sum().backward()
    hit = x.grad[0].abs().sum(0) > 0
    rows, cols = torch.nonzero(hit, as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (6, 14, 6, 14)


def _stokes(H=3, W=4, nl=112, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.zeros(1, 4, nl, H, W)
    s[:, 0] = 1.0 + 0.01 * torch.randn(1, nl, H, W, generator=g)
    s[:, 1:] = 1e-4 * torch.randn(1, 3, nl, H, W, generator=g)
    return s


def test_encdec_inputs_amplitude_normalisation():
    s = _stokes()
    s[0, 0, 0] = 0.5  # continuum image (I at the first wavelength)
    s[0, 1, 40, 0, 0] = -0.02  # strong Q at pixel (0, 0): |Q|/I_c = 0.04
    s[0, 3, 60, 1, 2] = 0.003  # V at pixel (1, 2): 0.006 relative, above the 5e-3 floor
    s[0, 2, :, 2, 3] = 0.0
    s[0, 2, 10, 2, 3] = 1e-3  # weak U at (2, 3): 0.002 relative → floored at 5e-3
    x = encdec_inputs(s)
    assert x.shape == (1, 451, 3, 4)
    assert torch.equal(x[0, :112], s[0, 0])  # Stokes I untouched, channel 0 = continuum image
    q = x[0, 112:224]
    u = x[0, 224:336]
    v = x[0, 336:448]
    # the strongest |Q| of pixel (0, 0) becomes I_c (amplitude relative to the local continuum)
    assert q[40, 0, 0] == pytest.approx(-0.5, rel=1e-5)
    assert v[60, 1, 2] == pytest.approx(0.5, rel=1e-5)
    assert u[10, 2, 3] == pytest.approx(1e-3 / 5e-3, rel=1e-5)  # below the floor: divided by 5e-3
    # log amplitude maps, minus their mean over the map
    amp_q = (s[0, 1].abs().amax(0) / s[0, 0, 0]).clamp_min(5e-3)
    logq = torch.log10(amp_q)
    assert torch.allclose(x[0, 448], logq - logq.mean(), atol=1e-6)
    assert x[0, 448:].mean(dim=(1, 2)).abs().max() < 1e-6
    assert logq[0, 0] == pytest.approx(math.log10(0.04), rel=1e-5)
    # a larger floor (paper footnote 4) and the plain-amplitude variant
    x2 = encdec_inputs(s, amplitude_floor=0.1)
    assert q[40, 0, 0] != x2[0, 112 + 40, 0, 0]
    assert x2[0, 112 + 40, 0, 0] == pytest.approx(-0.02 / 0.1, rel=1e-5)
    x3 = encdec_inputs(s, relative_to_continuum=False)
    assert x3[0, 112 + 40, 0, 0] == pytest.approx(-1.0, rel=1e-5)
    with pytest.raises(ValueError, match="positive"):
        encdec_inputs(s, amplitude_floor=0.0)
    # unbatched input gets a batch axis
    assert encdec_inputs(s[0]).shape == (1, 451, 3, 4)


def test_concat_inputs_scaling():
    s = _stokes()
    x = concat_inputs(s)
    assert x.shape == (1, 448, 3, 4)
    for i, f in enumerate(CONCAT_STOKES_SCALE):
        assert torch.allclose(x[0, 112 * i:112 * (i + 1)], f * s[0, i])
    assert CONCAT_STOKES_SCALE == (1.0, 10.0, 10.0, 10.0)
    y = concat_inputs(s, (1, 10, 10, 1))  # the authors' evaluate_concat.py
    assert torch.allclose(y[0, 336:], s[0, 3])
    with pytest.raises(ValueError, match="4 multipliers"):
        concat_inputs(s, (1, 10))


def test_check_stokes_errors():
    with pytest.raises(ValueError, match="4 Stokes parameters"):
        check_stokes(torch.zeros(3, 112, 4, 4))
    with pytest.raises(ValueError, match="112 wavelengths"):
        check_stokes(torch.zeros(1, 4, 100, 4, 4))
    with pytest.raises(ValueError, match="shape"):
        check_stokes(torch.zeros(4, 112, 4))
    with pytest.raises(ValueError, match="NaN"):
        bad = torch.zeros(4, 112, 2, 2)
        bad[1, 3, 0, 0] = float("nan")
        check_stokes(bad)
    with pytest.raises(ValueError, match="empty"):
        check_stokes(torch.zeros(4, 112, 0, 3))
    assert check_stokes(torch.zeros(4, 112, 2, 3, dtype=torch.int32)).dtype.is_floating_point
