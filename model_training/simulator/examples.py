"""Textbook examples synthesized with the simulator's own physiology, for looking at."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.ecg_plot import plot_12lead
from model_training.simulator.ecg_synth import EcgParams, NoiseParams, synthesize_ecg
from model_training.simulator.physiology import CONDITIONS_BY_KEY, EcgEffects, lab_driven_ecg_effects

FS_HZ = 500.0
_LIGHT_NOISE = NoiseParams(baseline_mv=0.05, emg_mv=0.008)


def _condition_effects(key: str, variant: int = 0) -> EcgEffects:
    condition = CONDITIONS_BY_KEY[key]
    return condition.ecg + condition.sign + condition.variants[variant].ecg  # a patient who shows the sign


EXAMPLES: dict[str, tuple[str, EcgEffects]] = {
    "normal": ("Normal sinus rhythm", EcgEffects()),
    "hyperkalemia": ("Hyperkalemia, K 7.0 mmol/L", lab_driven_ecg_effects({"potassium": 7.0}, 98.6)),
    "atrial_fibrillation": ("Atrial fibrillation", _condition_effects("atrial_fibrillation")),
    "anterior_stemi": ("Anterior STEMI (I21.09)", _condition_effects("acute_mi", variant=0)),
}


def plot_examples(out_dir: Path, *, seed: int = 0) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (name, (title, effects)) in enumerate(EXAMPLES.items()):
        params = EcgParams.from_effects(effects)
        signal = synthesize_ecg(params, _LIGHT_NOISE, np.random.default_rng([seed, i]), fs_hz=FS_HZ)
        record = EcgRecord(record_id=name, signal_mv=signal, fs_hz=FS_HZ, lead_names=MODEL_LEAD_ORDER,
                           source="simulated-example")  # fmt: skip
        notes = [synthesis_note(params)]
        paths.append(plot_12lead(record, out_dir / f"{name}.png", title=f"Simulated: {title}", signal_notes=notes))
    return paths


def synthesis_note(params: EcgParams) -> str:
    """The intervals the example was synthesised with (set, not measured); atrial fibrillation has no P wave."""
    rate = f"mean ventricular rate {params.hr_bpm:.0f} bpm, irregular" if params.af else f"HR {params.hr_bpm:.0f} bpm"
    atrial = "no P waves" if params.af else f"PR {params.pr_ms:.0f} ms"
    return f"synthesised with {rate}, {atrial}, QRS {params.qrs_ms:.0f} ms, QTc {params.qtc_ms:.0f} ms"
