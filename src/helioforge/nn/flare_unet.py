"""The conditional denoiser of Ramunno et al. (2024): a diffusers ``UNet2DModel`` (U-Net with
self-attention, paper App. B) whose time embedding receives the flare condition.

Two conditionings (paper §4):

* ``class``: the GOES class (A, B, C, M, X → 0..4) through an ``nn.Embedding`` whose vectors have
  the width of the time-step embedding; an extra index (5) is the *null* class used for
  classifier-free guidance (Ho & Salimans 2022).
* ``flux``: log10 of the GOES 1–8 Å flux (W m⁻²) through two linear layers to the same width
  ("encode it with a sequence of two linear layers ... and then we sum them up"); the null
  condition is a learned vector, selected where the input flux is NaN.

The condition vector enters as ``class_labels`` of a ``UNet2DModel`` built with
``class_embed_type="identity"``, which adds it to the time embedding.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from torch import nn

__all__ = ["FlareUNet", "LOG10_FLUX_CENTRE", "LOG10_FLUX_SCALE"]

#: log10 flux is centred and scaled before the MLP: (log10 F − (−6)) / 2 maps A0…X10 to ≈ [−1, 1.5].
LOG10_FLUX_CENTRE = -6.0
LOG10_FLUX_SCALE = 2.0


class FlareUNet(nn.Module):
    """Noise predictor ε_θ(x_t, t, c).

    Parameters
    ----------
    image_size : N of the N×N single-channel images.
    condition : ``"class"`` or ``"flux"``.
    n_classes : number of discrete classes (5: A, B, C, M, X); index ``n_classes`` is the null.
    block_out_channels, attention, layers_per_block, norm_num_groups : U-Net shape (see
        :class:`helioforge.diffusion.config.UNetConfig`).

    Raises ``ValueError`` for an unknown condition, mismatched ``attention``, or an
    ``image_size`` not divisible by 2^(levels − 1).
    """

    def __init__(self, image_size: int, condition: str = "class", n_classes: int = 5,
                 block_out_channels: tuple[int, ...] = (64, 128, 256, 256),
                 attention: tuple[bool, ...] = (False, True, True, True), layers_per_block: int = 2,
                 norm_num_groups: int = 32) -> None:
        super().__init__()
        if condition not in ("class", "flux"):
            raise ValueError(f"condition must be 'class' or 'flux', got {condition!r}")
        if len(attention) != len(block_out_channels):
            raise ValueError(f"attention {attention} needs one entry per level {block_out_channels}")
        if image_size % (2 ** (len(block_out_channels) - 1)):
            raise ValueError(f"image_size {image_size} is not divisible by 2^{len(block_out_channels) - 1}")
        self.condition, self.n_classes, self.image_size = condition, n_classes, image_size
        down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention)
        up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention))
        self.unet = UNet2DModel(
            sample_size=image_size, in_channels=1, out_channels=1, block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block, down_block_types=down, up_block_types=up,
            class_embed_type="identity", norm_num_groups=norm_num_groups, attention_head_dim=None,
        )
        width = block_out_channels[0] * 4  # diffusers' time-embedding width
        if condition == "class":
            self.embed = nn.Embedding(n_classes + 1, width)
        else:
            self.embed = nn.Sequential(nn.Linear(1, width), nn.SiLU(), nn.Linear(width, width))
            self.null = nn.Parameter(torch.zeros(width))

    @property
    def null_index(self) -> int:
        """Index of the null class (``n_classes``)."""
        return self.n_classes

    def null_condition(self, n: int, device=None) -> torch.Tensor:
        """``n`` null (unconditional) conditions, for classifier-free guidance.

        Parameters
        ----------
        n : int
            Batch size.
        device : torch.device or str, optional
            Device of the result.

        Returns
        -------
        torch.Tensor
            (n,): the null class index :attr:`null_index` (long) for ``condition="class"``, NaN
            log10 flux (float) for ``condition="flux"``.
        """
        if self.condition == "class":
            return torch.full((n,), self.null_index, dtype=torch.long, device=device)
        return torch.full((n,), float("nan"), device=device)

    def embed_condition(self, cond: torch.Tensor) -> torch.Tensor:
        """Condition vectors added to the U-Net's time embedding (paper §4).

        Parameters
        ----------
        cond : torch.Tensor
            (B,) class indices 0..n_classes (``null_index`` = unconditional) for
            ``condition="class"``; log10 of the GOES 1–8 Å flux in W m⁻² (NaN = unconditional)
            for ``condition="flux"``, scaled as (log10 F + 6) / 2 before the two linear layers.

        Returns
        -------
        torch.Tensor
            (B, width) with ``width = 4 · block_out_channels[0]``; the learned null vector where
            the flux is NaN.
        """
        if self.condition == "class":
            return self.embed(cond.long())
        cond = cond.float()
        null = torch.isnan(cond)
        scaled = ((torch.nan_to_num(cond, nan=LOG10_FLUX_CENTRE) - LOG10_FLUX_CENTRE) / LOG10_FLUX_SCALE)[:, None]
        return torch.where(null[:, None], self.null.expand(len(cond), -1), self.embed(scaled))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predicted noise ε_θ(x_t, t, c).

        Parameters
        ----------
        x : torch.Tensor
            Noisy images x_t (B, 1, N, N).
        t : torch.Tensor
            (B,) integer diffusion steps (a scalar is broadcast by diffusers).
        cond : torch.Tensor
            (B,) conditions, as in :meth:`embed_condition`.

        Returns
        -------
        torch.Tensor
            Predicted noise (B, 1, N, N).
        """
        return self.unet(x, t, class_labels=self.embed_condition(cond)).sample
