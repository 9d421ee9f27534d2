"""The networks: shapes, scriptability of what the exporter scripts, clinical scaling."""

import numpy as np
import pytest
import torch

from model_training.models import ClinicalEncoder, ClinicalScaler, EcgEncoder, Head, LateFusionModel, Projector
from model_training.scoring import EcgScoringModule


def _tiny_encoder(**overrides) -> EcgEncoder:
    settings = {"stem_width": 8, "widths": (8, 16), "embedding_dim": 12} | overrides
    return EcgEncoder(**settings)


def _scaler(n_features: int = 5) -> ClinicalScaler:
    rng = np.random.default_rng(0)
    return ClinicalScaler.fit(rng.normal(size=(50, n_features)).astype(np.float32))


@pytest.mark.parametrize(("widths", "blocks"), [((8,), 1), ((8, 16), 2), ((8, 16, 24, 32), 1)])
def test_ecg_encoder_maps_a_window_to_an_embedding(widths, blocks):
    encoder = _tiny_encoder(widths=widths, blocks_per_stage=blocks).eval()
    assert encoder(torch.randn(3, 12, 250)).shape == (3, 12)


def test_ecg_encoder_and_heads_script_and_agree_with_eager():
    encoder, head = _tiny_encoder().eval(), Head(12, 5, hidden_dim=7).eval()
    x = torch.randn(2, 12, 250)
    scripted_encoder, scripted_head = torch.jit.script(encoder), torch.jit.script(head)
    torch.testing.assert_close(scripted_head(scripted_encoder(x)), head(encoder(x)))


def test_the_scoring_module_scripts_with_our_encoder_and_heads():
    scoring = EcgScoringModule(_tiny_encoder(), Head(12, 4), Head(12, 3), window_samples=250).eval()
    dx, labs, embedding = torch.jit.script(scoring)(torch.randn(2, 12, 1000))
    assert dx.shape == (2, 4) and labs.shape == (2, 3) and embedding.shape == (2, 12)


def test_clinical_scaler_log_compresses_skewed_non_negative_features():
    rng = np.random.default_rng(0)
    skewed = rng.lognormal(mean=5.0, sigma=1.5, size=(500, 1))
    symmetric = rng.normal(size=(500, 1))
    scaler = ClinicalScaler.fit(np.hstack([skewed, symmetric]).astype(np.float32))
    assert scaler.log_mask.tolist() == [True, False]


def test_clinical_encoder_reads_values_and_mask():
    encoder = ClinicalEncoder(_scaler(), hidden_dims=(16, 16), embedding_dim=8).eval()
    values, observed = torch.randn(4, 5), torch.ones(4, 5)
    assert encoder(values, observed).shape == (4, 8)
    assert not torch.allclose(encoder(values, observed), encoder(values, torch.zeros(4, 5)))


def test_clinical_scaling_clips_extreme_values():
    encoder = ClinicalEncoder(_scaler(), hidden_dims=(4,), embedding_dim=4)
    scaled = encoder.scale(torch.full((1, 5), 1e9))
    assert scaled.max() <= 6.0


def test_late_fusion_sees_both_modalities():
    model = LateFusionModel(_tiny_encoder(), ClinicalEncoder(_scaler(), hidden_dims=(8,), embedding_dim=8), 3).eval()
    ecg, values, observed = torch.randn(2, 12, 250), torch.randn(2, 5), torch.ones(2, 5)
    out = model(ecg, values, observed)
    assert out.shape == (2, 3)
    assert not torch.allclose(out, model(ecg, values + 3.0, observed))


def test_projector_maps_to_the_joint_space():
    assert Projector(12, 6)(torch.randn(3, 12)).shape == (3, 6)
