"""12-lead ECG synthesis from a cardiac dipole (vectorcardiogram) projected onto the leads.

Each wave (P, septal q, R, S, ST, T, U) is a 3-D dipole direction times a Gaussian in
time, in Frank coordinates (X left, Y feet, Z back). The inverse Dower matrix projects
the dipole onto I, II and V1–V6; III, aVR, aVL and aVF follow from Einthoven's and
Goldberger's laws, so the 12 leads are consistent with each other as in a real heart.
Intervals scale with heart rate (Fridericia). Real-world noise is added in lead space.

What each parameter does to the waves is physiology, but *which* conditions change
the parameters and how much lives in :mod:`model_training.simulator.physiology`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from integrations.ecg import MODEL_LEAD_ORDER
from model_training.simulator.physiology import REFERENCE_ECG, EcgEffects

#: Inverse Dower coefficients (Dower et al. 1980): rows I, II, V1..V6; columns X, Y, Z.
_DOWER = np.array([
    [0.632, -0.235, 0.059],
    [0.235, 1.066, -0.132],
    [-0.515, 0.157, -0.917],
    [0.044, 0.164, -1.387],
    [0.882, 0.098, -1.277],
    [1.213, 0.127, -0.601],
    [1.125, 0.127, -0.086],
    [0.831, 0.076, 0.230],
])  # fmt: skip


def _projection_matrix() -> np.ndarray:
    """12 × 3 matrix from the dipole to the leads in :data:`MODEL_LEAD_ORDER`."""
    lead_i, lead_ii, chest = _DOWER[0], _DOWER[1], _DOWER[2:]
    limb = np.stack([
        lead_i,
        lead_ii,
        lead_ii - lead_i,  # III (Einthoven)
        -(lead_i + lead_ii) / 2,  # aVR (Goldberger)
        lead_i - lead_ii / 2,  # aVL
        lead_ii - lead_i / 2,  # aVF
    ])  # fmt: skip
    return np.vstack([limb, chest])


PROJECTION = _projection_matrix()
assert len(PROJECTION) == len(MODEL_LEAD_ORDER)


def _unit(x: float, y: float, z: float) -> np.ndarray:
    vector = np.array([x, y, z])
    return vector / np.linalg.norm(vector)


#: Myocardial territories as outward normals: ST elevation points toward the injured wall.
# LAD territory: anterior and a little superior, hence reciprocal depression in III and aVF.
ANTERIOR = _unit(0.3, -0.35, -0.9)
INFERIOR = _unit(0.0, 1.0, 0.1)
LATERAL = _unit(1.0, -0.3, 0.1)
_P_DIRECTION = _unit(0.55, 0.75, 0.1)
_SEPTAL_DIRECTION = _unit(-0.35, 0.15, -0.45)
_TERMINAL_DIRECTION = _unit(-0.35, -0.55, 0.55)
_T_DIRECTION = _unit(0.6, 0.45, -0.45)
_ATRIAL_DIRECTION = _unit(0.3, 0.5, -0.6)


@dataclass(frozen=True, slots=True)
class EcgParams:
    """One record's morphology in physical units; built from summed :class:`EcgEffects`."""

    hr_bpm: float
    pr_ms: float
    qrs_ms: float
    qtc_ms: float
    axis_deg: float
    r_amp_mv: float
    p_amp_mv: float
    t_amp_mv: float
    t_width: float
    u_amp_mv: float
    lvh: float
    st_vector_mv: tuple[float, float, float]
    q_anterior_mv: float
    q_inferior_mv: float
    t_inversion: tuple[float, float, float]  # anterior, inferior, lateral fractions
    af: bool
    lbbb: bool
    rbbb: bool
    s1q3t3: bool

    @property
    def rr_s(self) -> float:
        return 60.0 / self.hr_bpm

    @property
    def qt_ms(self) -> float:
        """QT from QTc by Fridericia: QT = QTc × RR^(1/3)."""
        return self.qtc_ms * self.rr_s ** (1.0 / 3.0)

    @classmethod
    def from_effects(cls, effects: EcgEffects) -> EcgParams:
        ref = REFERENCE_ECG
        lbbb, rbbb = effects.has("lbbb"), effects.has("rbbb")
        # A bundle-branch block widens the QRS by itself; the wider of the two wins.
        block_ms = 55.0 if lbbb else 45.0 if rbbb else 0.0
        lvh = float(np.clip(effects.lvh, 0.0, 1.5))
        st = (
            effects.st_anterior_mv * ANTERIOR
            + effects.st_inferior_mv * INFERIOR
            + (effects.st_lateral_mv - 0.05 * lvh) * LATERAL
            + effects.st_diffuse_mv * _T_DIRECTION
        )
        return cls(
            hr_bpm=float(np.clip(ref.hr_bpm + effects.hr_bpm, 35.0, 190.0)),
            pr_ms=float(np.clip(ref.pr_ms + effects.pr_ms, 90.0, 400.0)),
            qrs_ms=float(np.clip(ref.qrs_ms + effects.qrs_ms + block_ms, 60.0, 220.0)),
            qtc_ms=float(np.clip(ref.qtc_ms + effects.qtc_ms, 300.0, 620.0)),
            axis_deg=ref.axis_deg + effects.axis_deg,
            r_amp_mv=ref.r_amp_mv * float(np.exp(effects.qrs_amp_log)),
            p_amp_mv=ref.p_amp_mv * float(np.exp(effects.p_amp_log)),
            t_amp_mv=ref.t_amp_mv * float(np.exp(effects.t_amp_log)),
            t_width=float(np.exp(effects.t_width_log)),
            u_amp_mv=max(0.0, ref.u_amp_mv + effects.u_amp_mv),
            lvh=lvh,
            st_vector_mv=(float(st[0]), float(st[1]), float(st[2])),
            q_anterior_mv=max(0.0, effects.q_anterior_mv),
            q_inferior_mv=max(0.0, effects.q_inferior_mv),
            t_inversion=(
                float(np.clip(effects.t_inv_anterior, 0, 1)),
                float(np.clip(effects.t_inv_inferior, 0, 1)),
                float(np.clip(effects.t_inv_lateral + 0.6 * lvh, 0, 1)),
            ),
            af=effects.has("af"),
            lbbb=lbbb,
            rbbb=rbbb and not lbbb,
            s1q3t3=effects.has("s1q3t3"),
        )


