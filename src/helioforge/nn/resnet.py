"""ResNet-18 backbone with a one-channel stem (He et al. 2016), for the SimSiam encoder.

Written here because torchvision cannot be imported on the target machines. Layout as in
the original: 7×7/2 conv stem + 3×3/2 max-pool, four stages of two BasicBlocks with widths
w, 2w, 4w, 8w (w = 64 in the original), global average pooling.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicBlock", "ResNet18"]


class BasicBlock(nn.Module):
    """Two 3×3 conv + BN layers with an identity (or 1×1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block: ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x)).

        Parameters
        ----------
        x : torch.Tensor
            Feature maps (B, c_in, H, W).

        Returns
        -------
        torch.Tensor
            (B, c_out, ⌈H/stride⌉, ⌈W/stride⌉).
        """
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18: (B, in_channels, H, W) → features (B, 8·width).

    Parameters
    ----------
    in_channels : 1 for magnetograms.
    width : channels of the first stage (64 in He et al.; smaller for CPU profiles).
    """

    def __init__(self, in_channels: int = 1, width: int = 64):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages = []
        c_in = width
        for i, c_out in enumerate([width, 2 * width, 4 * width, 8 * width]):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out)))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = 8 * width
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features of images.

        Parameters
        ----------
        x : torch.Tensor
            Images (B, in_channels, H, W).

        Returns
        -------
        torch.Tensor
            Globally average-pooled features (B, 8·width) (= ``out_dim``).
        """
        return torch.flatten(self.pool(self.stages(self.stem(x))), 1)
