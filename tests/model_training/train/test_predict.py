"""Validation during training scores exactly as the served module does."""

import numpy as np
import torch

from model_training.models import EcgEncoder, Head
from model_training.scoring import EcgScoringModule
from model_training.train.predict import window_probabilities


def test_validation_probabilities_equal_the_scoring_modules(tiny_tensors):
    torch.manual_seed(0)
    encoder = EcgEncoder(stem_width=8, widths=(8, 16), embedding_dim=8).eval()
    head = Head(8, tiny_tensors.n_dx).eval()
    rows = tiny_tensors.splits["val"]

    def logits(batch):
        return head(encoder(batch["ecg"]))

    ours = window_probabilities(logits, tiny_tensors, rows, batch_size=7, device=torch.device("cpu"))
    scoring = EcgScoringModule(encoder, head, Head(8, 1), tiny_tensors.window_samples).eval()
    with torch.no_grad():
        served, _, _ = scoring(tiny_tensors.ecg.records(rows))
    np.testing.assert_allclose(ours, served.numpy(), rtol=1e-5, atol=1e-6)
