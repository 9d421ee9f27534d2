"""Tasks: model + loss as one module whose ``forward(batch)`` is the training loss.

Each task holds exactly the parameters its stage trains (frozen parts have
``requires_grad`` off and stay in eval mode), so DDP can wrap it unchanged. A task that draws
random numbers from generators of its own names them in ``generators()``, so that the epoch
checkpoint saves their states; the others draw only from torch's global generator (dropout).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model_training.losses import MaskedBCELoss, MaskedMSELoss
from model_training.models import ClinicalEncoder, EcgEncoder, Head, LateFusionModel, Projector
from model_training.train.data import Batch
from model_training.train.epoch_checkpoint import HoldsGenerators


class PretrainTask(nn.Module):
    """Stage 1: the ECG crop and the clinical vector of the same study should agree in the joint space.

    With a ``regression_head``, the ECG embedding also predicts the (scaled) measured clinical
    features themselves, weighted by ``regression_weight``: a dense per-study signal next to
    the batch-level contrastive one. Still no labels: the targets are the clinical inputs.

    With an ``augmentation``, the ECG windows are augmented in training mode (never in eval mode).
    With a ``mask_head`` (masked clinical-feature modelling), in training mode each measured feature
    is hidden from the clinical encoder with probability ``mask_ratio`` (it enters at the training
    mean, flagged unmeasured) and the clinical embedding must reconstruct the hidden (scaled) values,
    weighted by ``mask_weight``; the contrastive loss sees the masked clinical view.
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
        augmentation: nn.Module | None = None,
        mask_head: Head | None = None,
        mask_ratio: float = 0.0,
        mask_weight: float = 1.0,
        mask_seed: int = 0,
    ) -> None:
        super().__init__()
        self.ecg_encoder, self.clinical_encoder = ecg_encoder, clinical_encoder
        self.ecg_projector, self.clinical_projector = ecg_projector, clinical_projector
        self.loss = loss
        self.regression_head, self.regression_weight = regression_head, regression_weight
        self.regression_loss = MaskedMSELoss()
        self.augmentation = augmentation
        self.mask_head, self.mask_ratio, self.mask_weight = mask_head, mask_ratio, mask_weight
        self.mask_generator = torch.Generator().manual_seed(mask_seed)

    def generators(self) -> dict[str, torch.Generator]:
        """Every generator the task draws from, for the epoch checkpoint
        (:class:`model_training.train.epoch_checkpoint.HoldsGenerators`): the masks', and the augmentation's."""
        found = {"mask": self.mask_generator}
        if isinstance(self.augmentation, HoldsGenerators):
            found |= self.augmentation.generators()
        return found

    def forward(self, batch: Batch) -> Tensor:
        ecg = batch["ecg"] if self.augmentation is None or not self.training else self.augmentation(batch["ecg"])
        ecg_embedding = self.ecg_encoder(ecg)
        scaled, observed = self.clinical_encoder.scale(batch["values"]), batch["observed"]
        hidden = self._hidden(observed) if self.mask_head is not None and self.training else None
        if hidden is None:
            clinical_embedding = self.clinical_encoder.embed_scaled(scaled, observed)
        else:
            clinical_embedding = self.clinical_encoder.embed_scaled(scaled * (1 - hidden), observed * (1 - hidden))
        loss = self.loss(self.ecg_projector(ecg_embedding), self.clinical_projector(clinical_embedding))
        if self.regression_head is not None:
            predicted = self.regression_head(ecg_embedding)
            loss = loss + self.regression_weight * self.regression_loss(predicted, scaled, observed)
        if hidden is not None:
            reconstructed = self.mask_head(clinical_embedding)  # type: ignore[misc]
            loss = loss + self.mask_weight * self.regression_loss(reconstructed, scaled, hidden)
        return loss

    def _hidden(self, observed: Tensor) -> Tensor:
        """1 where a measured feature is hidden from the clinical encoder this step."""
        draw = torch.rand(tuple(observed.shape), generator=self.mask_generator).to(observed.device)
        return (draw < self.mask_ratio).to(observed.dtype) * observed


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
