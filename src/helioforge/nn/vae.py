"""A small convolutional variational autoencoder (Kingma & Welling 2014), the network of the
evaluation feature space (Ramunno et al. 2024, §6: the latent space of a ceVAE, Zimmerer et al.
2018, trained on SDO images, is where the cluster metrics are computed).

Encoder: stride-2 4×4 convolutions (GroupNorm, LeakyReLU) from N×N down to 4×4, doubling the
channels up to 8×width, then two linear heads for the posterior mean μ and log-variance
log σ². Decoder: the mirror image (linear → 4×4 → stride-2 transposed convolutions → N×N)
with a tanh output, so that reconstructions live in the images' [-1, 1] range.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ConvVAE", "kl_divergence"]


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups (independent of the batch, unlike BatchNorm)."""
    groups = math.gcd(8, channels)
    return nn.GroupNorm(groups, channels)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) ‖ N(0, I)) per sample, summed over the latent dimensions.

    KL = −½ Σ_j (1 + log σ_j² − μ_j² − σ_j²) (Kingma & Welling 2014, appendix B).

    Parameters
    ----------
    mu : torch.Tensor
        Posterior means μ (B, d).
    logvar : torch.Tensor
        Posterior log-variances log σ² (B, d).

    Returns
    -------
    torch.Tensor
        KL divergence per sample (B,), nats.
    """
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)


class ConvVAE(nn.Module):
    """Convolutional VAE for square images.

    Parameters
    ----------
    image_size : N, side of the (B, in_channels, N, N) inputs; a power of two ≥ 8.
    latent_dim : size d of the latent space (posterior mean μ ∈ R^d).
    width : channels of the first convolution; doubled at each stride-2 step, capped at 8×width.
    in_channels : image channels (1 for AIA 171 Å).

    Raises
    ------
    ValueError
        If ``image_size`` is not a power of two ≥ 8, or a size is not positive.
    """

    def __init__(self, image_size: int, latent_dim: int = 64, width: int = 32, in_channels: int = 1):
        super().__init__()
        if image_size < 8 or image_size & (image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
        if latent_dim < 1 or width < 1 or in_channels < 1:
            raise ValueError("latent_dim, width and in_channels must be positive, "
                             f"got {latent_dim}, {width}, {in_channels}")
        self.image_size = image_size
        self.latent_dim = latent_dim
        self.width = width
        self.in_channels = in_channels
        n_down = int(math.log2(image_size // 4))
        chans = [min(width * 2**i, 8 * width) for i in range(n_down)]

        enc: list[nn.Module] = []
        c_in = in_channels
        for c in chans:
            enc += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), _norm(c), nn.LeakyReLU(0.2, inplace=True)]
            c_in = c
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        flat = chans[-1] * 4 * 4
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_logvar = nn.Linear(flat, latent_dim)

        self._top = chans[-1]
        self.fc_dec = nn.Linear(latent_dim, flat)
        dec: list[nn.Module] = []
        rev = chans[::-1]
        for c, c_out in zip(rev, rev[1:] + [width]):
            dec += [nn.ConvTranspose2d(c, c_out, 4, stride=2, padding=1), _norm(c_out), nn.LeakyReLU(0.2, inplace=True)]
        self.decoder = nn.Sequential(*dec, nn.Conv2d(width, in_channels, 3, padding=1), nn.Tanh())

    def encode_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters of images.

        Parameters
        ----------
        x : torch.Tensor
            Images (B, in_channels, N, N), in [-1, 1].

        Returns
        -------
        (torch.Tensor, torch.Tensor)
            μ and log σ², each (B, latent_dim); log σ² is clamped to [-30, 20].
        """
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h).clamp(-30.0, 20.0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior mean of images: the feature vector of the evaluation (Ramunno et al. 2024, §6).

        Parameters
        ----------
        x : torch.Tensor
            Images (B, in_channels, N, N), in [-1, 1].

        Returns
        -------
        torch.Tensor
            μ (B, latent_dim).
        """
        return self.encode_posterior(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images from latent vectors.

        Parameters
        ----------
        z : torch.Tensor
            Latent vectors (B, latent_dim).

        Returns
        -------
        torch.Tensor
            Images (B, in_channels, N, N) in [-1, 1] (tanh).
        """
        h = self.fc_dec(z).view(-1, self._top, 4, 4)
        return self.decoder(h)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Reparameterisation trick (Kingma & Welling 2014, §2.4).

        Parameters
        ----------
        mu, logvar : torch.Tensor
            Posterior μ and log σ², each (B, latent_dim).

        Returns
        -------
        torch.Tensor
            z = μ + σ ε with ε ~ N(0, I), σ = exp(log σ² / 2), in training mode; μ in eval mode.
            Shape (B, latent_dim).
        """
        if not self.training:
            return mu
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode, sample and decode.

        Parameters
        ----------
        x : torch.Tensor
            Images (B, in_channels, N, N), in [-1, 1].

        Returns
        -------
        (torch.Tensor, torch.Tensor, torch.Tensor)
            ``(recon, mu, logvar)``: reconstruction (B, in_channels, N, N) in [-1, 1] from a
            posterior sample (the mean in eval mode), and the posterior parameters
            (B, latent_dim) each.
        """
        mu, logvar = self.encode_posterior(x)
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar
