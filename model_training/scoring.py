"""The exported model: ECG in, diagnosis and lab-abnormality probabilities out.

:class:`EcgScoringModule` wraps the trained ECG encoder and the two heads with the
part of the preprocessing that must travel with the weights: NaN filling, clipping,
and the evaluation recipe (non-overlapping windows, averaged probabilities). Lead
selection and resampling from the source rate stay in the shared
:func:`integrations.ecg.preprocess`, which runs before it, on the agent side too.

The probabilities leave it calibrated: a per-label Platt map (:class:`PlattCalibration`,
fit on the validation fold by :mod:`model_training.calibration`) runs after the window
average, so the artifact's outputs are calibrated and the agent applies no map of its own.

It is written for ``torch.jit.script`` (the shipped format) and for ``torch.export``
and ONNX (for sites moving off TorchScript): no data-dependent Python branches in
the hot path, only tensor ops.
"""

import torch
from torch import Tensor, nn

N_LEADS = 12
#: Probabilities are clamped to [LOGIT_EPS, 1 - LOGIT_EPS] before the logit, here and in the numpy twin.
LOGIT_EPS = 1e-6


class PlattCalibration(nn.Module):
    """Per-label Platt scaling of probabilities: ``sigmoid(slope * logit(p) + intercept)``, slope > 0.

    A positive slope keeps every label's ranking (its AUROC) and maps thresholds one to one.
    The logit is written with ``log`` and ``log1p`` rather than ``torch.logit`` so that
    ``torch.export`` and ONNX express it too.
    """

    eps: float

    def __init__(self, slope: Tensor, intercept: Tensor) -> None:
        super().__init__()
        self.eps = LOGIT_EPS  # an attribute, because TorchScript cannot read module globals
        if slope.shape != intercept.shape or slope.dim() != 1:
            raise ValueError(f"slope {tuple(slope.shape)} and intercept {tuple(intercept.shape)} must be [labels]")
        self.register_buffer("slope", slope.to(torch.float32))
        self.register_buffer("intercept", intercept.to(torch.float32))

    def forward(self, prob: Tensor) -> Tensor:
        clamped = prob.clamp(self.eps, 1.0 - self.eps)
        return torch.sigmoid(self.slope * (torch.log(clamped) - torch.log1p(-clamped)) + self.intercept)


