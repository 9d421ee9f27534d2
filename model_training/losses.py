"""Training losses as modules: the joint-embedding losses of stage 1 and the masked multi-label losses.

* :class:`ClipLoss`: symmetric InfoNCE between the two modalities of a batch, with a
  learnable temperature (CLIP). Under DDP it gathers every rank's embeddings with
  ``torch.distributed.nn.all_gather`` (which keeps gradients), so each rank's rows are
  contrasted against the global batch, as open_clip does.
* :class:`VicRegLoss`: invariance + variance + covariance (Bardes et al., 2022). Under DDP
  it is computed per rank on the local batch (the variance and covariance terms are
  batch statistics; with per-rank batches of ≥ 64 the local estimates are adequate).
* :class:`MaskedBCELoss`, :class:`MaskedFocalLoss`: multi-label losses that ignore NaN
  labels (a lab not measured near the ECG is unknown, not normal).
* :class:`MaskedMSELoss`: regression of the clinical features from the ECG embedding,
  on the features that were measured (an imputed median is not a target).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

#: CLIP clamps its logit scale at 100 (temperature ≥ 0.01) to keep training stable.
MAX_LOGIT_SCALE = 100.0


def _gather_with_grad(features: Tensor) -> tuple[Tensor, int]:
    """Concatenate ``features`` from every rank (gradients flow back); returns (all, offset of this rank's rows)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features, 0
    import torch.distributed.nn as dist_nn  # imported lazily: only needed under DDP

    gathered = dist_nn.all_gather(features)
    return torch.cat(list(gathered), dim=0), dist.get_rank() * features.shape[0]


class ClipLoss(nn.Module):
    """Symmetric cross-entropy over cosine similarities, scaled by a learnable ``exp(logit_scale)``."""

    def __init__(self, temperature_init: float = 0.07, *, gather: bool = True) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature_init)))
        self.gather = gather

    @property
    def temperature(self) -> float:
        return float(1.0 / self.logit_scale.detach().exp().clamp(max=MAX_LOGIT_SCALE))

    def forward(self, ecg: Tensor, clinical: Tensor) -> Tensor:
        ecg, clinical = F.normalize(ecg, dim=1), F.normalize(clinical, dim=1)
        scale = self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
        if self.gather:
            all_ecg, offset = _gather_with_grad(ecg)
            all_clinical, _ = _gather_with_grad(clinical)
        else:
            all_ecg, all_clinical, offset = ecg, clinical, 0
        targets = torch.arange(ecg.shape[0], device=ecg.device) + offset
        ecg_to_clinical = scale * ecg @ all_clinical.T
        clinical_to_ecg = scale * clinical @ all_ecg.T
        return 0.5 * (F.cross_entropy(ecg_to_clinical, targets) + F.cross_entropy(clinical_to_ecg, targets))


class VicRegLoss(nn.Module):
    """``invariance·MSE + variance·hinge(std) + covariance·off-diagonal²``, each branch regularised on its own."""

    def __init__(
        self, *, invariance: float = 25.0, variance: float = 25.0, covariance: float = 1.0, target_std: float = 1.0
    ) -> None:
        super().__init__()
        self.weights = (invariance, variance, covariance)
        self.target_std = target_std

    def forward(self, ecg: Tensor, clinical: Tensor) -> Tensor:
        invariance, variance, covariance = self.terms(ecg, clinical)
        return self.weights[0] * invariance + self.weights[1] * variance + self.weights[2] * covariance

    def terms(self, ecg: Tensor, clinical: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        invariance = F.mse_loss(ecg, clinical)
        variance = self._variance(ecg) + self._variance(clinical)
        covariance = self._covariance(ecg) + self._covariance(clinical)
        return invariance, variance, covariance

    def _variance(self, z: Tensor) -> Tensor:
        std = torch.sqrt(z.var(dim=0) + 1e-4)
        return F.relu(self.target_std - std).mean()

    @staticmethod
    def _covariance(z: Tensor) -> Tensor:
        centred = z - z.mean(dim=0)
        cov = centred.T @ centred / max(z.shape[0] - 1, 1)
        off_diagonal = cov - torch.diag(torch.diagonal(cov))
        return off_diagonal.pow(2).sum() / z.shape[1]


def _masked_mean(per_label: Tensor, known: Tensor) -> Tensor:
    # Averaged over the known labels only; a batch with none contributes a zero that still carries a graph.
    return (per_label * known).sum() / known.sum().clamp(min=1.0)


class MaskedBCELoss(nn.Module):
    """Binary cross-entropy on logits, averaged over the labels that are not NaN."""

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        known = ~torch.isnan(labels)
        targets = torch.nan_to_num(labels, nan=0.0)
        per_label = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        return _masked_mean(per_label, known.to(logits.dtype))


class MaskedFocalLoss(nn.Module):
    """Focal loss (Lin et al., 2017) on logits, averaged over the labels that are not NaN."""

    def __init__(self, gamma: float = 2.0, alpha: float | None = None) -> None:
        super().__init__()
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        known = ~torch.isnan(labels)
        targets = torch.nan_to_num(labels, nan=0.0)
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_true = torch.exp(-bce)
        per_label = (1.0 - p_true) ** self.gamma * bce
        if self.alpha is not None:
            per_label = per_label * (self.alpha * targets + (1.0 - self.alpha) * (1.0 - targets))
        return _masked_mean(per_label, known.to(logits.dtype))


class MaskedMSELoss(nn.Module):
    """Mean squared error over the entries where ``observed`` is 1."""

    def forward(self, predicted: Tensor, target: Tensor, observed: Tensor) -> Tensor:
        return _masked_mean((predicted - target).pow(2), observed.to(predicted.dtype))


def multilabel_loss(name: str) -> nn.Module:
    """``bce`` or ``focal`` (config values)."""
    return {"bce": MaskedBCELoss, "focal": MaskedFocalLoss}[name]()
