"""MDS-ED-style clinical features: nine statistics per lab and vital over a window, plus demographics.

Input is a long table of events (study_id, var, t_h, value) with ``t_h`` in hours
relative to the ECG. The statistics are mean, median, min, max, std, first, last,
rate of change ((last − first) / elapsed hours) and the least-squares slope per hour.
A variable measured once has std, rate and slope 0: it was observed, and did not change.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from model_training.data.catalogue import ETHNICITY_GROUPS

STATISTICS: tuple[str, ...] = ("mean", "median", "min", "max", "std", "first", "last", "rate", "slope")
DEMOGRAPHIC_FEATURES: tuple[str, ...] = ("age", "female", *(f"ethnicity_{g}" for g in ETHNICITY_GROUPS))
BIOMETRIC_FEATURES: tuple[str, ...] = ("bmi", "height_cm", "weight_kg")


def feature_names(variables: tuple[str, ...]) -> tuple[str, ...]:
    return (*DEMOGRAPHIC_FEATURES, *BIOMETRIC_FEATURES, *(f"{v}_{s}" for v in variables for s in STATISTICS))


def window_statistics(events: pd.DataFrame, study_ids: np.ndarray, variables: tuple[str, ...]) -> np.ndarray:
    """[studies, variables × 9] statistics; NaN where a variable has no event in the window."""
    out = np.full((len(study_ids), len(variables), len(STATISTICS)), np.nan, dtype=np.float64)
    if events.empty:
        return out.reshape(len(study_ids), -1)
    events = events.sort_values(["study_id", "var", "t_h"], kind="stable")
    grouped = events.groupby(["study_id", "var"], sort=False)
    stats = grouped["value"].agg(["mean", "median", "min", "max", "first", "last", "count"])
    stats["std"] = grouped["value"].std(ddof=0)
    t_first, t_last = grouped["t_h"].first(), grouped["t_h"].last()
    elapsed_h = (t_last - t_first).to_numpy()
    change = (stats["last"] - stats["first"]).to_numpy()
    stats["rate"] = np.divide(change, elapsed_h, out=np.zeros_like(change), where=elapsed_h > 0)
    stats["slope"] = _least_squares_slope(events, grouped)

    row = pd.Index(study_ids).get_indexer(stats.index.get_level_values("study_id"))
    col = pd.Index(variables).get_indexer(stats.index.get_level_values("var"))
    keep = (row >= 0) & (col >= 0)
    for k, name in enumerate(STATISTICS):
        out[row[keep], col[keep], k] = stats[name].to_numpy()[keep]
    return out.reshape(len(study_ids), -1)


def _least_squares_slope(events: pd.DataFrame, grouped: pd.core.groupby.DataFrameGroupBy) -> np.ndarray:
    t_centered = events["t_h"] - grouped["t_h"].transform("mean")
    v_centered = events["value"] - grouped["value"].transform("mean")
    products = pd.DataFrame({"tv": t_centered * v_centered, "tt": t_centered**2}, index=events.index)
    sums = products.groupby([events["study_id"], events["var"]], sort=False).sum()
    tv, tt = sums["tv"].to_numpy(), sums["tt"].to_numpy()
    return np.divide(tv, tt, out=np.zeros_like(tv), where=tt > 1e-12)


def demographic_features(age_y: np.ndarray, female: np.ndarray, ethnicity: list[str]) -> np.ndarray:
    one_hot = np.array([[float(e == g) for g in ETHNICITY_GROUPS] for e in ethnicity]).reshape(len(ethnicity), -1)
    return np.column_stack([age_y.astype(np.float64), female.astype(np.float64), one_hot])


def training_medians(features: np.ndarray, train_mask: np.ndarray) -> np.ndarray:
    """Per-feature median over the training studies; 0 for a feature never observed in training."""
    train = features[train_mask]
    observed = ~np.isnan(train)
    medians = np.zeros(features.shape[1])
    for j in np.flatnonzero(observed.any(axis=0)):
        medians[j] = np.median(train[observed[:, j], j])
    return medians


def impute(features: np.ndarray, medians: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(imputed values, observed mask) — the mask tells the model what was really measured."""
    observed = ~np.isnan(features)
    return np.where(observed, features, medians).astype(np.float32), observed.astype(np.float32)
