"""Handcrafted ECG features: rate, rhythm, intervals, voltages, ST levels, axis.

A deliberately simple delineator, good enough for a visibility report, not a
diagnostic device: R peaks from the spatial velocity, a median beat per lead,
QRS on/offset by a threshold on the median beat's spatial velocity, T end where
the spatial T magnitude falls to a quarter of its peak, the P wave from lead II.
The median beat is upsampled to 500 Hz first, so intervals are not quantised to
the 10 ms of a 100 Hz input. Anything it cannot measure is NaN, never an error.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields

import numpy as np
from scipy.signal import butter, find_peaks, resample_poly, sosfiltfilt

from integrations.ecg import MODEL_LEAD_ORDER

LEAD = {name: i for i, name in enumerate(MODEL_LEAD_ORDER)}
ANTERIOR_LEADS = tuple(LEAD[n] for n in ("V1", "V2", "V3", "V4"))
INFERIOR_LEADS = tuple(LEAD[n] for n in ("II", "III", "aVF"))
LATERAL_LEADS = tuple(LEAD[n] for n in ("I", "aVL", "V5", "V6"))
LIMB_LEADS = tuple(LEAD[n] for n in ("I", "II", "III", "aVR", "aVL", "aVF"))
T_PEAK_LEADS = tuple(LEAD[n] for n in ("V2", "V3", "V4"))
DELINEATION_FS_HZ = 500.0
_BEAT_BEFORE_S, _BEAT_AFTER_S = 0.3, 0.6
MIN_BEAT_CORRELATION = 0.5
P_WAVE_MIN_MV = 0.07  # below this, fibrillatory waves and noise, not a P wave


@dataclass(frozen=True, slots=True)
class EcgFeatures:
    hr_bpm: float = np.nan
    rr_mean_ms: float = np.nan
    rr_cv: float = np.nan
    rmssd_ms: float = np.nan
    pr_ms: float = np.nan
    qrs_ms: float = np.nan
    qt_ms: float = np.nan
    qtc_ms: float = np.nan
    p_amp_mv: float = np.nan
    r_amp_v5_mv: float = np.nan
    s_amp_v1_mv: float = np.nan
    sokolow_lyon_mv: float = np.nan
    qrs_amp_limb_mean_mv: float = np.nan
    t_amp_v2_v4_mv: float = np.nan
    t_amp_lateral_mv: float = np.nan
    st_anterior_mv: float = np.nan
    st_inferior_mv: float = np.nan
    st_lateral_mv: float = np.nan
    qrs_axis_deg: float = np.nan
    q_amp_anterior_mv: float = np.nan
    q_amp_inferior_mv: float = np.nan
    u_amp_mv: float = np.nan

    def as_array(self) -> np.ndarray:
        return np.array(astuple(self), dtype=np.float64)


FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in fields(EcgFeatures))


def extract_features_batch(signals_mv: np.ndarray, fs_hz: float) -> np.ndarray:
    """[records, features] for [records, 12, samples] in :data:`MODEL_LEAD_ORDER`."""
    return np.stack([extract_features(signal, fs_hz).as_array() for signal in signals_mv]).reshape(
        len(signals_mv), len(FEATURE_NAMES)
    )


def extract_features(signal_mv: np.ndarray, fs_hz: float) -> EcgFeatures:
    filtered = _remove_baseline(np.asarray(signal_mv, dtype=np.float64), fs_hz)
    peaks = _r_peaks(filtered, fs_hz)
    if len(peaks) < 3:
        return EcgFeatures()
    rr_ms = np.diff(peaks) / fs_hz * 1000.0
    beat = _median_beat(filtered, peaks, fs_hz)
    if beat is None:
        return EcgFeatures()
    return _delineate(beat, rr_ms)


def _remove_baseline(signal: np.ndarray, fs_hz: float) -> np.ndarray:
    sos = butter(2, 0.5, btype="highpass", fs=fs_hz, output="sos")
    return sosfiltfilt(sos, signal, axis=-1)


def _r_peaks(signal: np.ndarray, fs_hz: float) -> np.ndarray:
    """R peaks from the spatial energy of the 8–20 Hz band, where QRS energy dwarfs even a peaked T."""
    high_hz = min(20.0, 0.45 * fs_hz)
    band = sosfiltfilt(butter(2, (8.0, high_hz), btype="bandpass", fs=fs_hz, output="sos"), signal, axis=-1)
    width = max(1, int(0.05 * fs_hz))
    energy = np.convolve((band**2).sum(axis=0), np.ones(width) / width, mode="same")
    if energy.max() <= 1e-12:
        return np.array([], dtype=int)
    peaks, props = find_peaks(energy, height=0.2 * np.percentile(energy, 99), distance=int(0.3 * fs_hz))
    if peaks.size:
        # A beat's QRS energy is similar from beat to beat; a T wave or artefact far below it is dropped.
        peaks = peaks[props["peak_heights"] > 0.3 * np.median(props["peak_heights"])]
    magnitude = np.abs(signal).sum(axis=0)
    half = int(0.05 * fs_hz)
    refined = [p - half + int(np.argmax(magnitude[max(p - half, 0) : p + half])) for p in peaks if p >= half]
    return np.unique(np.array(refined, dtype=int))


def _median_beat(signal: np.ndarray, peaks: np.ndarray, fs_hz: float) -> np.ndarray | None:
    """Median over beats of [12, window] around each R peak, upsampled to 500 Hz."""
    before, after = int(_BEAT_BEFORE_S * fs_hz), int(_BEAT_AFTER_S * fs_hz)
    inside = peaks[(peaks >= before) & (peaks + after <= signal.shape[1])]
    if len(inside) < 2:
        return None
    beats = np.stack([signal[:, p - before : p + after] for p in inside])
    median = np.median(beats, axis=0)
    if _mean_correlation(beats, median) < MIN_BEAT_CORRELATION:
        return None  # the "beats" do not resemble each other: noise, not a rhythm
    factor = round(DELINEATION_FS_HZ / fs_hz)
    return resample_poly(median, factor, 1, axis=-1) if factor > 1 else median


def _mean_correlation(beats: np.ndarray, median: np.ndarray) -> float:
    flat = beats.reshape(len(beats), -1) - beats.reshape(len(beats), -1).mean(axis=1, keepdims=True)
    reference = median.ravel() - median.mean()
    norms = np.linalg.norm(flat, axis=1) * np.linalg.norm(reference)
    return float(np.mean(flat @ reference / np.maximum(norms, 1e-12)))


def _ms(samples: float) -> float:
    return samples / DELINEATION_FS_HZ * 1000.0


def _delineate(beat: np.ndarray, rr_ms: np.ndarray) -> EcgFeatures:
    fs = DELINEATION_FS_HZ
    r_index = int(_BEAT_BEFORE_S * fs)
    onset, offset = _qrs_bounds(beat, r_index)
    baseline = beat[:, max(onset - int(0.015 * fs), 0)]
    centred = beat - baseline[:, None]

    rr_mean = float(rr_ms.mean())
    t_end, t_peak = _t_wave(centred, offset, rr_mean)
    qt = _ms(t_end - onset) if t_end is not None else np.nan
    qrs = centred[:, onset : offset + 1]
    j60 = min(offset + int(0.06 * fs), beat.shape[1] - 1)
    p_amp, p_onset = _p_wave(centred[LEAD["II"]], onset, rr_mean)
    r_v5 = float(qrs[LEAD["V5"]].max())
    s_v1 = float(-qrs[LEAD["V1"]].min())
    early = centred[:, onset : onset + int(0.04 * fs)]
    t_values = centred[:, t_peak] if t_peak is not None else np.full(len(beat), np.nan)
    return EcgFeatures(
        hr_bpm=60000.0 / rr_mean,
        rr_mean_ms=rr_mean,
        rr_cv=float(rr_ms.std() / rr_mean),
        rmssd_ms=float(np.sqrt(np.mean(np.diff(rr_ms) ** 2))) if len(rr_ms) > 1 else np.nan,
        pr_ms=_ms(onset - p_onset) if p_onset is not None else np.nan,
        qrs_ms=_ms(offset - onset),
        qt_ms=qt,
        qtc_ms=qt / (rr_mean / 1000.0) ** (1.0 / 3.0),
        p_amp_mv=p_amp,
        r_amp_v5_mv=r_v5,
        s_amp_v1_mv=s_v1,
        sokolow_lyon_mv=s_v1 + max(r_v5, float(qrs[LEAD["V6"]].max())),
        qrs_amp_limb_mean_mv=float(np.mean([np.ptp(qrs[i]) for i in LIMB_LEADS])),
        t_amp_v2_v4_mv=float(np.mean(t_values[list(T_PEAK_LEADS)])),
        t_amp_lateral_mv=float(np.mean(t_values[list(LATERAL_LEADS)])),
        st_anterior_mv=float(centred[list(ANTERIOR_LEADS), j60].mean()),
        st_inferior_mv=float(centred[list(INFERIOR_LEADS), j60].mean()),
        st_lateral_mv=float(centred[list(LATERAL_LEADS), j60].mean()),
        qrs_axis_deg=float(np.degrees(np.arctan2(qrs[LEAD["aVF"]].sum(), qrs[LEAD["I"]].sum()))),
        q_amp_anterior_mv=float(np.mean([max(0.0, -early[i].min()) for i in ANTERIOR_LEADS])),
        q_amp_inferior_mv=float(np.mean([max(0.0, -early[i].min()) for i in INFERIOR_LEADS])),
        u_amp_mv=_u_wave(centred, t_end),
    )


def _qrs_bounds(beat: np.ndarray, r_index: int) -> tuple[int, int]:
    """QRS onset and offset: the outermost samples near R whose smoothed spatial velocity is ≥ 10 % of its peak."""
    fs = DELINEATION_FS_HZ
    width = int(0.024 * fs)  # smoothing bridges the velocity dip at the R apex
    velocity = np.convolve(np.abs(np.diff(beat, axis=-1)).sum(axis=0), np.ones(width) / width, mode="same")
    search = int(0.14 * fs)
    local = velocity[r_index - search : r_index + search]
    threshold = 0.1 * local.max()
    # The outermost crossings, so a notched (bundle-branch block) QRS counts as one complex.
    above = np.flatnonzero(local >= threshold)
    onset = r_index - search + int(above[0]) + width // 2
    offset = r_index - search + int(above[-1]) - width // 2
    return onset, max(offset, onset + 1)


def _t_wave(centred: np.ndarray, offset: int, rr_mean_ms: float) -> tuple[int | None, int | None]:
    """(T end, T peak) sample indices from the spatial T magnitude after the QRS."""
    fs = DELINEATION_FS_HZ
    start = offset + int(0.06 * fs)
    stop = min(centred.shape[1], int(_BEAT_BEFORE_S * fs + 0.85 * rr_mean_ms / 1000.0 * fs))
    if stop - start < int(0.05 * fs):
        return None, None
    magnitude = np.sqrt((centred[:, start:stop] ** 2).sum(axis=0))
    peak = int(np.argmax(magnitude))
    below = np.flatnonzero(magnitude[peak:] < 0.25 * magnitude[peak])
    if not below.size:
        return None, start + peak
    return start + peak + int(below[0]), start + peak


def _p_wave(lead_ii: np.ndarray, qrs_onset: int, rr_mean_ms: float) -> tuple[float, int | None]:
    """P amplitude in lead II and P onset; no onset when the P wave is absent (AF, flat P).

    The search reaches back at most 40 % of the RR interval, so in tachycardia it does
    not mistake the previous beat's T wave for a P wave.
    """
    fs = DELINEATION_FS_HZ
    reach = int(min(0.28, 0.4 * rr_mean_ms / 1000.0) * fs)
    start = max(qrs_onset - reach, 0)
    window = lead_ii[start : qrs_onset - int(0.04 * fs)]
    if window.size == 0:
        return np.nan, None
    peak = int(np.argmax(window))
    amplitude = float(window[peak])
    if amplitude < P_WAVE_MIN_MV:
        return amplitude, None
    below = np.flatnonzero(window[:peak] < 0.2 * amplitude)
    return amplitude, start + (int(below[-1]) if below.size else 0)


def _u_wave(centred: np.ndarray, t_end: int | None) -> float:
    if t_end is None:
        return np.nan
    window = centred[[LEAD["V2"], LEAD["V3"]], t_end : t_end + int(0.15 * DELINEATION_FS_HZ)]
    return float(window.max()) if window.size else np.nan
