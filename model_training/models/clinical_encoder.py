"""The clinical (tabular) encoder: an MLP over [scaled features, observed mask] with batch norm and dropout."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

#: Features this skewed (and never negative) on the training fold are log-compressed first (NT-proBNP, troponin...).
LOG_SKEWNESS = 2.0
#: Standardised values are clipped here, so an extreme lab value cannot dominate a batch.
CLIP_SD = 6.0


@dataclass(frozen=True, slots=True)
class ClinicalScaler:
    """Per-feature scaling fitted on the training fold: optional log1p, then z-score."""

    log_mask: np.ndarray  # bool [features]
    mean: np.ndarray  # float32 [features], after the log
    std: np.ndarray  # float32 [features], after the log

    @classmethod
    def fit(cls, values: np.ndarray) -> ClinicalScaler:
        """Fit on median-imputed training values [studies, features]."""
        centred = values - values.mean(axis=0)
        sd = values.std(axis=0)
        skew = np.where(sd > 0, (centred**3).mean(axis=0) / np.maximum(sd, 1e-12) ** 3, 0.0)
        log_mask = (skew > LOG_SKEWNESS) & (values.min(axis=0) >= 0)
        logged = np.where(log_mask, np.log1p(np.maximum(values, 0)), values)
        std = logged.std(axis=0)
        return cls(log_mask, logged.mean(axis=0).astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32))


class ClinicalEncoder(nn.Module):
    """MLP over concat(scaled imputed features, observed mask) → embedding [B, E] (MDS-ED: 3 × 128, BN, dropout)."""

    def __init__(
        self,
        scaler: ClinicalScaler,
        *,
        hidden_dims: tuple[int, ...] = (128, 128, 128),
        embedding_dim: int = 128,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.register_buffer("log_mask", torch.as_tensor(scaler.log_mask, dtype=torch.bool))
        self.register_buffer("mean", torch.as_tensor(scaler.mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(scaler.std, dtype=torch.float32))
        layers: list[nn.Module] = []
        in_dim = 2 * len(scaler.mean)
        for width in hidden_dims:
            layers += [nn.Linear(in_dim, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(dropout)]
            in_dim = width
        layers.append(nn.Linear(in_dim, embedding_dim))
        self.net = nn.Sequential(*layers)
        self.embedding_dim = embedding_dim

    def scale(self, values: Tensor) -> Tensor:
        logged = torch.where(self.log_mask, torch.log1p(values.clamp(min=0)), values)
        return ((logged - self.mean) / self.std).clamp(-CLIP_SD, CLIP_SD)

    def forward(self, values: Tensor, observed: Tensor) -> Tensor:
        return self.embed_scaled(self.scale(values), observed)

    def embed_scaled(self, scaled: Tensor, observed: Tensor) -> Tensor:
        """The embedding of already scaled features (:meth:`scale`): pre-training hides some of them there."""
        return self.net(torch.cat([scaled, observed], dim=1))