@dataclass(frozen=True, slots=True)
class NoiseParams:
    """Real-world artefacts for one recording (amplitudes in mV)."""

    baseline_mv: float = 0.0
    mains_mv: float = 0.0
    mains_hz: float = 60.0
    emg_mv: float = 0.0
    pop_lead: int = -1
    missing_lead: int = -1
    flat_lead: int = -1
    limb_reversal: bool = False

    @classmethod
    def sample(cls, rng: np.random.Generator) -> NoiseParams:
        """Typical ED recording quality: mostly clean, with the odd bad lead."""
        n_leads = len(MODEL_LEAD_ORDER)
        return cls(
            baseline_mv=float(rng.uniform(0.0, 0.25)),
            mains_mv=float(rng.uniform(0.005, 0.04)) if rng.random() < 0.3 else 0.0,
            mains_hz=60.0,
            emg_mv=float(rng.uniform(0.004, 0.03)),
            pop_lead=int(rng.integers(n_leads)) if rng.random() < 0.03 else -1,
            missing_lead=int(rng.integers(n_leads)) if rng.random() < 0.01 else -1,
            flat_lead=int(rng.integers(n_leads)) if rng.random() < 0.01 else -1,
            limb_reversal=bool(rng.random() < 0.005),
        )


def _gaussian(t: np.ndarray, centre_s: float, sigma_s: float) -> np.ndarray:
    return np.exp(-0.5 * ((t - centre_s) / sigma_s) ** 2)


