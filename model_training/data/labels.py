"""Label construction: ICD-10 diagnosis multi-hot, and lab-abnormality targets from reference ranges."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

_ICD_CODE = re.compile(r"[A-Z][0-9A-Z]{2,6}")
ICD_TRUNCATE = 5
ICD_MIN_PREFIX = 3


def parse_icd_list(text: object) -> list[str]:
    """Codes from an ext-ICD ``all_diag_all`` cell (``"['I10', 'E119']"``); tolerant of spacing and dots."""
    if not isinstance(text, str):
        return []
    return _ICD_CODE.findall(text.upper().replace(".", ""))


def expand_icd(codes: Iterable[str]) -> set[str]:
    """Cut to 5 characters and add every parent prefix of 3 or more characters (MDS-ED)."""
    expanded = set()
    for code in codes:
        cut = code[:ICD_TRUNCATE]
        expanded.update(cut[:n] for n in range(ICD_MIN_PREFIX, len(cut) + 1))
    return expanded


def diagnosis_labels(code_lists: Sequence[set[str]], min_count: int) -> tuple[tuple[str, ...], np.ndarray]:
    """Codes seen at least ``min_count`` times, sorted, and the multi-hot matrix [studies, codes]."""
    counts = Counter(code for codes in code_lists for code in codes)
    kept = tuple(sorted(code for code, n in counts.items() if n >= min_count))
    column = {code: j for j, code in enumerate(kept)}
    matrix = np.zeros((len(code_lists), len(kept)), dtype=np.uint8)
    for i, codes in enumerate(code_lists):
        matrix[i, [column[c] for c in codes if c in column]] = 1
    return kept, matrix


@dataclass(frozen=True, slots=True)
class LabTarget:
    """``<lab>_low`` or ``<lab>_high``: the value closest to the ECG against a reference bound."""

    lab: str
    direction: str  # "low" | "high"
    threshold: float

    @property
    def name(self) -> str:
        return f"{self.lab}_{self.direction}"


def reference_thresholds(ref_counts: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Per lab, the median of ``ref_low`` and of ``ref_high`` over all its rows (NaN where absent).

    ``ref_counts`` has columns lab, ref_low, ref_high, n: how many rows carried each
    pair, so a 100-million-row labevents table is summarised chunk by chunk.
    """
    thresholds = {}
    for lab, rows in ref_counts.groupby("lab"):
        thresholds[str(lab)] = (_weighted_median(rows["ref_low"], rows["n"]),
                                _weighted_median(rows["ref_high"], rows["n"]))  # fmt: skip
    return thresholds


def _weighted_median(values: pd.Series, weights: pd.Series) -> float:
    known = values.notna()
    if not known.any():
        return float("nan")
    order = np.argsort(values[known].to_numpy(), kind="stable")
    sorted_values = values[known].to_numpy()[order]
    cumulative = np.cumsum(weights[known].to_numpy()[order])
    return float(sorted_values[np.searchsorted(cumulative, cumulative[-1] / 2.0)])


def lab_abnormality_labels(
    closest: pd.DataFrame,
    thresholds: dict[str, tuple[float, float]],
    study_ids: np.ndarray,
    min_positives: int,
) -> tuple[tuple[LabTarget, ...], np.ndarray]:
    """Targets with at least ``min_positives`` positives, and labels [studies, targets].

    ``closest`` holds one row per (study_id, lab): the value nearest the ECG time
    within the label window. A study without such a value gets NaN (unknown), not 0.
    """
    wide = closest.pivot(index="study_id", columns="lab", values="value").reindex(study_ids)
    targets, columns = [], []
    for lab in sorted(wide.columns):
        low, high = thresholds.get(lab, (np.nan, np.nan))
        values = wide[lab].to_numpy(dtype=np.float64)
        known = ~np.isnan(values)
        for direction, bound in (("low", low), ("high", high)):
            # A lower bound of 0 (troponin, CRP) cannot be undershot; such a target is meaningless.
            if np.isnan(bound) or (direction == "low" and bound <= 0):
                continue
            positive = values < bound if direction == "low" else values > bound
            if int((positive & known).sum()) < min_positives:
                continue
            targets.append(LabTarget(lab, direction, bound))
            columns.append(np.where(known, positive.astype(np.float32), np.nan))
    matrix = np.stack(columns, axis=1).astype(np.float32) if columns else np.zeros((len(study_ids), 0), np.float32)
    return tuple(targets), matrix
