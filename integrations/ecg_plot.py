"""A 12-lead ECG as a clinician reads it, on one landscape page, written as PNG or PDF.

The standard layout: 3 rows × 4 time-aligned columns of 2.5 s (I aVR V1 V4 / II aVL V2 V5 /
III aVF V3 V6) and a 10 s lead II rhythm strip, each row starting with a 1 mV × 200 ms
standardisation pulse. The paper is drawn at true scale (25 mm/s, 10 mm/mV, 1 mm / 5 mm grid),
so calipers work on a 100 % print of the PDF.

Above the tracing: the title, notes about the signal (an imputed lead, a filter), and the model's
findings in two framed boxes kept apart: those written back to the patient's chart and those only
stored. Text is wrapped to the page in a monospaced font of known width, and a box that cannot hold
every finding ends with "... and N more" after a whole finding, so nothing runs off the page.

Uses matplotlib's object API only (Agg canvas, PDF through ``savefig``): safe in a headless batch job.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import Rectangle

from integrations.ecg import EcgRecord, canonical_lead_name
from integrations.errors import PrintoutError

#: Rows of the standard printout; column c shows seconds [2.5c, 2.5c + 2.5).
LAYOUT: tuple[tuple[str, ...], ...] = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
RHYTHM_LEAD = "II"
PANEL_S = 2.5
STRIP_S = PANEL_S * 4
ROW_HEIGHT_MV = 3.0
MM_PER_S, MM_PER_MV = 25.0, 10.0
#: The standardisation pulse every electrocardiograph prints at the start of a row.
CALIBRATION_MV, CALIBRATION_S = 1.0, 0.2
#: Paper before t = 0 that holds the pulse: two large boxes.
LEAD_IN_S = 0.4
#: ``gid`` of the pulse lines, so a reader of the figure can find them.
CALIBRATION_GID = "calibration"
#: ``gid`` of the frames around the findings boxes.
FRAME_GID = "findings-frame"
PNG_DPI = 150


@dataclass(frozen=True, slots=True)
class Page:
    """A landscape sheet, in millimetres."""

    name: str
    width_mm: float
    height_mm: float


A4_LANDSCAPE = Page("A4", 297.0, 210.0)
LETTER_LANDSCAPE = Page("US Letter", 279.4, 215.9)
PAGES = {"a4": A4_LANDSCAPE, "letter": LETTER_LANDSCAPE}


@dataclass(frozen=True, slots=True)
class PrintoutFinding:
    """One positive model output as a reader sees it: names, not the model's internal keys."""

    name: str  # "Atrial fibrillation", "Potassium high"
    code: str | None  # printed after the name in brackets (an ICD-10 code); None prints nothing
    probability: float  # 0..1, printed as a percentage
    charted: bool  # written back to the patient's chart, or only stored in the agent's database
    quality: str | None = None  # how far to trust a positive, e.g. "PPV 62 %, sensitivity 71 %"
    explained_by: tuple[str, ...] = ()  # predicted lab abnormalities, e.g. "Potassium high (p 0.82)"
    predicted_lab: bool = False  # a lab abnormality predicted from the ECG: printed apart, as not measured


_MINOR, _MAJOR, _TRACE, _FRAME, _NOTE = "#f5c4c4", "#e38585", "black", "#555555", "#8a3b00"
_FONT = "DejaVu Sans Mono"  # ships with matplotlib; monospaced, so wrapping can count characters
_MM_PER_PT, _MM_PER_INCH = 25.4 / 72.0, 25.4
_TITLE_PT, _TEXT_PT, _SMALL_PT = 9.0, 7.5, 7.0
_LINE_SPACING = 1.35  # line pitch in font sizes
_MARGIN_MM, _FOOTER_MM, _GAP_MM, _BOX_PAD_MM = 7.0, 8.0, 3.0, 1.5
_MAX_TITLE_LINES, _MAX_NOTE_LINES = 2, 3
_INDENT = "    "
_PREDICTED_LABS = "Lab abnormalities predicted from the ECG (not measured):"
_NBSP = "\u00a0"  # a space that text wrapping never breaks at
_UNCONFIRMED = "Unconfirmed: findings are a model's output (% = its probability) and need a physician's over-read."


def plot_12lead(
    record: EcgRecord,
    path: Path,
    *,
    title: str = "",
    findings: Sequence[PrintoutFinding] | None = None,
    signal_notes: Sequence[str] = (),
    page: Page = A4_LANDSCAPE,
) -> Path:
    """Write the printout to ``path``, as PNG or PDF by its suffix; returns ``path``.

    Raises :class:`PrintoutError` for another suffix or a path that cannot be written.
    """
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in ("png", "pdf"):
        raise PrintoutError(path, "a printout is written as .png or .pdf")
    figure = draw_12lead(record, title=title, findings=findings, signal_notes=signal_notes, page=page)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format=suffix, dpi=PNG_DPI)
    except OSError as exc:
        raise PrintoutError(path, f"cannot be written: {exc}") from exc
    return path


