"""A 12-lead ECG as a clinician reads it: 3 × 4 panels of 2.5 s plus a lead II rhythm strip, on ECG paper.

25 mm/s and 10 mm/mV, with a 1 mm / 5 mm grid. Uses matplotlib's object API and the
Agg canvas only, so it is safe in a headless batch job.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from integrations.ecg import EcgRecord, canonical_lead_name

#: Rows of the standard printout; column c shows seconds [2.5c, 2.5c + 2.5).
LAYOUT: tuple[tuple[str, ...], ...] = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
RHYTHM_LEAD = "II"
PANEL_S = 2.5
ROW_HEIGHT_MV = 3.0
MM_PER_S, MM_PER_MV = 25.0, 10.0
_MINOR, _MAJOR, _TRACE = "#f7c6c6", "#e88a8a", "black"


def plot_12lead(record: EcgRecord, path: Path, *, title: str = "", annotations: Sequence[str] = ()) -> Path:
    """Write ``record`` as a standard 12-lead PNG to ``path``; returns ``path``."""
    leads = {canonical_lead_name(name): row for row, name in enumerate(record.lead_names)}
    width_s = PANEL_S * 4
    height_mv = ROW_HEIGHT_MV * (len(LAYOUT) + 1)
    header_mm = 8.0 + 5.0 * len(annotations)
    width_in = width_s * MM_PER_S / 25.4
    height_in = (height_mv * MM_PER_MV + header_mm) / 25.4
    figure = Figure(figsize=(width_in, height_in), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.0, 0.0, 1.0, height_mv * MM_PER_MV / (height_mv * MM_PER_MV + header_mm)))
    _draw_paper(axes, width_s, height_mv)
    for row, names in enumerate(LAYOUT):
        baseline_mv = height_mv - ROW_HEIGHT_MV * (row + 0.5)
        for column, name in enumerate(names):
            start_s = column * PANEL_S
            _draw_trace(axes, record, leads.get(name), start_s, start_s + PANEL_S, baseline_mv, name)
    _draw_trace(axes, record, leads.get(RHYTHM_LEAD), 0.0, width_s, ROW_HEIGHT_MV * 0.5, RHYTHM_LEAD)
    text = "\n".join([title, *annotations]) if title else "\n".join(annotations)
    figure.text(0.005, 0.995, text, va="top", ha="left", fontsize=9, family="monospace")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def _draw_paper(axes, width_s: float, height_mv: float) -> None:  # type: ignore[no-untyped-def]
    axes.set_xlim(0.0, width_s)
    axes.set_ylim(0.0, height_mv)
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_visible(False)
    for step_s, step_mv, colour, width in ((0.04, 0.1, _MINOR, 0.3), (0.2, 0.5, _MAJOR, 0.6)):
        for x in np.arange(0.0, width_s + 1e-9, step_s):
            axes.axvline(x, color=colour, linewidth=width, zorder=0)
        for y in np.arange(0.0, height_mv + 1e-9, step_mv):
            axes.axhline(y, color=colour, linewidth=width, zorder=0)


def _draw_trace(  # type: ignore[no-untyped-def]
    axes, record: EcgRecord, row: int | None, start_s: float, end_s: float, baseline_mv: float, name: str
) -> None:
    axes.text(start_s + 0.05, baseline_mv + 0.9, name if row is not None else f"{name} (missing)", fontsize=9)
    if row is None:
        return
    first, last = int(start_s * record.fs_hz), min(int(end_s * record.fs_hz), record.n_samples)
    if first >= last:
        return
    t_s = np.arange(first, last) / record.fs_hz
    # NaN samples stay NaN, which matplotlib draws as gaps.
    axes.plot(t_s, record.signal_mv[row, first:last] + baseline_mv, color=_TRACE, linewidth=0.7, zorder=2)
