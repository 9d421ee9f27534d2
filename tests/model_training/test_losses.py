"""The losses: contrastive alignment, VICReg's anti-collapse term, NaN-masked multi-label losses."""

import math

import pytest
import torch

from model_training.losses import ClipLoss, MaskedBCELoss, MaskedFocalLoss, VicRegLoss, multilabel_loss


def _pairs(n: int = 32, dim: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def test_clip_loss_is_lower_for_aligned_pairs_than_for_shuffled_ones():
    ecg = _pairs()
    clinical = ecg + 0.1 * _pairs(seed=1)
    loss = ClipLoss(temperature_init=0.1)
    assert loss(ecg, clinical) < loss(ecg, clinical[torch.randperm(32, generator=torch.Generator().manual_seed(2))])


def test_clip_loss_is_symmetric_in_its_modalities():
    ecg, clinical = _pairs(), _pairs(seed=1)
    loss = ClipLoss()
    torch.testing.assert_close(loss(ecg, clinical), loss(clinical, ecg))


def test_clip_temperature_is_learnable_and_starts_where_configured():
    loss = ClipLoss(temperature_init=0.07)
    assert loss.temperature == pytest.approx(0.07)
    assert loss.logit_scale.requires_grad
    ecg = _pairs().requires_grad_()
    loss(ecg, ecg.detach() + 0.01).backward()
    assert loss.logit_scale.grad is not None and loss.logit_scale.grad.abs() > 0


def test_clip_logit_scale_is_clamped_at_100():
    loss = ClipLoss(temperature_init=1e-4)
    assert loss.temperature == pytest.approx(0.01)


def test_vicreg_variance_term_penalises_collapse():
    loss = VicRegLoss()
    spread = _pairs(n=64)
    collapsed = torch.zeros(64, 16) + 0.001 * _pairs(n=64, seed=3)
    _, variance_spread, _ = loss.terms(spread, spread)
    _, variance_collapsed, _ = loss.terms(collapsed, collapsed)
    assert variance_collapsed > 0.9 * 2  # both branches at std ≈ 0: hinge ≈ 1 each
    assert variance_spread < 0.2


def test_vicreg_invariance_is_zero_for_identical_branches_and_covariance_penalises_redundancy():
    loss = VicRegLoss()
    z = _pairs(n=64)
    invariance, _, covariance_independent = loss.terms(z, z)
    redundant = z[:, :1].repeat(1, 16)
    _, _, covariance_redundant = loss.terms(redundant, redundant)
    assert invariance == 0
    assert covariance_redundant > 10 * covariance_independent


def test_masked_bce_ignores_nan_labels():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    labels = torch.tensor([[1.0, float("nan"), 0.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, [0, 2]], labels[:, [0, 2]])
    torch.testing.assert_close(MaskedBCELoss()(logits, labels), expected)


def test_masked_bce_of_an_all_unknown_batch_is_zero_and_differentiable():
    logits = torch.zeros(4, 3, requires_grad=True)
    loss = MaskedBCELoss()(logits, torch.full((4, 3), float("nan")))
    loss.backward()
    assert loss == 0 and logits.grad is not None and not torch.isnan(logits.grad).any()


def test_focal_loss_down_weights_easy_examples_and_ignores_nan():
    labels = torch.tensor([[1.0, float("nan")]])
    easy, hard = torch.tensor([[4.0, 0.0]]), torch.tensor([[-1.0, 0.0]])
    focal, bce = MaskedFocalLoss(gamma=2.0), MaskedBCELoss()
    assert focal(easy, labels) / bce(easy, labels) < focal(hard, labels) / bce(hard, labels)
    assert focal(easy, labels) == pytest.approx(float(focal(torch.tensor([[4.0, 99.0]]), labels)))


def test_focal_loss_with_gamma_0_is_bce():
    logits, labels = _pairs(n=8, dim=4), (torch.rand(8, 4) > 0.5).float()
    torch.testing.assert_close(MaskedFocalLoss(gamma=0.0)(logits, labels), MaskedBCELoss()(logits, labels))


def test_multilabel_loss_by_config_name():
    assert isinstance(multilabel_loss("bce"), MaskedBCELoss)
    assert isinstance(multilabel_loss("focal"), MaskedFocalLoss)
    assert math.isfinite(float(multilabel_loss("focal")(torch.zeros(2, 2), torch.ones(2, 2))))
