"""SimSiam network (Chen & He 2020, arXiv:2011.10566), as used by Chatterjee et al. (2025).

backbone f (ResNet-18, 1-channel stem) → projection MLP g (3 layers, BN, output BN) → z;
prediction MLP h (bottleneck) → p. Loss D(p1, sg(z2))/2 + D(p2, sg(z1))/2 with
D(p, z) = −cos(p, z) (paper eq. for L, with stop-gradient sg).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from helioforge.nn.resnet import ResNet18

__all__ = ["SimSiam", "negative_cosine"]


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean of −cos(p, z) over the batch, with stop-gradient on ``z`` (Chen & He 2020, eqs. 1 and 3).

    Parameters
    ----------
    p : torch.Tensor
        Predictions (B, d).
    z : torch.Tensor
        Projections (B, d) of the other view; detached.

    Returns
    -------
    torch.Tensor
        Scalar loss in [-1, 1].
    """
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


class SimSiam(nn.Module):
    """SimSiam with a one-channel ResNet-18 encoder.

    Parameters
    ----------
    out_dim : representation size (paper 100).
    proj_hidden : hidden width of the projection MLP.
    pred_hidden : bottleneck width of the prediction MLP.
    width : ResNet-18 first-stage width (64 = original).

    :meth:`embed` maps images (B, 1, N, N) to the projection z (B, out_dim), the vector the
    retrieval index stores.
    """

    def __init__(self, out_dim: int = 100, proj_hidden: int = 512, pred_hidden: int = 64, width: int = 64):
        super().__init__()
        self.backbone = ResNet18(1, width)
        d = self.backbone.out_dim
        self.projector = nn.Sequential(
            nn.Linear(d, proj_hidden, bias=False),
            nn.BatchNorm1d(proj_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(proj_hidden, proj_hidden, bias=False),
            nn.BatchNorm1d(proj_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(proj_hidden, out_dim, bias=False),
            nn.BatchNorm1d(out_dim, affine=False),
        )
        self.predictor = nn.Sequential(
            nn.Linear(out_dim, pred_hidden, bias=False),
            nn.BatchNorm1d(pred_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(pred_hidden, out_dim),
        )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Projection z of images: the retrieval representation.

        Parameters
        ----------
        x : torch.Tensor
            Images (B, 1, N, N).

        Returns
        -------
        torch.Tensor
            z (B, out_dim), after the projector's output batch norm.
        """
        return self.projector(self.backbone(x))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Symmetric SimSiam loss for two views of the same images.

        L = D(p1, sg(z2))/2 + D(p2, sg(z1))/2 with D = :func:`negative_cosine` (Chen & He 2020,
        eq. 4).

        Parameters
        ----------
        x1, x2 : torch.Tensor
            The two augmented views (B, 1, N, N).

        Returns
        -------
        (torch.Tensor, torch.Tensor)
            The scalar loss in [-1, 1], and the projection z1 (B, out_dim) of the first view
            (for the collapse monitor).
        """
        z1, z2 = self.embed(x1), self.embed(x2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1)), z1
