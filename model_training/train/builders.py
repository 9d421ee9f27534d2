"""Fresh models from the configuration, seeded, so a resumed run rebuilds exactly what was trained."""

from __future__ import annotations

import torch

from model_training.config import ModelConfig
from model_training.models import ClinicalEncoder, ClinicalScaler, EcgEncoder, Head, LateFusionModel, Projector


def ecg_encoder(config: ModelConfig, *, seed: int) -> EcgEncoder:
    torch.manual_seed(seed)
    return EcgEncoder(stem_width=config.stem_width, widths=config.widths, blocks_per_stage=config.blocks_per_stage,
                      kernel_size=config.kernel_size, embedding_dim=config.embedding_dim)  # fmt: skip


def clinical_encoder(config: ModelConfig, scaler: ClinicalScaler, *, seed: int) -> ClinicalEncoder:
    torch.manual_seed(seed)
    return ClinicalEncoder(scaler, hidden_dims=config.clinical_hidden, embedding_dim=config.embedding_dim,
                           dropout=config.clinical_dropout)  # fmt: skip


def head(config: ModelConfig, n_outputs: int, *, seed: int) -> Head:
    torch.manual_seed(seed)
    return Head(config.embedding_dim, n_outputs, hidden_dim=config.head_hidden, dropout=config.head_dropout)


def projector(config: ModelConfig, *, seed: int) -> Projector:
    torch.manual_seed(seed)
    return Projector(config.embedding_dim, config.joint_dim)


def late_fusion(config: ModelConfig, scaler: ClinicalScaler, n_outputs: int, *, seed: int) -> LateFusionModel:
    model = LateFusionModel(ecg_encoder(config, seed=seed), clinical_encoder(config, scaler, seed=seed + 1), n_outputs)
    torch.manual_seed(seed + 2)
    model.head.reset_parameters()
    return model