class EcgScoringModule(nn.Module):
    """ECG-only inference: ``[B, 12, T]`` float32 mV at the model rate → (dx_prob, lab_prob, embedding).

    ``encoder`` maps ``[N, 12, window_samples]`` to an embedding ``[N, E]``; the heads map
    ``[N, E]`` to logits ``[N, D]`` and ``[N, L]``. ``dx_calibration`` and ``lab_calibration``
    map the window-averaged probabilities (:class:`PlattCalibration`); without them the
    probabilities leave uncalibrated (what training's own evaluation scores).
    """

    n_leads: int
    window_samples: int
    clip_mv: float

    def __init__(
        self,
        encoder: nn.Module,
        diagnosis_head: nn.Module,
        lab_head: nn.Module,
        window_samples: int,
        clip_mv: float = 3.0,
        dx_calibration: nn.Module | None = None,
        lab_calibration: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if window_samples <= 0:
            raise ValueError(f"window_samples must be positive, got {window_samples}")
        self.encoder = encoder
        self.diagnosis_head = diagnosis_head
        self.lab_head = lab_head
        self.dx_calibration = dx_calibration if dx_calibration is not None else nn.Identity()
        self.lab_calibration = lab_calibration if lab_calibration is not None else nn.Identity()
        self.n_leads = N_LEADS  # an attribute, because TorchScript cannot read module globals
        self.window_samples = int(window_samples)
        self.clip_mv = float(clip_mv)

    def forward(self, ecg_mv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(dx_prob [B, D], lab_prob [B, L], embedding [B, E])``.

        NaNs are linearly interpolated per lead (an all-NaN lead becomes 0 mV), the
        signal is clipped to ±``clip_mv``, cut into non-overlapping windows of
        ``window_samples`` (the remainder is dropped; ``T`` must hold one window), and
        the per-window probabilities and embeddings are averaged; the averaged
        probabilities then go through the calibration maps.
        """
        if ecg_mv.dim() != 3 or ecg_mv.size(1) != self.n_leads:
            raise ValueError("expected float32 [batch, 12, samples] in mV")
        if ecg_mv.size(2) < self.window_samples:
            raise ValueError("the ECG is shorter than one model window")
        signal = torch.clamp(fill_nans(ecg_mv), -self.clip_mv, self.clip_mv)
        windows, n_windows = self._windows(signal)
        embedding = self.encoder(windows)
        dx_prob = torch.sigmoid(self.diagnosis_head(embedding))
        lab_prob = torch.sigmoid(self.lab_head(embedding))
        batch = ecg_mv.size(0)
        return (
            self.dx_calibration(_mean_over_windows(dx_prob, batch, n_windows)),
            self.lab_calibration(_mean_over_windows(lab_prob, batch, n_windows)),
            _mean_over_windows(embedding, batch, n_windows),
        )

    def with_calibration(self, dx_calibration: nn.Module, lab_calibration: nn.Module) -> "EcgScoringModule":
        """The same encoder and heads (shared, not copied) with these calibration maps."""
        return EcgScoringModule(self.encoder, self.diagnosis_head, self.lab_head, self.window_samples, self.clip_mv,
                                dx_calibration, lab_calibration)  # fmt: skip

    def _windows(self, signal: Tensor) -> tuple[Tensor, int]:
        """``[B, 12, T]`` → ``[B * n, 12, window_samples]``, windows of one study adjacent."""
        per_window = split_windows(signal, self.window_samples)
        n_windows = per_window.size(1)
        return per_window.reshape(signal.size(0) * n_windows, signal.size(1), self.window_samples), n_windows


def split_windows(ecg_mv: Tensor, window_samples: int) -> Tensor:
    """``[B, leads, T]`` → ``[B, n, leads, window_samples]``: non-overlapping windows, the remainder dropped.

    The one windowing of evaluation and serving (training's validation uses it too), the torch twin of
    :func:`integrations.ecg.eval_windows`.
    """
    batch, leads, samples = ecg_mv.size(0), ecg_mv.size(1), ecg_mv.size(2)
    n_windows = samples // window_samples
    used = ecg_mv[:, :, : n_windows * window_samples]
    return used.reshape(batch, leads, n_windows, window_samples).permute(0, 2, 1, 3)


def _mean_over_windows(values: Tensor, batch: int, n_windows: int) -> Tensor:
    # Explicit sizes (not -1), so a head with 0 outputs (a model without lab heads) reshapes too.
    return values.reshape(batch, n_windows, values.size(-1)).mean(dim=1)


def fill_nans(signal: Tensor) -> Tensor:
    """Linearly interpolate NaNs along the last axis, as ``integrations.ecg.interpolate_nans`` does.

    Edges take the nearest known sample (``np.interp``'s rule) and an all-NaN lead
    becomes zeros. The neighbouring known samples are found with a sort and a
    running count rather than ``cummax``, which ONNX cannot express.
    """
    samples = signal.size(-1)
    known = ~torch.isnan(signal)
    position = torch.arange(samples, device=signal.device).expand_as(signal)
    # Known positions first, ascending: the k-th known sample of a lead sits at index k - 1.
    known_positions = torch.sort(torch.where(known, position, position + samples), dim=-1).values
    known_so_far = torch.cumsum(known.to(torch.int64), dim=-1)
    known_total = known_so_far[..., -1:]
    previous = known_positions.gather(-1, (known_so_far - 1).clamp(min=0))
    previous = torch.where(known_so_far >= 1, previous, torch.full_like(previous, -1))
    following = known_positions.gather(-1, known_so_far.clamp(max=samples - 1))
    following = torch.where(known_so_far < known_total, following, torch.full_like(following, samples))
    following = torch.where(known, position, following)
    filled = torch.where(known, signal, torch.zeros_like(signal))
    previous_mv = filled.gather(-1, previous.clamp(min=0))
    following_mv = filled.gather(-1, following.clamp(max=samples - 1))
    has_previous, has_following = previous >= 0, following < samples
    span = (following - previous).clamp(min=1).to(signal.dtype)
    fraction = (position - previous).to(signal.dtype) / span
    between = previous_mv + fraction * (following_mv - previous_mv)
    edge = torch.where(has_previous, previous_mv, torch.where(has_following, following_mv, torch.zeros_like(signal)))
    return torch.where(known, signal, torch.where(has_previous & has_following, between, edge))