def draw_12lead(
    record: EcgRecord,
    *,
    title: str = "",
    findings: Sequence[PrintoutFinding] | None = None,
    signal_notes: Sequence[str] = (),
    page: Page = A4_LANDSCAPE,
) -> Figure:
    """The printout as a figure; ``findings=None`` leaves out the findings boxes (an ECG without a model)."""
    figure = Figure(figsize=(page.width_mm / _MM_PER_INCH, page.height_mm / _MM_PER_INCH), dpi=PNG_DPI)
    FigureCanvasAgg(figure)
    sheet = _Sheet(figure, page)
    grid = _grid_box(page)
    axes = figure.add_axes(sheet.rect(grid))
    _draw_paper(axes)
    _draw_leads(axes, record)
    _draw_footer(sheet, grid, record, with_findings=findings is not None)
    _draw_header(sheet, grid, title, findings, signal_notes)
    return figure


# --- geometry ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Box:
    """A rectangle on the page, millimetres from the bottom-left corner."""

    x_mm: float
    y_mm: float
    width_mm: float
    height_mm: float

    @property
    def top_mm(self) -> float:
        return self.y_mm + self.height_mm


class _Sheet:
    """Places text, frames and axes on the figure in page millimetres."""

    def __init__(self, figure: Figure, page: Page) -> None:
        self.figure, self.page = figure, page

    def rect(self, box: _Box) -> tuple[float, float, float, float]:
        w, h = self.page.width_mm, self.page.height_mm
        return box.x_mm / w, box.y_mm / h, box.width_mm / w, box.height_mm / h

    def text(self, x_mm: float, top_mm: float, text: str, size_pt: float, *, bold: bool = False,
             colour: str = _TRACE) -> None:  # fmt: skip
        self.figure.text(
            x_mm / self.page.width_mm, top_mm / self.page.height_mm, text, fontproperties=_font(size_pt, bold),
            color=colour, va="top", ha="left", parse_math=False,
        )  # fmt: skip

    def wrap(self, text: str, width_mm: float, size_pt: float, *, bold: bool = False, indent: str = "",
             first_indent: str = "") -> list[str]:  # fmt: skip
        """Lines of ``text`` no wider than ``width_mm`` as the canvas draws them.

        The width of a character is measured on the canvas rather than taken from the font's 0.6 em:
        Agg's hinting rounds each advance to whole pixels, about 6 % wider at 150 dpi.
        """
        sample = "M" * 100
        width_px, _, _ = self.figure.canvas.get_renderer().get_text_width_height_descent(
            sample, _font(size_pt, bold), ismath=False
        )
        char_mm = width_px / len(sample) / self.figure.dpi * _MM_PER_INCH
        chars = max(16, math.floor(width_mm / char_mm))
        return textwrap.wrap(text, chars, initial_indent=first_indent, subsequent_indent=indent) or [""]

    def frame(self, box: _Box, colour: str, linewidth: float) -> None:
        x, y, w, h = self.rect(box)
        frame = Rectangle((x, y), w, h, transform=self.figure.transFigure, fill=False, edgecolor=colour)
        frame.set_linewidth(linewidth)
        frame.set_gid(FRAME_GID)
        self.figure.add_artist(frame)


def _grid_box(page: Page) -> _Box:
    width_mm = (LEAD_IN_S + STRIP_S) * MM_PER_S
    height_mm = ROW_HEIGHT_MV * (len(LAYOUT) + 1) * MM_PER_MV
    return _Box((page.width_mm - width_mm) / 2, _MARGIN_MM + _FOOTER_MM, width_mm, height_mm)


def _line_mm(size_pt: float) -> float:
    return size_pt * _LINE_SPACING * _MM_PER_PT


def _font(size_pt: float, bold: bool) -> FontProperties:
    return FontProperties(family=_FONT, size=size_pt, weight="bold" if bold else "normal")


def _capped(lines: list[str], max_lines: int) -> list[str]:
    """At most ``max_lines``, the last one marked as cut."""
    if len(lines) <= max_lines:
        return lines
    last = lines[max_lines - 1]
    return [*lines[: max_lines - 1], last[: max(0, len(last) - 4)] + " ..."]


# --- the tracing ------------------------------------------------------------------------------------------------


