"""Tasks hold exactly what their stage trains: frozen encoders stay frozen, optional terms switch on."""

import numpy as np
import torch

from model_training.losses import ClipLoss, MaskedBCELoss
from model_training.models import ClinicalEncoder, ClinicalScaler, EcgEncoder, Head, Projector
from model_training.train.tasks import EcgHeadsTask, PretrainTask

N_FEATURES, N_LABS, N_DX = 6, 3, 4


def _batch(n: int = 8) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    labs = (torch.rand(n, N_LABS, generator=generator) > 0.5).float()
    labs[0, 0] = float("nan")
    return {
        "ecg": torch.randn(n, 12, 250, generator=generator),
        "values": torch.randn(n, N_FEATURES, generator=generator),
        "observed": (torch.rand(n, N_FEATURES, generator=generator) > 0.3).float(),
        "dx": (torch.rand(n, N_DX, generator=generator) > 0.5).float(),
        "labs": labs,
    }


def _encoder() -> EcgEncoder:
    torch.manual_seed(0)
    return EcgEncoder(stem_width=8, widths=(8,), embedding_dim=8)


def _pretrain_task(regression_weight: float) -> PretrainTask:
    scaler = ClinicalScaler.fit(np.random.default_rng(0).normal(size=(20, N_FEATURES)).astype(np.float32))
    regression = Head(8, N_FEATURES) if regression_weight > 0 else None
    return PretrainTask(_encoder(), ClinicalEncoder(scaler, hidden_dims=(8,), embedding_dim=8), Projector(8, 4),
                        Projector(8, 4), ClipLoss(), regression_head=regression,
                        regression_weight=regression_weight)  # fmt: skip


def test_pretraining_trains_both_encoders_and_the_temperature():
    task = _pretrain_task(0.0)
    task(_batch()).backward()
    assert task.ecg_encoder.stem[0][0].weight.grad is not None
    assert task.clinical_encoder.net[0].weight.grad is not None
    assert task.loss.logit_scale.grad is not None


def test_the_clinical_regression_term_adds_to_the_contrastive_loss():
    without, with_regression = _pretrain_task(0.0), _pretrain_task(1.0)
    batch = _batch()
    assert with_regression(batch) > without(batch)
    with_regression(batch).backward()
    assert with_regression.regression_head.net[1].weight.grad is not None


def test_a_frozen_encoder_gets_no_gradient_and_keeps_its_batch_norm_statistics():
    encoder = _encoder()
    running_mean = encoder.stem[0][1].running_mean.clone()
    task = EcgHeadsTask(encoder, lab_head=Head(8, N_LABS), freeze_encoder=True).train()
    task(_batch()).backward()
    assert not encoder.training and all(p.grad is None for p in encoder.parameters())
    torch.testing.assert_close(encoder.stem[0][1].running_mean, running_mean)
    assert task.lab_head.net[1].weight.grad is not None


def test_the_diagnosis_loss_adds_the_weighted_auxiliary_lab_loss():
    encoder, dx_head, lab_head = _encoder().eval(), Head(8, N_DX), Head(8, N_LABS)
    batch = _batch()
    dx_only = EcgHeadsTask(encoder, dx_head=dx_head, dx_loss=MaskedBCELoss()).eval()
    both = EcgHeadsTask(encoder, dx_head=dx_head, lab_head=lab_head, dx_loss=MaskedBCELoss(), lab_weight=0.5).eval()
    lab_term = MaskedBCELoss()(lab_head(encoder(batch["ecg"])), batch["labs"])
    torch.testing.assert_close(both(batch), dx_only(batch) + 0.5 * lab_term)
