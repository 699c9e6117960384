"""Small CNN flare-class classifier for full-disk images (stand-in for the paper's DeiT).

Ramunno et al. (2024, §4 and §8.1) classify 64×64 SDO/AIA 171 Å full-disk images into the
GOES flare classes A, B, C, M, X with a DeiT backbone (Touvron et al. 2021, through timm).
timm/torchvision cannot be imported here, and a vision transformer is a poor fit for a few
thousand 64×64 images anyway, so we substitute a small convolutional network:

* a 3×3 conv–BN–ReLU stem at full resolution (``width`` channels);
* stride-2 stages, each conv(3×3, stride 2)–BN–ReLU then conv(3×3)–BN–ReLU, doubling the
  channels (capped at 8·width) until the feature map is 4×4 (64 → 4 stages, 16 → 2 stages);
* global average pooling → dropout → linear head giving the class logits.

The classifier is only used as a *measuring instrument* (macro F1 of real vs generated
images, §4) and as the model whose minority-class accuracy the augmentation experiment
tracks (§8.1); both uses need a consistent classifier, not the paper's exact backbone.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["FlareClassifier"]


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class FlareClassifier(nn.Module):
    """CNN mapping images (B, 1, N, N) to flare-class logits (B, n_classes).

    Parameters
    ----------
    image_size : side N of the square input images, in pixels (paper: 64). At least 8.
    n_classes : number of flare classes (5: A, B, C, M, X).
    width : channels of the stem; stage k has ``min(width·2^k, 8·width)`` channels.
    dropout : dropout probability before the linear head.

    Raises
    ------
    ValueError
        For ``image_size < 8``, ``n_classes < 2``, ``width < 1`` or dropout outside [0, 1).

    Notes
    -----
    Substitute for the DeiT backbone of Ramunno et al. (2024, §4); see the module docstring.
    """

    def __init__(self, image_size: int, n_classes: int = 5, width: int = 32, dropout: float = 0.2):
        super().__init__()
        if int(image_size) < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
        if int(n_classes) < 2:
            raise ValueError(f"n_classes must be at least 2, got {n_classes}")
        if int(width) < 1:
            raise ValueError(f"width must be positive, got {width}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.image_size = int(image_size)
        self.n_classes = int(n_classes)
        self.width = int(width)
        n_down = max(1, int(math.floor(math.log2(self.image_size))) - 2)  # down to ~4×4
        layers: list[nn.Module] = [_conv_bn_relu(1, self.width, 1)]
        c = self.width
        for k in range(1, n_down + 1):
            c_out = min(self.width * 2**k, 8 * self.width)
            layers += [_conv_bn_relu(c, c_out, 2), _conv_bn_relu(c_out, c_out, 1)]
            c = c_out
        self.body = nn.Sequential(*layers)
        self.out_dim = c
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(float(dropout))
        self.head = nn.Linear(c, self.n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled feature vector of images (global average of the last stage).

        Parameters
        ----------
        x : torch.Tensor
            Images (B, 1, N, N), in [-1, 1].

        Returns
        -------
        torch.Tensor
            Features (B, out_dim), ``out_dim = min(width·2^k, 8·width)`` of the last stage k.

        Raises
        ------
        ValueError
            ``x`` is not 4-D with one channel.
        """
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"images must be (B, 1, N, N), got {tuple(x.shape)}")
        return self.pool(self.body(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of images.

        Parameters
        ----------
        x : torch.Tensor
            Images (B, 1, N, N), in [-1, 1].

        Returns
        -------
        torch.Tensor
            Logits (B, n_classes) (pre-softmax), classes in the order A, B, C, M, X.

        Raises
        ------
        ValueError
            ``x`` is not 4-D with one channel (:meth:`features`).
        """
        return self.head(self.dropout(self.features(x)))