def _draw_paper(axes: Axes) -> None:
    """Pink 1 mm / 5 mm grid from the start of the lead-in; lines are counted in 1 mm steps, so no float drift."""
    height_mv = ROW_HEIGHT_MV * (len(LAYOUT) + 1)
    axes.set_xlim(-LEAD_IN_S, STRIP_S)
    axes.set_ylim(0.0, height_mv)
    axes.set_axis_off()
    step_s, step_mv = 1.0 / MM_PER_S, 1.0 / MM_PER_MV
    columns = range(round(-LEAD_IN_S / step_s), round(STRIP_S / step_s) + 1)
    rows = range(round(height_mv / step_mv) + 1)
    for major, colour, width in ((False, _MINOR, 0.25), (True, _MAJOR, 0.6)):
        vertical = [[(i * step_s, 0.0), (i * step_s, height_mv)] for i in columns if (i % 5 == 0) == major]
        horizontal = [[(-LEAD_IN_S, j * step_mv), (STRIP_S, j * step_mv)] for j in rows if (j % 5 == 0) == major]
        axes.add_collection(LineCollection(vertical + horizontal, colors=colour, linewidths=width, zorder=0))


def _draw_leads(axes: Axes, record: EcgRecord) -> None:
    leads = {canonical_lead_name(name): row for row, name in enumerate(record.lead_names)}
    top_mv = ROW_HEIGHT_MV * (len(LAYOUT) + 1)
    for row, names in enumerate(LAYOUT):
        baseline_mv = top_mv - ROW_HEIGHT_MV * (row + 0.5)
        _draw_calibration(axes, baseline_mv)
        for column, name in enumerate(names):
            start_s = column * PANEL_S
            if column:  # the short bar where one lead hands over to the next, as electrocardiographs print it
                axes.plot([start_s] * 2, [baseline_mv - 0.3, baseline_mv + 0.3], color=_TRACE, linewidth=0.9)
            _draw_trace(axes, record, leads.get(name), start_s, start_s + PANEL_S, baseline_mv, name)
    rhythm_mv = ROW_HEIGHT_MV * 0.5
    _draw_calibration(axes, rhythm_mv)
    _draw_trace(axes, record, leads.get(RHYTHM_LEAD), 0.0, STRIP_S, rhythm_mv, RHYTHM_LEAD)


def _draw_calibration(axes: Axes, baseline_mv: float) -> None:
    """1 mV high, 200 ms wide, centred in the lead-in."""
    rise_s = -(LEAD_IN_S + CALIBRATION_S) / 2
    fall_s = rise_s + CALIBRATION_S
    t_s = [-LEAD_IN_S + 0.04, rise_s, rise_s, fall_s, fall_s, -0.04]
    top_mv = baseline_mv + CALIBRATION_MV
    (line,) = axes.plot(t_s, [baseline_mv, baseline_mv, top_mv, top_mv, baseline_mv, baseline_mv],
                        color=_TRACE, linewidth=0.9, zorder=2)  # fmt: skip
    line.set_gid(CALIBRATION_GID)


def _draw_trace(
    axes: Axes, record: EcgRecord, row: int | None, start_s: float, end_s: float, baseline_mv: float, name: str
) -> None:
    label = name if row is not None else f"{name} (missing)"
    axes.text(start_s + 0.06, baseline_mv + 1.05, label, fontsize=8, fontweight="bold", family=_FONT, parse_math=False)
    if row is None:
        return
    first, last = int(start_s * record.fs_hz), min(int(end_s * record.fs_hz), record.n_samples)
    if first >= last:
        return
    t_s = np.arange(first, last) / record.fs_hz
    # NaN samples stay NaN, which matplotlib draws as gaps.
    axes.plot(t_s, record.signal_mv[row, first:last] + baseline_mv, color=_TRACE, linewidth=0.75, zorder=2)


# --- the text around it -----------------------------------------------------------------------------------------


def _draw_footer(sheet: _Sheet, grid: _Box, record: EcgRecord, *, with_findings: bool) -> None:
    parts = [
        f"{MM_PER_S:.0f} mm/s",
        f"{MM_PER_MV:.0f} mm/mV",
        f"calibration {CALIBRATION_MV:.0f} mV x {CALIBRATION_S * 1000:.0f} ms",
        f"sampled at {record.fs_hz:g} Hz",
        _duration_note(record.duration_s),
        f"record {record.record_id}",
    ]
    text = "   ".join(p for p in parts if p)
    lines = _capped(sheet.wrap(text, grid.width_mm, _SMALL_PT), 1) + ([_UNCONFIRMED] if with_findings else [])
    for i, line in enumerate(lines):
        sheet.text(grid.x_mm, grid.y_mm - 1.0 - i * _line_mm(_SMALL_PT), line, _SMALL_PT)


def _duration_note(duration_s: float) -> str:
    """Why a panel is empty, or that the strip is not the whole record."""
    if duration_s > STRIP_S + 0.05:
        return f"first {STRIP_S:.0f} s of {duration_s:.1f} s shown"
    if duration_s < STRIP_S - 0.05:
        return f"only {duration_s:.1f} s recorded"
    return ""


