"""Tasks: model + loss as one module whose ``forward(batch)`` is the training loss.

Each task holds exactly the parameters its stage trains (frozen parts have
``requires_grad`` off and stay in eval mode), so DDP can wrap it unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model_training.losses import MaskedBCELoss, MaskedMSELoss
from model_training.models import ClinicalEncoder, EcgEncoder, Head, LateFusionModel, Projector
from model_training.train.data import Batch


class PretrainTask(nn.Module):
    """Stage 1: the ECG crop and the clinical vector of the same study should agree in the joint space.

    With a ``regression_head``, the ECG embedding also predicts the (scaled) measured clinical
    features themselves, weighted by ``regression_weight``: a dense per-study signal next to
    the batch-level contrastive one. Still no labels: the targets are the clinical inputs.
    """

    def __init__(
        self,
        ecg_encoder: EcgEncoder,
        clinical_encoder: ClinicalEncoder,
        ecg_projector: Projector,
        clinical_projector: Projector,
        loss: nn.Module,
        *,
        regression_head: Head | None = None,
        regression_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.ecg_encoder, self.clinical_encoder = ecg_encoder, clinical_encoder
        self.ecg_projector, self.clinical_projector = ecg_projector, clinical_projector
        self.loss = loss
        self.regression_head, self.regression_weight = regression_head, regression_weight
        self.regression_loss = MaskedMSELoss()

    def forward(self, batch: Batch) -> Tensor:
        ecg_embedding = self.ecg_encoder(batch["ecg"])
        clinical = self.clinical_projector(self.clinical_encoder(batch["values"], batch["observed"]))
        loss = self.loss(self.ecg_projector(ecg_embedding), clinical)
        if self.regression_head is not None:
            targets = self.clinical_encoder.scale(batch["values"])
            predicted = self.regression_head(ecg_embedding)
            loss = loss + self.regression_weight * self.regression_loss(predicted, targets, batch["observed"])
        return loss


class EcgHeadsTask(nn.Module):
    """Heads on the ECG embedding: stage 2 (labs), stage 3 (diagnosis + auxiliary labs), the ECG-only baseline.

    ``loss = dx_loss(dx) + lab_weight · masked BCE(labs)``, each term present when its head is.
    """

    def __init__(
        self,
        encoder: EcgEncoder,
        *,
        dx_head: Head | None = None,
        lab_head: Head | None = None,
        dx_loss: nn.Module | None = None,
        lab_weight: float = 1.0,
        freeze_encoder: bool = False,
    ) -> None:
        super().__init__()
        self.encoder, self.dx_head, self.lab_head = encoder, dx_head, lab_head
        self.dx_loss, self.lab_loss = dx_loss, MaskedBCELoss()
        self.lab_weight = lab_weight
        self.freeze_encoder = freeze_encoder
        self.encoder.requires_grad_(not freeze_encoder)

    def train(self, mode: bool = True) -> EcgHeadsTask:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()  # frozen means its batch-norm statistics too
        return self

    def embed(self, ecg: Tensor) -> Tensor:
        if self.freeze_encoder:
            with torch.no_grad():
                return self.encoder(ecg)
        return self.encoder(ecg)

    def forward(self, batch: Batch) -> Tensor:
        embedding = self.embed(batch["ecg"])
        loss = embedding.new_zeros(())
        if self.dx_head is not None and self.dx_loss is not None:
            loss = loss + self.dx_loss(self.dx_head(embedding), batch["dx"])
        if self.lab_head is not None and self.lab_weight > 0:
            loss = loss + self.lab_weight * self.lab_loss(self.lab_head(embedding), batch["labs"])
        return loss

    def dx_logits(self, batch: Batch) -> Tensor:
        assert self.dx_head is not None
        return self.dx_head(self.encoder(batch["ecg"]))

    def lab_logits(self, batch: Batch) -> Tensor:
        assert self.lab_head is not None
        return self.lab_head(self.encoder(batch["ecg"]))


class MultimodalTask(nn.Module):
    """The late-fusion upper bound: diagnosis from ECG and clinical features together."""

    def __init__(self, model: LateFusionModel, dx_loss: nn.Module) -> None:
        super().__init__()
        self.model, self.dx_loss = model, dx_loss

    def forward(self, batch: Batch) -> Tensor:
        return self.dx_loss(self.dx_logits(batch), batch["dx"])

    def dx_logits(self, batch: Batch) -> Tensor:
        return self.model(batch["ecg"], batch["values"], batch["observed"])
