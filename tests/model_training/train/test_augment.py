"""Pre-training's ECG augmentations and masked clinical-feature modelling: what each does, and only in training."""

import dataclasses

import numpy as np
import pytest
import torch

from model_training.config import CONFIG_DIR, AugmentConfig, load_config
from model_training.errors import ConfigError
from model_training.losses import ClipLoss
from model_training.models import ClinicalEncoder, ClinicalScaler, EcgEncoder, Head, Projector
from model_training.train import stages
from model_training.train.augment import EcgAugmentation
from model_training.train.checkpoints import checkpoint_path
from model_training.train.distributed import DistContext
from model_training.train.tasks import PretrainTask

N_FEATURES = 6


def ecg(n: int = 64) -> torch.Tensor:
    return torch.randn(n, 12, 250, generator=torch.Generator().manual_seed(1))


def augment(**settings) -> torch.Tensor:
    signal = ecg()
    return EcgAugmentation(AugmentConfig(**settings), seed=0)(signal) - signal


def test_amplitude_scaling_changes_each_leads_gain_and_nothing_else():
    signal = ecg()
    scaled = EcgAugmentation(AugmentConfig(amplitude_scale=0.1), seed=0)(signal)
    gain = scaled / signal
    torch.testing.assert_close(gain, gain[..., :1].expand_as(gain))  # one gain per lead and study
    assert 0.05 < float(gain[..., 0].log().std()) < 0.15


def test_baseline_wander_is_slow_and_bounded_by_its_peak():
    wander = augment(baseline_wander_mv=0.5)
    assert float(wander.abs().max()) <= 0.5 + 1e-6
    steps = wander.diff(dim=-1).abs().max()
    assert float(steps) <= 2 * np.pi * 0.5 * 1.0 / 250 + 1e-5, "at most one cycle per window"


def test_noise_has_the_configured_standard_deviation():
    assert float(augment(noise_mv=0.05).std()) == pytest.approx(0.05, rel=0.05)


def test_lead_dropout_zeroes_whole_leads_at_the_configured_rate():
    signal = ecg()
    dropped = EcgAugmentation(AugmentConfig(lead_dropout=0.25), seed=0)(signal)
    zeroed = (dropped == 0).all(dim=-1)
    assert 0.15 < float(zeroed.float().mean()) < 0.35
    torch.testing.assert_close(dropped[~zeroed], signal[~zeroed])


def test_a_seed_gives_the_same_augmentations():
    config = AugmentConfig(amplitude_scale=0.1, baseline_wander_mv=0.2, noise_mv=0.02, lead_dropout=0.1)
    first, second = EcgAugmentation(config, seed=3)(ecg()), EcgAugmentation(config, seed=3)(ecg())
    torch.testing.assert_close(first, second)
    assert not torch.equal(first, EcgAugmentation(config, seed=4)(ecg()))


@pytest.mark.parametrize(
    ("key", "value"), [("pretrain.augment.noise_mv", -0.1), ("pretrain.augment.lead_dropout", 1.0),
                       ("pretrain.mask_ratio", 1.0), ("pretrain.mask_weight", -1.0)],
)  # fmt: skip
def test_out_of_range_settings_are_refused(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(CONFIG_DIR / "tiny.yaml", {key: value})


def test_everything_is_off_by_default():
    pretrain = load_config(CONFIG_DIR / "demo.yaml").pretrain
    assert not pretrain.augment.enabled and pretrain.mask_ratio == 0 and pretrain.batch_size == 0


class Recording(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, ecg: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return ecg


def task(**options) -> PretrainTask:
    torch.manual_seed(0)
    scaler = ClinicalScaler.fit(np.random.default_rng(0).normal(size=(20, N_FEATURES)).astype(np.float32))
    return PretrainTask(EcgEncoder(stem_width=8, widths=(8,), embedding_dim=8),
                        ClinicalEncoder(scaler, hidden_dims=(8,), embedding_dim=8), Projector(8, 4), Projector(8, 4),
                        ClipLoss(), **options)  # fmt: skip


def batch(n: int = 8, observed: float = 0.3) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"ecg": torch.randn(n, 12, 250, generator=generator),
            "values": torch.randn(n, N_FEATURES, generator=generator),
            "observed": (torch.rand(n, N_FEATURES, generator=generator) > observed).float()}  # fmt: skip


def test_the_ecg_is_augmented_in_training_only():
    recording = Recording()
    pretrain = task(augmentation=recording)
    pretrain.train()(batch())
    pretrain.eval()(batch())
    assert recording.calls == 1


def test_masked_features_are_hidden_from_the_clinical_encoder_and_reconstructed():
    masked = task(mask_head=Head(8, N_FEATURES), mask_ratio=0.5, mask_seed=0).train()
    seen = []
    original = masked.clinical_encoder.embed_scaled
    masked.clinical_encoder.embed_scaled = lambda scaled, observed: seen.append(observed) or original(scaled, observed)
    data = batch()
    masked(data).backward()
    assert masked.mask_head.net[1].weight.grad is not None, "the reconstruction trains the mask head"
    hidden = data["observed"] - seen[0]
    assert set(hidden.unique().tolist()) == {0.0, 1.0}, "only measured features are hidden"
    assert 0.3 < float(hidden.sum() / data["observed"].sum()) < 0.7
    masked.eval()(data)
    torch.testing.assert_close(seen[1], data["observed"])  # nothing is hidden in eval mode


def test_with_nothing_measured_there_is_nothing_to_hide_or_reconstruct():
    plain, masked = task(), task(mask_head=Head(8, N_FEATURES), mask_ratio=0.5)
    masked.load_state_dict(plain.state_dict(), strict=False)
    data = batch(observed=1.1)  # no feature measured
    torch.manual_seed(0)
    expected = plain.train()(data)
    torch.manual_seed(0)
    torch.testing.assert_close(masked.train()(data), expected)


def test_pretraining_with_every_option_trains_and_checkpoints_the_mask_head(tiny_tensors, tmp_path):
    config = load_config(CONFIG_DIR / "tiny.yaml", {
        "pretrain.epochs": 1, "pretrain.batch_size": 32, "pretrain.mask_ratio": 0.3,
        "pretrain.augment.amplitude_scale": 0.1, "pretrain.augment.baseline_wander_mv": 0.1,
        "pretrain.augment.noise_mv": 0.02, "pretrain.augment.lead_dropout": 0.1})  # fmt: skip
    runner = stages.StageRunner(config, tiny_tensors, DistContext(0, 1, torch.device("cpu")), tmp_path, resume=False)
    encoder, _ = stages.pretrain(runner)
    saved = torch.load(checkpoint_path(tmp_path, "pretrain"), weights_only=True)
    assert any(key.startswith("mask_head.") for key in saved["modules"]["task"])
    resumed = dataclasses.replace(runner, resume=True)
    again, _ = stages.pretrain(resumed)
    for mine, theirs in zip(encoder.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(mine, theirs)
