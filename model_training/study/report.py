"""The study's outputs: ``study.json``, ``study.png`` (the pre-registered variants), ``study-variants.png`` (every
variant of the primary arm side by side, once more than one has a complete cell) and the markdown tables
``ecg-train study --report`` prints."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from model_training.evaluate import MODEL_NAMES
from model_training.study.analysis import (
    GROUPS,
    ArmSummary,
    CellResult,
    GoalCheck,
    Summary,
    check_goals,
    holm_adjusted,
    summarize_study,
)
from model_training.study.grid import StudyGrid

STUDY_FILE = "study.json"
FIGURE_FILE = "study.png"
VARIANTS_FIGURE_FILE = "study-variants.png"
MODEL_LABELS = {"ecg_only": "ECG-only", "ours": "ours", "multimodal": "multimodal"}


@dataclasses.dataclass(frozen=True, slots=True)
class StudyReport:
    grid: StudyGrid
    results: list[CellResult]
    summaries: list[ArmSummary]
    n_cells_expected: int

    @classmethod
    def of(cls, grid: StudyGrid, results: list[CellResult], n_cells_expected: int) -> StudyReport:
        return cls(grid, results, summarize_study(results), n_cells_expected)

    @property
    def primary(self) -> ArmSummary | None:
        endpoint = self.grid.primary_endpoint
        return next((s for s in self.summaries if (s.arm, s.config) == (endpoint.arm, endpoint.config)), None)

    @property
    def primary_arm_variants(self) -> list[ArmSummary]:
        """Every variant with a complete cell on the primary endpoint's arm, in the grid's order."""
        return [s for s in self.summaries if s.arm == self.grid.primary_endpoint.arm]

    def holm_p(self) -> dict[str, float]:
        """The primary arm's variants other than the pre-registered one: their paired t-test p, Holm-adjusted
        over that family (:func:`model_training.study.analysis.holm_adjusted`)."""
        family = [s for s in self.primary_arm_variants if s.config != self.grid.primary_endpoint.config]
        return dict(zip([s.config for s in family], holm_adjusted([s.delta.p_t for s in family]), strict=True))

    def goals(self, summary: ArmSummary) -> list[GoalCheck]:
        return check_goals(summary, self.grid.goals)

    def to_dict(self) -> dict[str, object]:
        primary = self.primary
        endpoint = dataclasses.asdict(self.grid.primary_endpoint)
        if primary is not None:
            goals = self.goals(primary)
            endpoint |= {"seeds": list(primary.seeds), "result": _plain(primary.delta), "goals": _plain(goals),
                         "all_goals_met": all(g.met for g in goals)}  # fmt: skip
        return {
            "grid": self.grid.to_dict(),
            "cells_complete": len(self.results),
            "cells_expected": self.n_cells_expected,
            "primary_endpoint": endpoint,
            "variants_p_t_holm": {config: _float(p) for config, p in self.holm_p().items()},
            "summaries": [_plain(s) | {"goals": _plain(self.goals(s))} for s in self.summaries],
            "cells": [_cell_dict(r) for r in self.results],
        }


def write_outputs(report: StudyReport, out_dir: Path) -> list[Path]:
    """Write ``study.json`` and the figures; returns the paths written."""
    json_path, figure_path = out_dir / STUDY_FILE, out_dir / FIGURE_FILE
    partial = json_path.with_name(STUDY_FILE + ".partial")
    partial.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    partial.replace(json_path)
    plot_study(report, figure_path)
    written = [json_path, figure_path]
    if len(report.primary_arm_variants) > 1:
        written.append(plot_variants(report, out_dir / VARIANTS_FIGURE_FILE))
    return written


# ---------------------------------------------------------------- markdown


def markdown(report: StudyReport) -> str:
    lines = [f"Cells complete: {len(report.results)} of {report.n_cells_expected}.", ""]
    lines += [*_main_table(report.summaries), "", *_group_table(report.summaries), ""]
    primary = report.primary
    if primary is not None:
        endpoint = report.grid.primary_endpoint
        lines += [f"Pre-registered goals ({endpoint.arm}, {endpoint.config}; primary endpoint: {endpoint.metric}):", ""]
        lines += ["| goal | target | value | met |", "|---|---|---|---|"]
        lines += [f"| {g.name} | {g.target} | {_goal_value(g)} | {'yes' if g.met else 'no'} |"
                  for g in report.goals(primary)]  # fmt: skip
        lines.append("")
    lines += _variants_table(report)
    lines += _seed_table(report.results)
    return "\n".join(lines) + "\n"


def _main_table(summaries: list[ArmSummary]) -> list[str]:
    lines = ["| arm | config | seeds | ECG-only | ours | multimodal | delta [95 % CI] | p (t) | p (Wilcoxon) "
             "| delta > 0 | gap closed | lab macro AUROC |", "|---" * 12 + "|"]  # fmt: skip
    for s in summaries:
        d = s.delta
        lines.append(f"| {s.arm} | {s.config} | {len(s.seeds)} | " + " | ".join(_ms(s.macro[m]) for m in MODEL_NAMES)
                     + f" | {_ci(d.mean_delta, d.ci_low, d.ci_high)} | {_p(d.p_t)} | {_p(d.p_wilcoxon)} "
                     f"| {d.n_positive}/{d.n} | {_ms(s.gap_closed, len(s.seeds))} | {_ms(s.lab_macro)} |")  # fmt: skip
    return lines


def _group_table(summaries: list[ArmSummary]) -> list[str]:
    lines = ["| arm | config | visibility | codes | ECG-only | ours | multimodal | delta [95 % CI] | delta > 0 |",
             "|---" * 9 + "|"]  # fmt: skip
    for s in summaries:
        for group in GROUPS:
            g = s.groups[group]
            lines.append(f"| {s.arm} | {s.config} | {group} | {_num(g.n_codes.mean, 0)} | "
                         + " | ".join(_ms(g.macro[m]) for m in MODEL_NAMES)
                         + f" | {_ci(g.delta.mean_delta, g.delta.ci_low, g.delta.ci_high)} "
                         f"| {g.delta.n_positive}/{g.delta.n} |")  # fmt: skip
    return lines


def _variants_table(report: StudyReport) -> list[str]:
    """The primary arm's variants against ECG-only, with the improvement variants' p adjusted together."""
    holm = report.holm_p()
    if not holm:
        return []
    endpoint = report.grid.primary_endpoint
    lines = [f"Every variant on arm {endpoint.arm} against ECG-only (the improvement variants are exploratory: their "
             f"p adjusted by Holm over the {len(holm)} of them run so far; {endpoint.config} is the pre-registered "
             "test):", "",
             "| config | seeds | delta [95 % CI] | p (t) | p (t, Holm) | delta > 0 | gap closed | lab macro AUROC |",
             "|---" * 8 + "|"]  # fmt: skip
    for s in report.primary_arm_variants:
        d = s.delta
        lines.append(f"| {s.config} | {len(s.seeds)} | {_ci(d.mean_delta, d.ci_low, d.ci_high)} | {_p(d.p_t)} "
                     f"| {_p(holm.get(s.config))} | {d.n_positive}/{d.n} | {_ms(s.gap_closed, len(s.seeds))} "
                     f"| {_ms(s.lab_macro)} |")  # fmt: skip
    return [*lines, ""]


def _seed_table(results: list[CellResult]) -> list[str]:
    lines = ["| arm | config | seed | ECG-only | ours | multimodal | delta | gap closed | lab macro AUROC |",
             "|---" * 9 + "|"]  # fmt: skip
    for r in results:
        lines.append(f"| {r.arm} | {r.config} | {r.seed} | " + " | ".join(_num(r.macro[m]) for m in MODEL_NAMES)
                     + f" | {_num(r.delta, signed=True)} | {_num(r.gap_closed)} | {_num(r.lab_macro)} |")  # fmt: skip
    return lines


def _num(value: float | None, digits: int = 3, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _ms(summary: Summary, n_seeds: int | None = None) -> str:
    """``mean ± sd``; with ``n_seeds``, says over how many seeds when the figure is undefined in some."""
    if summary.n == 0:
        return "n/a"
    text = _num(summary.mean) if summary.n == 1 else f"{_num(summary.mean)} ± {_num(summary.sd)}"
    return text if n_seeds is None or summary.n == n_seeds else f"{text} (n={summary.n})"


def _ci(mean: float, low: float, high: float) -> str:
    if not math.isfinite(low):
        return _num(mean, signed=True)
    return f"{_num(mean, signed=True)} [{_num(low, signed=True)}, {_num(high, signed=True)}]"


def _p(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3g}"


def _goal_value(goal: GoalCheck) -> str:
    return f"{goal.value:.0f}" if goal.name.startswith("delta") else _num(goal.value)


# ---------------------------------------------------------------- figure


def plot_study(report: StudyReport, path: Path) -> None:
    """Per (arm, pre-registered variant): each seed's macro AUROC of the three models (top); delta per seed with the
    mean and its 95 % CI, overall and per visibility group (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summaries = [s for s in report.summaries if s.config in report.grid.run_by_default]
    columns = max(1, len(summaries))
    figure, axes = plt.subplots(2, columns, figsize=(4.2 * columns, 7.0), dpi=110, squeeze=False)
    for j, summary in enumerate(summaries):
        cells = [r for r in report.results if (r.arm, r.config) == (summary.arm, summary.config)]
        _plot_models(axes[0, j], summary, cells)
        _plot_deltas(axes[1, j], summary, cells)
    if not summaries:
        axes[0, 0].set_title("no complete cell yet")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_variants(report: StudyReport, path: Path) -> Path:
    """The primary arm's variants side by side, against the pre-registered goals: delta ours − ECG-only, gap closed
    and lab macro AUROC, each seed a dot and the mean with its 95 % CI (delta) or ± sd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summaries, goals = report.primary_arm_variants, report.grid.goals
    figure, axes = plt.subplots(1, 3, figsize=(4.0 + 1.4 * len(summaries), 4.4), dpi=110, squeeze=False)
    panels = (("delta, variant - ECG-only", lambda r: r.delta, _delta_interval, 0.0),
              ("gap closed", lambda r: r.gap_closed, lambda s: _sd_interval(s.gap_closed), goals.min_gap_closed),
              ("lab macro AUROC", lambda r: r.lab_macro, lambda s: _sd_interval(s.lab_macro),
               goals.min_lab_macro_auroc))  # fmt: skip
    for axis, (label, value_of, interval_of, goal) in zip(axes[0], panels, strict=True):
        for i, summary in enumerate(summaries):
            cells = [r for r in report.results if (r.arm, r.config) == (summary.arm, summary.config)]
            values = [value_of(c) for c in cells if math.isfinite(value_of(c))]
            axis.scatter([i] * len(values), values, color="tab:gray", alpha=0.7, s=16)
            low, mean, high = interval_of(summary)
            if math.isfinite(mean):
                axis.errorbar([i + 0.2], [mean], yerr=[[mean - low], [high - mean]], fmt="s", color="tab:blue",
                              capsize=4)  # fmt: skip
        is_zero_line = goal == 0.0
        axis.axhline(goal, color="black" if is_zero_line else "tab:red", linewidth=0.8,
                     linestyle="-" if is_zero_line else "--")  # fmt: skip
        axis.set_xticks(range(len(summaries)), [s.config for s in summaries], rotation=30, ha="right")
        axis.set_title(label)
    figure.suptitle(f"arm {report.grid.primary_endpoint.arm}: every variant on the same seeds (goals dashed)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def _delta_interval(summary: ArmSummary) -> tuple[float, float, float]:
    """(low, mean, high) of the paired delta: its 95 % CI (the mean alone with one seed)."""
    d = summary.delta
    low, high = (d.ci_low, d.ci_high) if math.isfinite(d.ci_low) else (d.mean_delta, d.mean_delta)
    return low, d.mean_delta, high


def _sd_interval(figure: Summary) -> tuple[float, float, float]:
    """(mean − sd, mean, mean + sd) over seeds (the mean alone with one seed)."""
    sd = figure.sd if math.isfinite(figure.sd) else 0.0
    return figure.mean - sd, figure.mean, figure.mean + sd


def _plot_models(axis, summary: ArmSummary, cells: list[CellResult]) -> None:
    x = range(len(MODEL_NAMES))
    for cell in cells:
        axis.plot(x, [cell.macro[m] for m in MODEL_NAMES], marker="o", alpha=0.6, label=f"seed {cell.seed}")
    axis.set_xticks(list(x), [MODEL_LABELS[m] for m in MODEL_NAMES])
    axis.set_title(f"{summary.arm} / {summary.config}")
    axis.set_ylabel("test macro AUROC")
    axis.legend(fontsize="small")


def _plot_deltas(axis, summary: ArmSummary, cells: list[CellResult]) -> None:
    names = ("all", *GROUPS)
    tests = (summary.delta, *(summary.groups[g].delta for g in GROUPS))
    for i, (name, test) in enumerate(zip(names, tests, strict=True)):
        deltas = [c.delta if name == "all" else c.groups[name].delta for c in cells]
        axis.scatter([i] * len(deltas), deltas, color="tab:gray", alpha=0.7, s=16)
        if math.isfinite(test.ci_low):
            axis.errorbar([i + 0.15], [test.mean_delta], yerr=[[test.mean_delta - test.ci_low],
                          [test.ci_high - test.mean_delta]], fmt="s", color="tab:blue", capsize=4)  # fmt: skip
        elif math.isfinite(test.mean_delta):
            axis.scatter([i + 0.15], [test.mean_delta], marker="s", color="tab:blue")
    axis.axhline(0.0, color="black", linewidth=0.8)
    axis.set_xticks(range(len(names)), names)
    axis.set_ylabel("delta ours - ECG-only (mean, 95 % CI)")


# ---------------------------------------------------------------- JSON


def _cell_dict(result: CellResult) -> dict[str, object]:
    groups = {name: _plain(g) | {"delta": _float(g.delta)} for name, g in result.groups.items()}  # type: ignore[operator]
    return _plain(result) | {"delta": _float(result.delta), "gap_closed": _float(result.gap_closed), "groups": groups}  # type: ignore[operator]


def _plain(value: object) -> object:
    """Dataclasses to dicts, NaN to null (JSON has no NaN)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return _float(value)
    return value


def _float(value: float) -> float | None:
    return value if math.isfinite(value) else None
