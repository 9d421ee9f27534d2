"""ECG augmentations for pre-training: what changes between two recordings of the same patient, not the patient.

Applied by :class:`model_training.train.tasks.PretrainTask` to its training windows only (the task
skips them in eval mode; validation, test and the labelled stages never see them), each switched
on by a positive value in ``pretrain.augment`` (:class:`model_training.config.AugmentConfig`):

* amplitude scaling: electrode contact and body habitus change each lead's gain;
* baseline wander: respiration and movement, a slow sinusoid per lead, 0.1 to 1 cycle per window;
* Gaussian noise: muscle and amplifier noise;
* lead dropout: a lead zeroed, as the shared preprocessing fills a missing or flat lead.

The random draws come from the module's own seeded generator (on the CPU, so a seed gives the same
draws on any device) and never touch the global one that dropout and batch order use. The
generator runs on across epochs; the epoch checkpoint saves its state (:meth:`EcgAugmentation.generators`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from model_training.config import AugmentConfig

MIN_WANDER_CYCLES, MAX_WANDER_CYCLES = 0.1, 1.0


class EcgAugmentation(nn.Module):
    """``forward(ecg [batch, leads, samples] in mV)`` → an augmented copy (the input is not modified)."""

    def __init__(self, config: AugmentConfig, *, seed: int) -> None:
        super().__init__()
        self.config = config
        self.generator = torch.Generator().manual_seed(seed)

    def generators(self) -> dict[str, torch.Generator]:
        """What the augmentations are drawn from (:class:`model_training.train.epoch_checkpoint.HoldsGenerators`)."""
        return {"augmentation": self.generator}

    def forward(self, ecg: Tensor) -> Tensor:
        config, shape = self.config, ecg.shape
        per_lead = (shape[0], shape[1], 1)
        if config.amplitude_scale > 0:
            ecg = ecg * self._draw(torch.randn, per_lead, ecg).mul(config.amplitude_scale).exp()
        if config.baseline_wander_mv > 0:
            ecg = ecg + self._wander(shape, ecg)
        if config.noise_mv > 0:
            ecg = ecg + self._draw(torch.randn, tuple(shape), ecg) * config.noise_mv
        if config.lead_dropout > 0:
            ecg = ecg * (self._draw(torch.rand, per_lead, ecg) >= config.lead_dropout).to(ecg.dtype)
        return ecg

    def _wander(self, shape: torch.Size, like: Tensor) -> Tensor:
        per_lead = (shape[0], shape[1], 1)
        cycles = MIN_WANDER_CYCLES + (MAX_WANDER_CYCLES - MIN_WANDER_CYCLES) * self._draw(torch.rand, per_lead, like)
        phase = 2 * math.pi * self._draw(torch.rand, per_lead, like)
        peak_mv = self.config.baseline_wander_mv * self._draw(torch.rand, per_lead, like)
        position = torch.arange(shape[2], dtype=like.dtype, device=like.device) / shape[2]
        return peak_mv * torch.sin(2 * math.pi * cycles * position + phase)

    def _draw(self, sampler, shape: tuple[int, ...], like: Tensor) -> Tensor:
        return sampler(shape, generator=self.generator).to(device=like.device, dtype=like.dtype)
