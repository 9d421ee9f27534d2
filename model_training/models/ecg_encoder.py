"""A 1-D ResNet ECG encoder in the xresnet1d style: [B, leads, samples] → embedding [B, E].

xresnet1d (Strodthoff et al., PTB-XL benchmark) is a strong, CPU-friendly baseline on
100 Hz 12-lead ECGs: a three-convolution stem, residual stages that halve the length,
then concatenated average and max pooling over time.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _conv_bn(in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv1d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm1d(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """Two convolutions with an identity (or average-pool + 1×1) shortcut, as in xresnet."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(in_ch, out_ch, kernel_size, stride=stride),
            _conv_bn(out_ch, out_ch, kernel_size, relu=False),
        )
        shortcut: list[nn.Module] = []
        if stride != 1:
            shortcut.append(nn.AvgPool1d(stride, ceil_mode=True))
        if in_ch != out_ch:
            shortcut.append(_conv_bn(in_ch, out_ch, 1, relu=False))
        self.shortcut = nn.Sequential(*shortcut)
        # Zero-initialised last BN: each block starts as the identity (xresnet's trick for stable early training).
        nn.init.zeros_(self.body[1][1].weight)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class EcgEncoder(nn.Module):
    """xresnet1d: a stem, then ``len(widths)`` stages of ``blocks_per_stage`` blocks, pooled, projected to E."""

    def __init__(
        self,
        *,
        in_leads: int = 12,
        stem_width: int = 32,
        widths: tuple[int, ...] = (32, 64, 96, 128),
        blocks_per_stage: int = 1,
        kernel_size: int = 5,
        embedding_dim: int = 128,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.stem = nn.Sequential(
            _conv_bn(in_leads, stem_width, kernel_size, stride=2),
            _conv_bn(stem_width, stem_width, kernel_size),
            _conv_bn(stem_width, stem_width, kernel_size),
            nn.MaxPool1d(3, stride=2, padding=1),
        )
        blocks: list[nn.Module] = []
        in_ch = stem_width
        for stage, width in enumerate(widths):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(ResBlock(in_ch, width, kernel_size, stride))
                in_ch = width
        self.blocks = nn.Sequential(*blocks)
        self.project = nn.Sequential(nn.Linear(2 * in_ch, embedding_dim), nn.BatchNorm1d(embedding_dim))

    def forward(self, ecg_mv: Tensor) -> Tensor:
        features = self.blocks(self.stem(ecg_mv))
        pooled = torch.cat([features.mean(dim=-1), features.amax(dim=-1)], dim=1)
        return self.project(pooled)
