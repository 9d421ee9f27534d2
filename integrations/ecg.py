"""The canonical ECG record and the one preprocessing function.

Every source (WFDB file, FHIR Observation, HL7 ORU) maps into :class:`EcgRecord`:
leads × samples in millivolts, with the sampling rate, the lead names and where it
came from. :func:`preprocess` turns any record into the model's input (fixed lead
order, NaNs interpolated, clipped, resampled). Training and serving both call it,
and nothing else, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

from integrations.errors import InvalidEcgError, MissingLeadsError

#: The model's lead order: the conventional clinical order.
MODEL_LEAD_ORDER: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)  # fmt: skip

#: The order in which MIMIC-IV-ECG WFDB files store their leads (aVF before aVL).
MIMIC_FILE_LEAD_ORDER: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6",
)  # fmt: skip

_LEAD_ALIASES: dict[str, str] = {name.upper(): name for name in MODEL_LEAD_ORDER} | {
    "LEAD_I": "I", "LEAD_II": "II", "LEAD_III": "III", "MDC_ECG_LEAD_I": "I",
    "MDC_ECG_LEAD_II": "II", "MDC_ECG_LEAD_III": "III", "MDC_ECG_LEAD_AVR": "aVR",
    "MDC_ECG_LEAD_AVL": "aVL", "MDC_ECG_LEAD_AVF": "aVF",
    **{f"MDC_ECG_LEAD_V{i}": f"V{i}" for i in range(1, 7)},
}  # fmt: skip


def canonical_lead_name(name: str) -> str:
    """Map a source's lead label (``AVR``, ``aVR``, ``MDC_ECG_LEAD_AVR``...) to ours.

    Unknown labels are returned stripped but otherwise unchanged, so a record with
    extra leads (e.g. ``X``, ``Y``, ``Z``) keeps them and the lead check names them.
    """
    stripped = name.strip()
    return _LEAD_ALIASES.get(stripped.upper().replace(" ", "_"), stripped)


@dataclass(frozen=True, slots=True)
class EcgRecord:
    """One ECG: ``signal_mv`` is leads × samples in millivolts; NaN marks a missing sample.

    ``acquired_at`` is timezone-aware UTC when a decoder set it; ``acquired_at_text`` is the source's own
    time text, verbatim (``20261120031400``, ``2026-11``), kept with the study for audit.
    """

    record_id: str
    signal_mv: np.ndarray
    fs_hz: float
    lead_names: tuple[str, ...]
    source: str = "unknown"
    subject_id: str | None = None
    acquired_at: datetime | None = None
    source_version: str | None = None
    acquired_at_text: str | None = None

    def __post_init__(self) -> None:
        if self.signal_mv.ndim != 2:
            raise InvalidEcgError(self.record_id, f"signal must be leads × samples, got shape {self.signal_mv.shape}")
        if self.signal_mv.shape[0] != len(self.lead_names):
            raise InvalidEcgError(
                self.record_id,
                f"{self.signal_mv.shape[0]} signal rows but {len(self.lead_names)} lead names",
            )
        if not np.isfinite(self.fs_hz) or self.fs_hz <= 0:
            raise InvalidEcgError(self.record_id, f"sampling rate must be positive, got {self.fs_hz} Hz")
        if len(set(self.lead_names)) != len(self.lead_names):
            raise InvalidEcgError(self.record_id, f"duplicate lead names {self.lead_names}")

    @property
    def n_samples(self) -> int:
        return int(self.signal_mv.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs_hz


@dataclass(frozen=True, slots=True)
class PreprocessConfig:
    """What :func:`preprocess` does; saved beside the model weights as the input contract."""

    fs_hz: float = 100.0
    lead_order: tuple[str, ...] = MODEL_LEAD_ORDER
    clip_mv: float = 3.0
    window_s: float = 2.5
    units: str = field(default="mV")

    @property
    def window_samples(self) -> int:
        return round(self.window_s * self.fs_hz)

    def to_dict(self) -> dict[str, object]:
        as_dict = asdict(self)
        as_dict["lead_order"] = list(self.lead_order)
        return as_dict

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> PreprocessConfig:
        values = dict(data)
        values["lead_order"] = tuple(values["lead_order"])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]


def preprocess(record: EcgRecord, config: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """Return the model input for ``record``: float32 [leads, samples] at ``config.fs_hz``.

    Steps, in this order: select and order the leads, interpolate NaNs (a lead that
    is entirely missing becomes 0 mV), clip to ±``clip_mv``, polyphase-resample.
    """
    signal = select_leads(record, config.lead_order)
    signal = interpolate_nans(signal)
    signal = np.clip(signal, -config.clip_mv, config.clip_mv)
    signal = resample(signal, record.fs_hz, config.fs_hz)
    return signal.astype(np.float32, copy=False)


def select_leads(record: EcgRecord, lead_order: tuple[str, ...]) -> np.ndarray:
    """Rows of ``record.signal_mv`` in ``lead_order``; raises :class:`MissingLeadsError`."""
    index = {canonical_lead_name(name): row for row, name in enumerate(record.lead_names)}
    missing = tuple(lead for lead in lead_order if lead not in index)
    if missing:
        raise MissingLeadsError(record.record_id, missing)
    return np.asarray(record.signal_mv[[index[lead] for lead in lead_order]], dtype=np.float64)


def interpolate_nans(signal: np.ndarray) -> np.ndarray:
    """Linearly interpolate NaN samples per lead; an all-NaN lead becomes zeros."""
    out = np.array(signal, dtype=np.float64, copy=True)
    positions = np.arange(out.shape[1])
    for lead in out:
        missing = np.isnan(lead)
        if not missing.any():
            continue
        if missing.all():
            lead[:] = 0.0
            continue
        lead[missing] = np.interp(positions[missing], positions[~missing], lead[~missing])
    return out


def resample(signal: np.ndarray, fs_in_hz: float, fs_out_hz: float) -> np.ndarray:
    """Polyphase resampling along the last axis (anti-aliased, no phase shift)."""
    ratio = Fraction(fs_out_hz / fs_in_hz).limit_denominator(1000)
    if ratio == 1:
        return signal
    return resample_poly(signal, ratio.numerator, ratio.denominator, axis=-1)


def eval_windows(signal: np.ndarray, window_samples: int, *, record_id: str = "?") -> np.ndarray:
    """Non-overlapping windows [n, leads, window_samples] covering as much of ``signal`` as fits."""
    n_windows = signal.shape[-1] // window_samples
    if n_windows == 0:
        raise InvalidEcgError(
            record_id, f"{signal.shape[-1]} samples is shorter than one {window_samples}-sample window"
        )
    used = signal[..., : n_windows * window_samples]
    return np.ascontiguousarray(used.reshape(signal.shape[0], n_windows, window_samples).transpose(1, 0, 2))


def random_crop(signal: np.ndarray, window_samples: int, rng: np.random.Generator) -> np.ndarray:
    """One random window [leads, window_samples] of ``signal`` (training augmentation)."""
    start = int(rng.integers(0, signal.shape[-1] - window_samples + 1))
    return signal[..., start : start + window_samples]