def _asymmetric_gaussian(t: np.ndarray, peak_s: float, rise_s: float, fall_s: float) -> np.ndarray:
    sigma = np.where(t < peak_s, rise_s, fall_s)
    return np.exp(-0.5 * ((t - peak_s) / sigma) ** 2)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _qrs_forces(p: EcgParams) -> list[tuple[float, float, np.ndarray]]:
    """(centre as a fraction of QRS width, sigma as a fraction, dipole in mV) for each QRS force."""
    axis = np.deg2rad(p.axis_deg)
    amp = p.r_amp_mv * (1.0 + 0.9 * p.lvh)
    if p.lbbb:
        # Septum activated right-to-left (no septal q laterally); slow, notched, posterior LV activation.
        main = _unit(0.8 * np.cos(axis), 0.8 * np.sin(axis), 0.7)
        forces = [(0.15, 0.08, 0.3 * amp * _unit(0.6, 0.0, 0.5)),
                  (0.38, 0.13, 1.1 * amp * main), (0.65, 0.13, 1.1 * amp * main)]  # fmt: skip
    else:
        main = _unit(0.95 * np.cos(axis), 0.95 * np.sin(axis), 0.3)
        forces = [(0.18, 0.07, 0.35 * amp * _SEPTAL_DIRECTION), (0.45, 0.11, amp * main),
                  (0.72, 0.09, 0.45 * amp * (1.0 + 0.5 * p.lvh) * _TERMINAL_DIRECTION)]  # fmt: skip
    if p.rbbb:
        forces.append((0.82, 0.1, 0.6 * amp * _unit(-0.55, 0.1, -0.8)))  # late rightward-anterior R'
    if p.q_anterior_mv > 0:
        forces.append((0.2, 0.08, p.q_anterior_mv * -ANTERIOR))  # initial force away from the scar
    if p.q_inferior_mv > 0:
        forces.append((0.2, 0.08, p.q_inferior_mv * -INFERIOR))
    if p.s1q3t3:
        forces.append((0.2, 0.07, 0.3 * amp * _unit(0.5, -0.87, 0.0)))  # Q in III
        forces.append((0.8, 0.09, 0.45 * amp * _unit(-1.0, 0.0, 0.0)))  # S in I
    return forces


def _t_dipole(p: EcgParams, qrs_main: np.ndarray) -> np.ndarray:
    direction = _T_DIRECTION.copy()
    if p.lbbb:
        direction = -_unit(*qrs_main)  # secondary, discordant repolarisation
    for fraction, territory in zip(p.t_inversion, (ANTERIOR, INFERIOR, LATERAL), strict=True):
        direction = direction - 2.0 * fraction * max(0.0, float(direction @ territory)) * territory
    if p.s1q3t3:
        direction = direction - 0.6 * _unit(-0.5, 0.87, 0.0) * max(0.0, float(direction @ _unit(-0.5, 0.87, 0)))
    if p.rbbb:
        direction = direction + _unit(0.0, 0.0, 0.3)
    return p.t_amp_mv * direction


def beat_template(p: EcgParams, fs_hz: float) -> tuple[np.ndarray, int]:
    """One beat's dipole [3, L] and the sample index of QRS onset within it."""
    qrs_s, pr_s, qt_s = p.qrs_ms / 1000, p.pr_ms / 1000, p.qt_ms / 1000
    start_s = -(pr_s + 0.05)
    t = np.arange(start_s, qt_s + 0.25, 1.0 / fs_hz)
    dipole = np.zeros((3, t.size))

    if not p.af:
        dipole += np.outer(p.p_amp_mv * _P_DIRECTION, _gaussian(t, -pr_s + 0.05, 0.022))
    forces = _qrs_forces(p)
    for centre, sigma, vector in forces:
        dipole += np.outer(vector, _gaussian(t, centre * qrs_s, sigma * qrs_s))

    sigma_t = 0.045 * p.t_width * (p.rr_s / 0.8) ** 0.25
    t_peak_s = qt_s - 2.0 * sigma_t
    main_force = forces[1][2]
    dipole += np.outer(_t_dipole(p, main_force), _asymmetric_gaussian(t, t_peak_s, 1.4 * sigma_t, 0.8 * sigma_t))
    st = np.asarray(p.st_vector_mv) - (0.08 * _unit(*main_force) if p.lbbb else 0.0)
    plateau = _sigmoid((t - qrs_s) / 0.006) * _sigmoid((t_peak_s - t) / 0.03)
    dipole += np.outer(st, plateau)
    dipole += np.outer(p.u_amp_mv * _T_DIRECTION / 0.45, _gaussian(t, qt_s + 0.07, 0.035))
    return dipole, round(-start_s * fs_hz)