def _draw_header(
    sheet: _Sheet, grid: _Box, title: str, findings: Sequence[PrintoutFinding] | None, signal_notes: Sequence[str]
) -> None:
    top_mm = sheet.page.height_mm - _MARGIN_MM
    if title:
        for line in _capped(sheet.wrap(title, grid.width_mm, _TITLE_PT, bold=True), _MAX_TITLE_LINES):
            sheet.text(grid.x_mm, top_mm, line, _TITLE_PT, bold=True)
            top_mm -= _line_mm(_TITLE_PT)
    if signal_notes:
        note = "Signal: " + "; ".join(signal_notes)
        for line in _capped(sheet.wrap(note, grid.width_mm, _TEXT_PT, indent=_INDENT), _MAX_NOTE_LINES):
            sheet.text(grid.x_mm, top_mm, line, _TEXT_PT, colour=_NOTE)
            top_mm -= _line_mm(_TEXT_PT)
    if findings is None:
        return
    area = _Box(grid.x_mm, grid.top_mm + _GAP_MM, grid.width_mm, top_mm - 1.0 - grid.top_mm - _GAP_MM)
    half_mm = (area.width_mm - _GAP_MM) / 2
    left = _Box(area.x_mm, area.y_mm, half_mm, area.height_mm)
    right = _Box(area.x_mm + half_mm + _GAP_MM, area.y_mm, half_mm, area.height_mm)
    charted = [f for f in findings if f.charted]
    stored = [f for f in findings if not f.charted]
    heading = f"Charted findings ({len(charted)}), written to the patient's chart"
    _draw_findings_box(sheet, left, heading, charted, emphasis=True)
    _draw_findings_box(sheet, right, f"Stored only, not charted ({len(stored)})", stored, emphasis=False)


def _draw_findings_box(
    sheet: _Sheet, box: _Box, heading: str, findings: Sequence[PrintoutFinding], *, emphasis: bool
) -> None:
    sheet.frame(box, _TRACE if emphasis else _FRAME, 1.0 if emphasis else 0.5)
    x_mm, width_mm = box.x_mm + _BOX_PAD_MM, box.width_mm - 2 * _BOX_PAD_MM
    top_mm = box.top_mm - _BOX_PAD_MM
    [heading_line] = _capped(sheet.wrap(heading, width_mm, _TEXT_PT, bold=True), 1)
    sheet.text(x_mm, top_mm, heading_line, _TEXT_PT, bold=True)
    top_mm -= _line_mm(_TEXT_PT) * 1.2
    max_lines = math.floor((top_mm - box.y_mm - _BOX_PAD_MM + 0.5) / _line_mm(_TEXT_PT))
    diagnoses = [f for f in findings if not f.predicted_lab]
    labs = [f for f in findings if f.predicted_lab]
    blocks = [_finding_lines(sheet, f, width_mm) for f in diagnoses + labs]
    if labs:  # a reader must not take "Potassium high" for a measured value
        blocks[len(diagnoses)].insert(0, _PREDICTED_LABS)
    lines = _fitted(blocks, max_lines) if blocks else ["none"]
    colour = _TRACE if emphasis else _FRAME
    for i, line in enumerate(lines):
        bold = line == _PREDICTED_LABS
        sheet.text(x_mm, top_mm - i * _line_mm(_TEXT_PT), line, _TEXT_PT, bold=bold, colour=colour)


def _finding_lines(sheet: _Sheet, finding: PrintoutFinding, width_mm: float) -> list[str]:
    head = finding.name + (f" [{finding.code}]" if finding.code else "") + f"  {100 * finding.probability:.0f} %"
    if finding.quality:
        head += f"  ({finding.quality})"
    lines = sheet.wrap(_unbreakable_units(head), width_mm, _TEXT_PT, indent=_INDENT)
    if finding.explained_by:
        why = "explained by predicted " + ", ".join(_unbreakable(lab) for lab in finding.explained_by)
        lines += sheet.wrap(why, width_mm, _TEXT_PT, indent=_INDENT * 2, first_indent=_INDENT)
    return lines


def _unbreakable(text: str) -> str:
    """No line break inside: "Potassium high (p 0.82)" is one item to a reader."""
    return text.replace(" ", _NBSP)


def _unbreakable_units(text: str) -> str:
    """No line break between a number and its "%"."""
    return text.replace(" %", _NBSP + "%")


def _fitted(blocks: list[list[str]], max_lines: int) -> list[str]:
    """Whole findings while they fit, then one line saying how many were left out."""
    lines: list[str] = []
    for i, block in enumerate(blocks):
        later = len(blocks) - i - 1
        if len(lines) + len(block) + (1 if later else 0) > max_lines:
            return [*lines, f"... and {len(blocks) - i} more (see the store)"][:max_lines]
        lines += block
    return lines
