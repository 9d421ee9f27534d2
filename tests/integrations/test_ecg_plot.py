"""The 12-lead printout: standard layout at 25 mm/s and 10 mm/mV, a 1 mV calibration pulse per row, findings by
name in a charted box kept apart from a stored-only box, and no text off the page; written as PNG or one-page PDF."""

import re

import numpy as np
import pytest
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.ecg_plot import (
    A4_LANDSCAPE,
    CALIBRATION_GID,
    FRAME_GID,
    LETTER_LANDSCAPE,
    PrintoutFinding,
    draw_12lead,
    plot_12lead,
)
from integrations.errors import PrintoutError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MM_PER_INCH = 25.4
AF = PrintoutFinding(
    "Atrial fibrillation", "I48", 0.93, charted=True, quality="PPV 62 %, sensitivity 71 %",
    explained_by=("Potassium high (p 0.82)",),
)  # fmt: skip
POTASSIUM = PrintoutFinding("Potassium high", None, 0.82, charted=True, predicted_lab=True)
TSH = PrintoutFinding("TSH high", None, 0.57, charted=False, predicted_lab=True)


def _record(leads=MODEL_LEAD_ORDER, *, fs_hz: float = 500.0, duration_s: float = 10.0) -> EcgRecord:
    t = np.arange(round(fs_hz * duration_s)) / fs_hz
    signal = np.vstack([np.sin(2 * np.pi * 1.2 * t) * (i + 1) / 12 for i in range(len(leads))])
    signal[0, 200:300] = np.nan
    return EcgRecord("r1", signal, fs_hz, tuple(leads))


def _texts(figure) -> list[Text]:
    figure.canvas.draw()
    return [t for t in figure.findobj(Text) if t.get_visible() and t.get_text()]


def _plain(text: Text) -> str:
    """The text as read, with the printout's no-break spaces as spaces."""
    return text.get_text().replace("\u00a0", " ")


def _text(figure, start: str) -> Text:
    [text] = [t for t in _texts(figure) if _plain(t).startswith(start)]
    return text


def _frame_around(figure, text: Text) -> tuple[float, float, float, float]:
    """The findings frame that holds ``text`` whole (there must be exactly one)."""
    renderer = figure.canvas.get_renderer()
    extent = text.get_window_extent(renderer)
    frames = [p.get_window_extent(renderer) for p in figure.findobj(Rectangle) if p.get_gid() == FRAME_GID]
    [frame] = [f for f in frames if f.x0 <= extent.x0 and extent.x1 <= f.x1 and f.y0 <= extent.y0 and extent.y1 <= f.y1]
    return frame.bounds


def _frame_around_or_none(figure, text: Text) -> tuple[float, float, float, float] | None:
    try:
        return _frame_around(figure, text)
    except ValueError:
        return None


def test_writes_a_png_with_title_findings_and_signal_notes(tmp_path):
    path = plot_12lead(_record(), tmp_path / "ecg.png", title="Study 1", findings=[AF], signal_notes=["HR 72 bpm"])
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20_000


