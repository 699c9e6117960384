"""The two SICON networks and their input preprocessing (Asensio Ramos & Díaz Baso 2019, A&A 626, A102, §3).

Both networks map Hinode SP Stokes maps (I, Q, U, V × 112 wavelengths, quiet-Sun continuum
units) to 49 maps: 7 quantities (T, v_z, z, log P, B_Q, B_U, B_V) × 7 optical-depth surfaces
(log τ = 0 … −3), quantity-major (channel = 7 q + k), each min–max normalised to [0, 1]
(:class:`helioforge.inversion.model.TargetScaler`); the quantities and surfaces are those of
:mod:`helioforge.physics.sicon_targets`.

* :class:`EncoderDecoder` (§3.1, Fig. 2 top): residual sets of BatchNorm–ReLU–conv blocks, three
  stride-2 stages (32 → 64 → 128 → 256 channels at the paper width), bilinear ×2 decoder blocks,
  skips inside each set and between blocks of the same size, the continuum image added to the
  T and z outputs. ≈ 3.31 M parameters at width 32, as the paper states. Its input is
  :func:`encdec_inputs` (448 + 3 channels); H and W must be multiples of 8 and at least 16
  (the 1/8-size bottleneck is reflection-padded, which needs ≥ 2 pixels);
  :class:`helioforge.inversion.infer.SiconInverter` pads and crops maps of any size.
* :class:`Concatenate` (§3.2, Fig. 2 bottom): one mini-network per quantity of four 3×3
  reflection-padded convolutions with ELU (32, 32, 7, 7 channels; the last without
  activation), outputs concatenated. ≈ 0.99 M parameters (the paper: "∼1 M"). Any H, W ≥ 2.

The layer layout follows the authors' code (github aasensio/sicon, MIT:
``encdec/2019-03-27-15:02_-lr_0.0003.model.py`` and ``model_concat.py``), re-written here; the
upsampling is bilinear as the paper's text says (that file uses nearest).
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from helioforge.physics.sicon_targets import QUANTITIES, TARGET_LOG_TAU

__all__ = [
    "N_STOKES",
    "N_WAVELENGTHS",
    "N_DEPTHS",
    "N_QUANTITIES",
    "N_TARGETS",
    "ENCDEC_MULTIPLE",
    "ENCDEC_MIN_SIZE",
    "AMPLITUDE_FLOOR",
    "CONCAT_STOKES_SCALE",
    "CONTINUUM_QUANTITIES",
    "check_stokes",
    "log_amplitudes",
    "encdec_inputs",
    "concat_inputs",
    "ConvBlock",
    "EncoderDecoder",
    "Concatenate",
    "count_parameters",
]

log = logging.getLogger(__name__)

#: Stokes parameters I, Q, U, V.
N_STOKES = 4
#: Wavelengths of the standard Hinode SP grid (6300.89–6303.26 Å).
N_WAVELENGTHS = 112
#: Optical-depth surfaces and quantities of the targets (paper §2).
N_DEPTHS = len(TARGET_LOG_TAU)
N_QUANTITIES = len(QUANTITIES)
N_TARGETS = N_DEPTHS * N_QUANTITIES
#: The encoder–decoder halves the maps three times: H, W must be multiples of 2³ (§3.1) …
ENCDEC_MULTIPLE = 8
#: … and at least 16, so that the 1/8-size maps (≥ 2 pixels) can be reflection-padded.
ENCDEC_MIN_SIZE = 16
#: Lower threshold of the Q, U, V amplitude maps (§3.1; footnote 4: ≈ 0.1 works slightly
#: better on real Hinode data).
AMPLITUDE_FLOOR = 5e-3
#: Multipliers of I, Q, U, V for the concatenate network: the paper's "normalization 1 for
#: Stokes I and 0.1 for Stokes Q, U and V" read as the values the parameters are divided by.
CONCAT_STOKES_SCALE = (1.0, 10.0, 10.0, 10.0)
#: Quantities to which the encoder–decoder adds the continuum image (§3.1: "temperature and
#: Wilson depression").
CONTINUUM_QUANTITIES = ("T", "z")


def check_stokes(stokes: torch.Tensor, n_wavelengths: int = N_WAVELENGTHS, name: str = "stokes") -> torch.Tensor:
    """Check a batch of Stokes maps and return it as a float tensor (B, 4, nλ, H, W).

    Parameters
    ----------
    stokes : tensor or array (B, 4, nλ, H, W) or (4, nλ, H, W) (a batch of one is added).
    n_wavelengths : expected nλ (112 for the Hinode SP grid).
    name : what to call the input in error messages.

    Raises
    ------
    ValueError : wrong number of dimensions, of Stokes parameters (not 4: I, Q, U, V) or of
        wavelengths, an empty map, or non-finite values.
    """
    x = torch.as_tensor(stokes)
    if x.ndim == 4:
        x = x[None]
    if x.ndim != 5:
        raise ValueError(f"{name}: expected (4, {n_wavelengths}, H, W) or (B, 4, {n_wavelengths}, H, W), "
                         f"got shape {tuple(x.shape)}")
    if x.shape[1] != N_STOKES:
        raise ValueError(f"{name}: expected 4 Stokes parameters (I, Q, U, V) on axis -4, got {x.shape[1]} "
                         f"(shape {tuple(x.shape)})")
    if x.shape[2] != n_wavelengths:
        raise ValueError(f"{name}: expected {n_wavelengths} wavelengths (Hinode SP grid) on axis -3, got "
                         f"{x.shape[2]} (shape {tuple(x.shape)})")
    if x.shape[3] < 1 or x.shape[4] < 1:
        raise ValueError(f"{name}: empty map (shape {tuple(x.shape)})")
    if not x.is_floating_point():
        x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite values (mask or fill them first)")
    return x


def _n_wavelengths(stokes) -> int:
    """nλ of a (..., 4, nλ, H, W) input (any grid is accepted by the preprocessing)."""
    shape = getattr(stokes, "shape", None)
    return int(shape[-3]) if shape is not None and len(shape) >= 3 else N_WAVELENGTHS


def log_amplitudes(stokes: torch.Tensor, amplitude_floor: float = AMPLITUDE_FLOOR,
                   relative_to_continuum: bool = True) -> torch.Tensor:
    """log₁₀ of the floored Q, U, V amplitudes of each pixel (paper §3.1), before any offset.

    a = max_λ |S(λ)| / |I(λ₀)| (``relative_to_continuum``; I(λ₀) clamped at 10⁻³) or
    max_λ |S(λ)|, floored at ``amplitude_floor``; the result is log₁₀ a.

    Parameters
    ----------
    stokes : (B, 4, nλ, H, W) or (4, nλ, H, W), quiet-Sun continuum units.
    amplitude_floor, relative_to_continuum : as in :func:`encdec_inputs`.

    Returns
    -------
    float tensor (B, 3, H, W), dex: Q, U, V.

    Raises
    ------
    ValueError : see :func:`check_stokes`; ``amplitude_floor`` not positive.
    """
    return torch.log10(_amplitudes(check_stokes(stokes, _n_wavelengths(stokes)), amplitude_floor,
                                   relative_to_continuum))


def _amplitudes(x: torch.Tensor, amplitude_floor: float, relative_to_continuum: bool) -> torch.Tensor:
    """Floored Q, U, V amplitudes (B, 3, H, W) of checked Stokes maps (B, 4, nλ, H, W)."""
    if not amplitude_floor > 0:
        raise ValueError(f"amplitude_floor must be positive, got {amplitude_floor}")
    amp = x[:, 1:].abs().amax(dim=2)  # (B, 3, H, W)
    if relative_to_continuum:
        amp = amp / x[:, 0, 0].abs().clamp_min(1e-3)[:, None]
    return amp.clamp_min(amplitude_floor)


def encdec_inputs(stokes: torch.Tensor, amplitude_floor: float = AMPLITUDE_FLOOR,
                  relative_to_continuum: bool = True,
                  log_amplitude_offset: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
    """Input of the encoder–decoder: 4 nλ Stokes channels with Q, U, V amplitude-normalised, plus
    the 3 log amplitude maps (paper §3.1).

    For each pixel and each of Q, U, V the maximum amplitude a = max_λ |S(λ)| / I(λ₀) (relative
    to the pixel's continuum, the first SP wavelength, as in the authors' code; the plain
    max_λ |S| with ``relative_to_continuum=False``) is floored at ``amplitude_floor`` and S is
    divided by it. The three maps log₁₀ a minus a fixed offset per parameter are appended.

    The offset must be the one the network was trained with: the mean of log₁₀ a over the
    training set (:func:`helioforge.inversion.train.log_amplitude_offset`, stored in the
    weights' JSON sidecar, ``preprocessing.log_amplitude_offset``), so that a pixel gets the
    same input whether it sits in a 16×16 training patch or in a 512×512 active-region map.
    ``log_amplitude_offset=None`` subtracts the mean of each map over (H, W) instead: the
    authors' code and this package before issue 13; it makes a pixel's input depend on the
    rest of the map (+0.75 dex for V in a 64×64 map with one magnetic quadrant against a
    16×16 quiet patch) and is not used by training or inversion any more.

    Parameters
    ----------
    stokes : (B, 4, nλ, H, W) or (4, nλ, H, W), quiet-Sun continuum units.
    amplitude_floor : lower threshold of a (paper 5e-3; footnote 4: ≈ 0.1 on real data).
    relative_to_continuum : measure a relative to I(λ₀) of each pixel.
    log_amplitude_offset : 3 numbers (Q, U, V), dex, subtracted from log₁₀ a; ``None``: the
        per-map mean (legacy, see above).

    Returns
    -------
    float tensor (B, 4 nλ + 3, H, W) (451 channels for the SP grid): channel 112 s + j is
    Stokes s at wavelength j (channel 0 is the continuum image I(λ₀)), channels 4 nλ … 4 nλ + 2
    the log amplitude maps of Q, U, V.

    Raises
    ------
    ValueError : see :func:`check_stokes`; ``amplitude_floor`` not positive;
        ``log_amplitude_offset`` not 3 finite numbers.
    """
    x = check_stokes(stokes, _n_wavelengths(stokes))
    B, _, nl, H, W = x.shape
    amp = _amplitudes(x, amplitude_floor, relative_to_continuum)  # (B, 3, H, W)
    pol = x[:, 1:]  # (B, 3, nλ, H, W)
    normed = torch.cat([x[:, :1], pol / amp[:, :, None]], dim=1).reshape(B, N_STOKES * nl, H, W)
    scale = torch.log10(amp)
    if log_amplitude_offset is None:
        scale = scale - scale.mean(dim=(2, 3), keepdim=True)
    else:
        off = torch.as_tensor(log_amplitude_offset, dtype=scale.dtype, device=scale.device).reshape(-1)
        if off.numel() != N_STOKES - 1 or not bool(torch.isfinite(off).all()):
            raise ValueError(f"log_amplitude_offset must be 3 finite numbers (Q, U, V), got {log_amplitude_offset}")
        scale = scale - off[None, :, None, None]
    return torch.cat([normed, scale], dim=1)


def concat_inputs(stokes: torch.Tensor, scale: Sequence[float] = CONCAT_STOKES_SCALE) -> torch.Tensor:
    """Input of the concatenate network: I, Q, U, V multiplied by ``scale`` and stacked (§3.2).

    The paper normalises "1 for Stokes I and 0.1 for Stokes Q, U and V"; we read these as the
    values divided by, so Q, U, V are multiplied by 10 and reach the order of unity as I
    ("makes all Stokes parameters have roughly the same order of magnitude"). (The authors'
    ``evaluate_concat.py`` multiplies Q and U by 10 but V by 1: pass ``(1, 10, 10, 1)`` for that.)

    Parameters
    ----------
    stokes : (B, 4, nλ, H, W) or (4, nλ, H, W), quiet-Sun continuum units.
    scale : multipliers of I, Q, U, V.

    Returns
    -------
    float tensor (B, 4 nλ, H, W) (448 channels), channel 112 s + j = Stokes s at wavelength j.

    Raises
    ------
    ValueError : see :func:`check_stokes`; ``scale`` not 4 numbers.
    """
    if len(scale) != N_STOKES:
        raise ValueError(f"scale must give 4 multipliers (I, Q, U, V), got {scale}")
    x = check_stokes(stokes, _n_wavelengths(stokes))
    B, _, nl, H, W = x.shape
    s = torch.as_tensor(scale, dtype=x.dtype, device=x.device)[None, :, None, None, None]
    return (x * s).reshape(B, N_STOKES * nl, H, W)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``.

    Parameters
    ----------
    module : torch.nn.Module
        The network.

    Returns
    -------
    int
        Total elements of the parameters with ``requires_grad`` (paper width 32: 3,311,223 for
        :class:`EncoderDecoder`, 985,425 for :class:`Concatenate`).
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class ConvBlock(nn.Module):
    """BatchNorm → ReLU → [bilinear ×2 upsampling] → reflection padding → conv (§3.1).

    Gray blocks: ``kernel_size=3``; pink: ``kernel_size=1``; blue: ``stride=2`` (halves H, W);
    orange: ``upsample=True`` (doubles H, W). Kaiming-normal weights, bias 0.1 (authors' code).

    Parameters
    ----------
    in_channels, out_channels : channels.
    kernel_size : 3 or 1.
    stride : 1 or 2.
    upsample : bilinear ×2 upsampling before the convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 upsample: bool = False) -> None:
        super().__init__()
        self.upsample = upsample
        self.bn = nn.BatchNorm2d(in_channels)
        self.pad = nn.ReflectionPad2d((kernel_size - 1) // 2)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=1 if upsample else stride)
        nn.init.kaiming_normal_(self.conv.weight)
        nn.init.constant_(self.conv.bias, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Parameters
        ----------
        x : torch.Tensor
            Feature maps (B, in_channels, H, W).

        Returns
        -------
        torch.Tensor
            (B, out_channels, H', W') with H' = H, ⌈H/2⌉ (stride 2) or 2H (upsample); W' alike.
        """
        out = F.relu(self.bn(x))
        if self.upsample:
            out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=False)
        return self.conv(self.pad(out))


class _ResidualSet(nn.Module):
    """A set of blocks whose last output is added to the output of the first (skip inside the set)."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        first = self.blocks[0](x)
        if skip is not None:  # skip from the encoder block of the same size
            first = first + skip
        out = first
        for block in self.blocks[1:]:
            out = block(out)
        return out + first


class EncoderDecoder(nn.Module):
    """SICON's encoder–decoder (paper §3.1, Fig. 2 top; authors' ``model_encdec``).

    Layout (w = ``width``; N the input size)::

        A   3×3 in → w                                   N
        E1  stride-2 w → 2w, 3×3, 3×3, 1×1   (+ skip)    N/2
        E2  3×3 ×3, 1×1 at 2w                (+ skip)    N/2
        E3  stride-2 2w → 4w, 3×3 ×2, 1×1    (+ skip)    N/4
        E4  stride-2 4w → 8w, 3×3 ×2, 1×1    (+ skip)    N/8
        D1  up 8w → 4w (+ E3), 3×3 ×3        (+ skip)    N/4
        D2  up 4w → 2w (+ E2), 3×3 ×3        (+ skip)    N/2
        D3  up 2w → 2w, 3×3 ×2, conv 1×1 → out           N

    and the continuum image (input channel 0) is added to the T and z outputs.

    Parameters
    ----------
    in_channels : 4 nλ + 3 = 451 (:func:`encdec_inputs`).
    out_channels : 49 (7 quantities × 7 log τ, quantity-major).
    width : channels of the first block (paper 32: 3,311,223 parameters with 451 → 49).
    continuum_quantities : names (of T, vz, z, logP, BQ, BU, BV) of the output groups to which
        the continuum image is added; ``()`` for none.
    n_depths : log τ surfaces per quantity (7).

    Raises
    ------
    ValueError : unknown quantity name, or ``out_channels`` not 7 × ``n_depths`` while
        ``continuum_quantities`` is given.
    """

    size_multiple = ENCDEC_MULTIPLE
    min_size = ENCDEC_MIN_SIZE

    def __init__(self, in_channels: int = N_STOKES * N_WAVELENGTHS + 3, out_channels: int = N_TARGETS,
                 width: int = 32, continuum_quantities: Sequence[str] = CONTINUUM_QUANTITIES,
                 n_depths: int = N_DEPTHS) -> None:
        super().__init__()
        w = int(width)
        self.in_channels, self.out_channels, self.width = int(in_channels), int(out_channels), w
        self.A = ConvBlock(in_channels, w)
        self.E1 = _ResidualSet([ConvBlock(w, 2 * w, stride=2), ConvBlock(2 * w, 2 * w), ConvBlock(2 * w, 2 * w),
                                ConvBlock(2 * w, 2 * w, kernel_size=1)])
        self.E2 = _ResidualSet([ConvBlock(2 * w, 2 * w), ConvBlock(2 * w, 2 * w), ConvBlock(2 * w, 2 * w),
                                ConvBlock(2 * w, 2 * w, kernel_size=1)])
        self.E3 = _ResidualSet([ConvBlock(2 * w, 4 * w, stride=2), ConvBlock(4 * w, 4 * w), ConvBlock(4 * w, 4 * w),
                                ConvBlock(4 * w, 4 * w, kernel_size=1)])
        self.E4 = _ResidualSet([ConvBlock(4 * w, 8 * w, stride=2), ConvBlock(8 * w, 8 * w), ConvBlock(8 * w, 8 * w),
                                ConvBlock(8 * w, 8 * w, kernel_size=1)])
        self.D1 = _ResidualSet([ConvBlock(8 * w, 4 * w, upsample=True), ConvBlock(4 * w, 4 * w),
                                ConvBlock(4 * w, 4 * w), ConvBlock(4 * w, 4 * w)])
        self.D2 = _ResidualSet([ConvBlock(4 * w, 2 * w, upsample=True), ConvBlock(2 * w, 2 * w),
                                ConvBlock(2 * w, 2 * w), ConvBlock(2 * w, 2 * w)])
        self.D3 = nn.Sequential(ConvBlock(2 * w, 2 * w, upsample=True), ConvBlock(2 * w, 2 * w),
                                ConvBlock(2 * w, 2 * w))
        self.head = nn.Conv2d(2 * w, out_channels, kernel_size=1)
        nn.init.kaiming_normal_(self.head.weight)
        nn.init.constant_(self.head.bias, 0.1)
        mask = torch.zeros(out_channels)
        self.continuum_quantities = tuple(continuum_quantities)
        for q in self.continuum_quantities:
            if q not in QUANTITIES:
                raise ValueError(f"unknown quantity {q!r}; choose among {QUANTITIES}")
            if out_channels != len(QUANTITIES) * n_depths:
                raise ValueError(f"continuum_quantities needs out_channels = 7 × {n_depths}, got {out_channels}")
            i = QUANTITIES.index(q)
            mask[i * n_depths:(i + 1) * n_depths] = 1.0
        self.register_buffer("continuum_mask", mask[None, :, None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Invert preprocessed Stokes maps (paper §3.1).

        Parameters
        ----------
        x : torch.Tensor
            Inputs (B, in_channels, H, W) from :func:`encdec_inputs` (channel 0: the continuum
            image, added to the ``continuum_quantities`` outputs).

        Returns
        -------
        torch.Tensor
            (B, out_channels, H, W): normalised targets, quantity-major (channel 7 q + k).

        Raises
        ------
        ValueError
            H or W is not a multiple of 8 (:data:`ENCDEC_MULTIPLE`) or is below 16
            (:data:`ENCDEC_MIN_SIZE`).
        """
        H, W = x.shape[-2:]
        if H % self.size_multiple or W % self.size_multiple or min(H, W) < self.min_size:
            raise ValueError(f"EncoderDecoder needs H, W multiples of {self.size_multiple} and ≥ {self.min_size}, "
                             f"got {H}×{W} (pad the map: SiconInverter does)")
        a = self.A(x)
        e1 = self.E1(a)
        e2 = self.E2(e1)
        e3 = self.E3(e2)
        e4 = self.E4(e3)
        d1 = self.D1(e4, skip=e3)
        d2 = self.D2(d1, skip=e2)
        out = self.head(self.D3(d2))
        return out + self.continuum_mask * x[:, :1]


class _MiniNetwork(nn.Module):
    """Four 3×3 reflection-padded convolutions for one quantity (§3.2): ELU after the first
    three, a residual add after the second (authors' ``myblock``), none after the last."""

    def __init__(self, in_channels: int, width: int, out_channels: int) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.c1 = nn.Conv2d(in_channels, width, 3)
        self.c2 = nn.Conv2d(width, width, 3)
        self.c3 = nn.Conv2d(width, out_channels, 3)
        self.c4 = nn.Conv2d(out_channels, out_channels, 3)
        for c in (self.c1, self.c2, self.c3, self.c4):
            nn.init.kaiming_normal_(c.weight)
            nn.init.zeros_(c.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.elu(self.c1(self.pad(x)))
        h = F.elu(self.c2(self.pad(h))) + h
        h = F.elu(self.c3(self.pad(h)))
        return self.c4(self.pad(h))


class Concatenate(nn.Module):
    """SICON's concatenate network (paper §3.2, Fig. 2 bottom; authors' ``model_concat.keepsize``).

    One mini-network per quantity (3×3 reflection-padded conv + ELU with 32 and 32 channels,
    then 7 with ELU, then 7 without activation; receptive field 9×9 pixels), the outputs
    concatenated in quantity order. Keeps the map size: any H, W ≥ 2.

    Parameters
    ----------
    in_channels : 4 nλ = 448 (:func:`concat_inputs`).
    n_quantities, n_depths : 7 and 7 (output = n_quantities × n_depths channels).
    width : channels of the first two convolutions (paper 32: 985,425 parameters).

    Raises ``ValueError`` in ``forward`` for H or W below 2.
    """

    size_multiple = 1
    min_size = 2

    def __init__(self, in_channels: int = N_STOKES * N_WAVELENGTHS, n_quantities: int = N_QUANTITIES,
                 n_depths: int = N_DEPTHS, width: int = 32) -> None:
        super().__init__()
        self.in_channels, self.width = int(in_channels), int(width)
        self.out_channels = int(n_quantities * n_depths)
        self.branches = nn.ModuleList(_MiniNetwork(in_channels, width, n_depths) for _ in range(n_quantities))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Invert preprocessed Stokes maps (paper §3.2).

        Parameters
        ----------
        x : torch.Tensor
            Inputs (B, in_channels, H, W) from :func:`concat_inputs`.

        Returns
        -------
        torch.Tensor
            (B, n_quantities × n_depths, H, W): the mini-networks' outputs concatenated in
            quantity order (channel n_depths q + k).

        Raises
        ------
        ValueError
            H or W is below 2 (reflection padding).
        """
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(f"Concatenate needs H, W ≥ {self.min_size} (reflection padding), got "
                             f"{tuple(x.shape[-2:])}")
        return torch.cat([b(x) for b in self.branches], dim=1)
