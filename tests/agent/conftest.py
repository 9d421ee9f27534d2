"""Fixtures for the agent's tests: a real (tiny) exported artifact and a real store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from integrations.ecg import PreprocessConfig
from integrations.store import Store
from model_training.data.labels import LabTarget
from model_training.evaluate import Estimate, OperatingThresholds
from model_training.export import export_artifact
from model_training.release import OperatingPoint, ReleaseTable, release_entry, release_rule
from model_training.scoring import EcgScoringModule

DX_CODES = ("I48", "E875")
LAB_TARGETS = (LabTarget("potassium", "high", 5.1), LabTarget("hemoglobin", "low", 12.0))
PREPROCESS = PreprocessConfig()
_NO_ESTIMATE = {"value": None}
METRICS = {
    "diagnosis": {
        "macro_auroc": {"ours": {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6}},
        "delta_ours_minus_ecg_only": _NO_ESTIMATE,
        "gap_closed": _NO_ESTIMATE,
    },
    "labs": {"macro_auroc": {"ours": {"value": 0.5}}},
}


class _TinyEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(12, 4, kernel_size=5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=-1)


RELEASE_RULE = release_rule(min_auroc_ci_low=0.8, min_ppv=0.3, min_positives=10, n_bootstrap=20, seed=0)
#: What the release rule makes of a label that separates well (charted) and of one that does not (stored only).
CHARTED = release_entry(Estimate(0.92, 0.86, 0.97), OperatingPoint(0.7, 0.9, 0.42, 0.1, 20, 200), RELEASE_RULE)
STORED = release_entry(Estimate(0.71, 0.62, 0.79), OperatingPoint(0.5, 0.7, 0.15, 0.1, 20, 200), RELEASE_RULE)


def release_table(charted: frozenset[str]) -> ReleaseTable:
    """Every test label, charted when its code or lab target name is in ``charted``."""
    return ReleaseTable(
        RELEASE_RULE,
        {code: CHARTED if code in charted else STORED for code in DX_CODES},
        {t.name: CHARTED if t.name in charted else STORED for t in LAB_TARGETS},
    )


#: By default every test label is charted, so write-back tests see every positive finding.
ALL_CHARTED = frozenset((*DX_CODES, *(t.name for t in LAB_TARGETS)))


def build_artifact(
    out_dir: Path, version: str, seed: int = 0, charted: frozenset[str] = ALL_CHARTED, *, threshold: float = 0.5
) -> Path:
    """Export a tiny but real model under ``out_dir`` as ``version``; return the artifact folder.

    ``charted``: the labels its release table charts (the others are stored only). ``threshold`` is every
    label's operating point: 0 makes every finding positive (a write-back for every ECG).
    """
    torch.manual_seed(seed)
    module = EcgScoringModule(
        _TinyEncoder(), nn.Linear(4, len(DX_CODES)), nn.Linear(4, len(LAB_TARGETS)), PREPROCESS.window_samples
    ).eval()
    thresholds = OperatingThresholds(
        rule="test", diagnosis=dict.fromkeys(DX_CODES, threshold), labs={t.name: threshold for t in LAB_TARGETS}
    )
    return export_artifact(
        module,
        out_dir=out_dir,
        model_name="tiny-test-model",
        model_version=version,
        dx_labels=DX_CODES,
        lab_targets=LAB_TARGETS,
        thresholds=thresholds,
        release=release_table(charted),
        preprocess=PREPROCESS,
        metrics=METRICS,
        data_fingerprint="test",
        example_input=torch.zeros(1, 12, 2 * PREPROCESS.window_samples),
    )


@pytest.fixture(scope="session")
def artifact_factory(tmp_path_factory) -> Callable[..., Path]:
    """Artifacts by version (and the labels they chart), built once per session (about a second each)."""
    built: dict[tuple[str, frozenset[str]], Path] = {}

    def make(version: str, charted: frozenset[str] = ALL_CHARTED) -> Path:
        key = (version, frozenset(charted))
        if key not in built:
            out_dir = tmp_path_factory.mktemp(f"artifact-{version}")
            built[key] = build_artifact(out_dir, version, seed=len(built), charted=key[1])
        return built[key]

    return make


@pytest.fixture(scope="session")
def all_positive_artifact(tmp_path_factory) -> Path:
    """Version 1.0.0 with every operating threshold at 0: every finding positive, so every ECG has a write-back."""
    return build_artifact(tmp_path_factory.mktemp("artifact-all-positive"), "1.0.0", threshold=0.0)


@pytest.fixture
def store(tmp_path) -> Store:
    store = Store.from_url(f"sqlite:///{tmp_path / 'agent.db'}")
    store.upgrade()
    yield store
    store.dispose()
