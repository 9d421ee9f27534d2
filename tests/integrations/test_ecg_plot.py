"""The 12-lead printout is a PNG, and a missing lead still plots."""

import numpy as np

from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.ecg_plot import plot_12lead

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _record(leads=MODEL_LEAD_ORDER) -> EcgRecord:
    t = np.arange(5000) / 500.0
    signal = np.vstack([np.sin(2 * np.pi * 1.2 * t) * (i + 1) / 12 for i in range(len(leads))])
    signal[0, 200:300] = np.nan
    return EcgRecord("r1", signal, 500.0, tuple(leads))


def test_writes_a_png_with_title_and_annotations(tmp_path):
    path = plot_12lead(_record(), tmp_path / "ecg.png", title="Study 1", annotations=["I48.91 AF p=0.93"])
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20_000


def test_a_record_with_missing_leads_still_plots(tmp_path):
    path = plot_12lead(_record(MODEL_LEAD_ORDER[:8]), tmp_path / "partial.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
