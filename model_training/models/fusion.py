"""The upper-bound baseline: ECG and clinical encoders, embeddings concatenated into one linear layer."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model_training.models.clinical_encoder import ClinicalEncoder
from model_training.models.ecg_encoder import EcgEncoder


class LateFusionModel(nn.Module):
    """Late fusion (MDS-ED): sees the clinical features at inference, which the method's model does not."""

    def __init__(self, ecg_encoder: EcgEncoder, clinical_encoder: ClinicalEncoder, n_outputs: int) -> None:
        super().__init__()
        self.ecg_encoder = ecg_encoder
        self.clinical_encoder = clinical_encoder
        self.head = nn.Linear(ecg_encoder.embedding_dim + clinical_encoder.embedding_dim, n_outputs)

    def forward(self, ecg_mv: Tensor, values: Tensor, observed: Tensor) -> Tensor:
        joint = torch.cat([self.ecg_encoder(ecg_mv), self.clinical_encoder(values, observed)], dim=1)
        return self.head(joint)
