"""GAN generator and discriminator for magnetogram patches (Chatterjee et al. 2025, §Methods).

The paper uses "a simple CNN-based decoder" ending in tanh for the generator and "a CNN-based
encoder" ending in a sigmoid for the discriminator. We follow the DCGAN layout (Radford et al.
2016) with two stabilising changes measured on the real corpus: upsample-convolution stages in
the generator and spectral normalisation in the discriminator.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["Generator", "Discriminator"]

_sn = nn.utils.parametrizations.spectral_norm


def _n_stages(image_size: int) -> int:
    n = int(math.log2(image_size)) - 2
    if image_size < 8 or 2 ** (n + 2) != image_size:
        raise ValueError(f"image_size must be a power of two ≥ 8, got {image_size}")
    return n


class Generator(nn.Module):
    """z (B, latent_dim) ~ N(0, I) → image (B, 1, N, N) in [-1, 1] (tanh; paper §Results).

    A CNN decoder: a linear projection to 4×4, then stages of nearest-neighbour ×2 upsampling
    + 3×3 convolution + batch norm + ReLU up to N×N, and a 3×3 convolution with tanh.
    Upsample-convolution instead of transposed convolution avoids the checkerboard artefacts
    (Odena et al. 2016) that dominated the first CPU runs on magnetograms.

    Parameters
    ----------
    latent_dim : size of z (paper 100).
    image_size : N, a power of two ≥ 8 (paper 128).
    base_channels : width of the last stage; widths double towards the input, capped at
        8 × base_channels.

    Raises ``ValueError`` for an image size that is not a power of two ≥ 8.
    """

    def __init__(self, latent_dim: int = 100, image_size: int = 128, base_channels: int = 64):
        super().__init__()
        self.latent_dim = latent_dim
        self.image_size = image_size
        n = _n_stages(image_size)
        widths = [base_channels * min(2 ** (n - 1 - i), 8) for i in range(n)] + [base_channels]
        self.project = nn.Sequential(
            nn.Linear(latent_dim, widths[0] * 16, bias=False),
            nn.Unflatten(1, (widths[0], 4, 4)),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        for i in range(n):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(widths[i], widths[i + 1], 3, 1, 1, bias=False),
                nn.BatchNorm2d(widths[i + 1]),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.Conv2d(widths[-1], 1, 3, 1, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Generate images G(z).

        Parameters
        ----------
        z : torch.Tensor
            Latent vectors (B, latent_dim), drawn from N(0, I).

        Returns
        -------
        torch.Tensor
            Images (B, 1, N, N) in [-1, 1] (tanh), N = ``image_size``.
        """
        return self.body(self.project(z))


class Discriminator(nn.Module):
    """Image (B, 1, N, N) → probability of being real (B, 1) through a sigmoid (paper §Results).

    :meth:`logits` returns the pre-sigmoid score; the training loss uses it with
    ``binary_cross_entropy_with_logits``, which is the paper's BCE (eqs. 1–2) computed stably.
    Every layer is spectrally normalised (Miyato et al. 2018) instead of batch-normalised: with
    a few hundred real patches an unconstrained discriminator wins within one epoch
    (accuracy 1.0, vanishing generator gradients); the Lipschitz bound keeps the game going.
    """

    def __init__(self, image_size: int = 128, base_channels: int = 64):
        super().__init__()
        n = _n_stages(image_size)
        widths = [base_channels * min(2**i, 8) for i in range(n)]
        layers: list[nn.Module] = [_sn(nn.Conv2d(1, widths[0], 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
        for i in range(n - 1):
            layers += [_sn(nn.Conv2d(widths[i], widths[i + 1], 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), _sn(nn.Linear(widths[-1] * 16, 1)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid score, used by the loss with ``binary_cross_entropy_with_logits``.

        Parameters
        ----------
        x : torch.Tensor
            Images (B, 1, N, N), N = ``image_size``.

        Returns
        -------
        torch.Tensor
            Logits (B, 1).
        """
        return self.head(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """D(x): probability that each image is real (paper §Results).

        Parameters
        ----------
        x : torch.Tensor
            Images (B, 1, N, N), N = ``image_size``.

        Returns
        -------
        torch.Tensor
            Probabilities (B, 1) in (0, 1), ``sigmoid(logits(x))``.
        """
        return torch.sigmoid(self.logits(x))