def test_a_record_with_missing_leads_still_plots(tmp_path):
    path = plot_12lead(_record(MODEL_LEAD_ORDER[:8]), tmp_path / "partial.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    labels = {t.get_text() for t in _texts(draw_12lead(_record(MODEL_LEAD_ORDER[:8])))}
    assert {"V3 (missing)", "V6 (missing)", "V2"} <= labels


@pytest.mark.parametrize(
    ("page", "width_pt", "height_pt"), [(A4_LANDSCAPE, 841.89, 595.28), (LETTER_LANDSCAPE, 792, 612)]
)
def test_the_pdf_is_one_landscape_page(tmp_path, page, width_pt, height_pt):
    data = plot_12lead(_record(), tmp_path / "ecg.pdf", findings=[AF, TSH], page=page).read_bytes()
    assert data.startswith(b"%PDF")
    assert len(re.findall(rb"/Type\s*/Page\b", data)) == 1
    [box] = re.findall(rb"/MediaBox\s*\[\s*([^\]]*)\]", data)
    assert [float(v) for v in box.split()] == pytest.approx([0, 0, width_pt, height_pt], abs=0.01)


def test_only_png_and_pdf_are_written_and_an_unwritable_path_is_a_printout_error(tmp_path):
    with pytest.raises(PrintoutError, match=r"ecg\.svg: a printout is written as \.png or \.pdf"):
        plot_12lead(_record(), tmp_path / "ecg.svg")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(PrintoutError, match="cannot be written"):
        plot_12lead(_record(), tmp_path / "a-file" / "ecg.png")


def test_the_paper_is_true_scale_25_mm_per_s_and_10_mm_per_mv_and_says_so():
    figure = draw_12lead(_record())
    [axes] = figure.axes
    (x0, y0), (x1, y1) = axes.transData.transform([(0.0, 0.0), (1.0, 1.0)])
    px_per_mm = figure.dpi / MM_PER_INCH
    assert (x1 - x0) / px_per_mm == pytest.approx(25.0) and (y1 - y0) / px_per_mm == pytest.approx(10.0)
    assert _text(figure, "25 mm/s   10 mm/mV")


def test_every_row_starts_with_a_1_mv_by_200_ms_calibration_pulse():
    figure = draw_12lead(_record())
    [axes] = figure.axes
    pulses = [line for line in axes.get_lines() if line.get_gid() == CALIBRATION_GID]
    assert len(pulses) == 4  # three rows of four leads and the rhythm strip
    baselines_mv = []
    for pulse in pulses:
        t_s, y_mv = np.asarray(pulse.get_xdata(), float), np.asarray(pulse.get_ydata(), float)
        baseline_mv, top_mv = y_mv.min(), y_mv.max()
        assert top_mv - baseline_mv == pytest.approx(1.0)
        plateau_s = t_s[y_mv == top_mv]
        assert plateau_s.max() - plateau_s.min() == pytest.approx(0.2)
        assert t_s.max() < 0.0  # before the tracing starts, on the lead-in paper
        baselines_mv.append(baseline_mv)
    assert len(set(np.round(baselines_mv, 6))) == 4


def test_findings_are_printed_by_name_with_percentage_quality_and_explaining_labs():
    texts = [_plain(t) for t in _texts(draw_12lead(_record(), findings=[AF, POTASSIUM, TSH]))]
    assert "Atrial fibrillation [I48]  93 %  (PPV 62 %, sensitivity 71 %)" in texts
    assert any("explained by predicted Potassium high (p 0.82)" in t for t in texts)
    assert "Potassium high  82 %" in texts and "TSH high  57 %" in texts
    assert not any("potassium_high" in t or "tsh_high" in t for t in texts)


def test_predicted_lab_abnormalities_follow_the_diagnoses_under_a_heading_saying_they_are_not_measured():
    figure = draw_12lead(_record(), findings=[POTASSIUM, AF])
    heading = _text(figure, "Lab abnormalities predicted from the ECG (not measured):")
    top_down = [
        _text(figure, start).get_position()[1] for start in ("Atrial fibrillation", "Lab abnormalities", "Potassium")
    ]
    assert top_down == sorted(top_down, reverse=True)
    assert _frame_around(figure, heading) == _frame_around(figure, _text(figure, "Charted findings (2)"))


def test_charted_and_stored_only_findings_are_in_separate_frames():
    figure = draw_12lead(_record(), findings=[AF, POTASSIUM, TSH])
    charted = _frame_around(figure, _text(figure, "Charted findings (2)"))
    stored = _frame_around(figure, _text(figure, "Stored only, not charted (1)"))
    (charted_x0, _, charted_width, _), (stored_x0, _, _, _) = charted, stored
    assert charted_x0 + charted_width < stored_x0  # side by side, not overlapping
    assert _frame_around(figure, _text(figure, "Atrial fibrillation")) == charted
    assert _frame_around(figure, _text(figure, "Potassium high")) == charted
    assert _frame_around(figure, _text(figure, "TSH high")) == stored


def test_an_empty_section_says_none_and_a_plain_ecg_has_no_findings_boxes():
    figure = draw_12lead(_record(), findings=[TSH])
    [none] = [t for t in _texts(figure) if t.get_text() == "none"]
    assert _frame_around(figure, none) == _frame_around(figure, _text(figure, "Charted findings (0)"))
    plain = [t.get_text() for t in _texts(draw_12lead(_record()))]
    assert not any(t.startswith(("Charted", "Stored", "Unconfirmed")) for t in plain)


@pytest.mark.parametrize("page", [A4_LANDSCAPE, LETTER_LANDSCAPE])
def test_a_long_header_is_wrapped_and_cut_at_whole_findings_never_off_the_page(page):
    long_name = "Atrioventricular block, complete, with a long descriptive display name from the code system"
    findings = [
        PrintoutFinding(f"{long_name} {i}", f"I44.{i}", 0.99 - i / 100, charted=i % 3 != 0,
                        quality="PPV 62 %, sensitivity 71 %", explained_by=("Potassium high (p 0.82)",) * 4)
        for i in range(40)
    ]  # fmt: skip
    title = "Study 123456 " + "(a very long source identifier) " * 12
    notes = [f"lead {lead} imputed from neighbouring leads" for lead in MODEL_LEAD_ORDER]
    figure = draw_12lead(_record(), title=title, findings=findings, signal_notes=notes, page=page)
    texts = _texts(figure)
    renderer, page_box = figure.canvas.get_renderer(), figure.bbox
    [axes] = figure.axes
    tracing = axes.get_window_extent(renderer)
    for text in texts:
        extent = text.get_window_extent(renderer)
        assert page_box.x0 <= extent.x0 and extent.x1 <= page_box.x1, text.get_text()
        assert page_box.y0 <= extent.y0 and extent.y1 <= page_box.y1, text.get_text()
        if text in figure.texts:  # header and footer: as wide as the tracing at most, and never over it
            assert tracing.x0 <= extent.x0 and extent.x1 <= tracing.x1, text.get_text()
            assert not extent.overlaps(tracing), text.get_text()
    for heading, n_findings in (("Charted findings (26)", 26), ("Stored only, not charted (14)", 14)):
        frame = _frame_around(figure, _text(figure, heading))
        inside = [_plain(t) for t in texts if t in figure.texts and _frame_around_or_none(figure, t) == frame]
        starting_inside = [t for t in figure.texts if _starts_in(t, frame)]
        assert len(inside) == len(starting_inside) > 3  # a line that starts in the box ends in it
        shown = sum(line.startswith("Atrioventricular") for line in inside)
        assert shown >= 1 and inside[-1] == f"... and {n_findings - shown} more (see the store)"


def _starts_in(text: Text, frame: tuple[float, float, float, float]) -> bool:
    x0, y0, width, height = frame
    x, y = text.get_window_extent().p0
    return x0 <= x <= x0 + width and y0 <= y <= y0 + height


def test_a_short_record_says_why_panels_are_empty():
    texts = [_plain(t) for t in _texts(draw_12lead(_record(duration_s=4.0)))]
    assert any("only 4.0 s recorded" in t for t in texts)


def test_vendor_lead_names_and_a_longer_record_at_another_rate():
    vendor_leads = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
    figure = draw_12lead(_record(vendor_leads, fs_hz=257.0, duration_s=12.0))
    texts = [_plain(t) for t in _texts(figure)]
    assert not any("(missing)" in t for t in texts) and "aVR" in texts
    assert any("first 10 s of 12.0 s shown" in t and "sampled at 257 Hz" in t for t in texts)