def rr_intervals_s(p: EcgParams, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Beat-to-beat intervals covering ``duration_s``: sinus with respiratory variation, or AF."""
    n = int(duration_s / p.rr_s) + 4
    if p.af:
        # Irregularly irregular: independent draws, coefficient of variation about 0.2.
        rr = p.rr_s * rng.lognormal(mean=-0.02, sigma=0.2, size=n)
    else:
        beat_times = np.arange(n) * p.rr_s
        respiration = 0.03 * np.sin(2 * np.pi * 0.25 * beat_times + rng.uniform(0, 2 * np.pi))
        rr = p.rr_s * (1.0 + respiration + 0.01 * rng.standard_normal(n))
    return np.clip(rr, 0.28, 2.5)


def synthesize_dipole(p: EcgParams, rng: np.random.Generator, fs_hz: float, duration_s: float) -> np.ndarray:
    """The heart's dipole over a recording [3, samples], beats placed on an RR sequence."""
    n_samples = round(duration_s * fs_hz)
    template, onset = beat_template(p, fs_hz)
    length = template.shape[1]
    # Room for a whole template on either side, so beats cut by the window edges need no special case.
    padded = np.zeros((3, n_samples + 2 * length + round(fs_hz)))
    qrs_onsets_s = rng.uniform(0.0, p.rr_s) + np.concatenate([[0.0], np.cumsum(rr_intervals_s(p, duration_s, rng))])
    for qrs_s in qrs_onsets_s[qrs_onsets_s < duration_s + 0.5]:
        begin = length + round(qrs_s * fs_hz) - onset
        padded[:, begin : begin + length] += template
    dipole = padded[:, length : length + n_samples]
    if p.af:
        dipole += _fibrillatory_waves(n_samples, fs_hz, rng)
    return dipole


def _fibrillatory_waves(n_samples: int, fs_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Chaotic 4–8 Hz atrial activity along the atrial axis (largest in V1 and the inferior leads)."""
    t = np.arange(n_samples) / fs_hz
    amplitude_mv = rng.uniform(0.03, 0.08)
    frequency_hz = rng.uniform(5.0, 7.5) + 0.5 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * t)
    phase = 2 * np.pi * np.cumsum(frequency_hz) / fs_hz
    wave = amplitude_mv * (np.sin(phase) + 0.4 * np.sin(1.7 * phase + rng.uniform(0, 6.28)))
    return np.outer(_ATRIAL_DIRECTION, wave)


def add_noise(leads_mv: np.ndarray, noise: NoiseParams, fs_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Baseline wander, mains hum, EMG, an electrode pop, a missing or flat lead, LA/RA reversal."""
    n_leads, n_samples = leads_mv.shape
    t = np.arange(n_samples) / fs_hz
    out = leads_mv.copy()
    wander_hz = rng.uniform(0.05, 0.5, size=(n_leads, 2, 1))
    wander_phase = rng.uniform(0, 2 * np.pi, size=(n_leads, 2, 1))
    wander_amp = noise.baseline_mv * rng.uniform(0.3, 1.0, size=(n_leads, 2, 1))
    out += (wander_amp * np.sin(2 * np.pi * wander_hz * t + wander_phase)).sum(axis=1)
    if noise.mains_mv > 0:
        out += noise.mains_mv * np.sin(2 * np.pi * noise.mains_hz * t + rng.uniform(0, 2 * np.pi))
    out += noise.emg_mv * rng.standard_normal(out.shape)
    if noise.pop_lead >= 0:
        start = int(rng.integers(n_samples))
        decay = np.exp(-(t[: n_samples - start]) / 0.3)
        out[noise.pop_lead, start:] += rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.5) * decay
    if noise.limb_reversal:
        out = _swap_left_and_right_arm(out)
    if noise.flat_lead >= 0:
        out[noise.flat_lead] = 0.0
    if noise.missing_lead >= 0:
        out[noise.missing_lead] = np.nan
    return out


def _swap_left_and_right_arm(leads_mv: np.ndarray) -> np.ndarray:
    """LA/RA reversal: I inverts, II and III swap, aVR and aVL swap (aVF unchanged)."""
    index = {name: i for i, name in enumerate(MODEL_LEAD_ORDER)}
    out = leads_mv.copy()
    out[index["I"]] = -leads_mv[index["I"]]
    out[index["II"]], out[index["III"]] = leads_mv[index["III"]], leads_mv[index["II"]]
    out[index["aVR"]], out[index["aVL"]] = leads_mv[index["aVL"]], leads_mv[index["aVR"]]
    return out


def synthesize_ecg(
    params: EcgParams,
    noise: NoiseParams,
    rng: np.random.Generator,
    *,
    fs_hz: float = 500.0,
    duration_s: float = 10.0,
) -> np.ndarray:
    """A 12-lead ECG [leads, samples] in mV, in :data:`MODEL_LEAD_ORDER`."""
    leads = PROJECTION @ synthesize_dipole(params, rng, fs_hz, duration_s)
    return add_noise(leads, noise, fs_hz, rng)
