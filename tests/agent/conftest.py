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
from model_training.evaluate import OperatingThresholds
from model_training.export import export_artifact
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


def build_artifact(out_dir: Path, version: str, seed: int = 0, *, threshold: float = 0.5) -> Path:
    """Export a tiny but real model under ``out_dir`` as ``version``; return the artifact folder.

    ``threshold`` is every label's operating point: 0 makes every finding positive (a write-back for every ECG).
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
        preprocess=PREPROCESS,
        metrics=METRICS,
        data_fingerprint="test",
        example_input=torch.zeros(1, 12, 2 * PREPROCESS.window_samples),
    )


@pytest.fixture(scope="session")
def artifact_factory(tmp_path_factory) -> Callable[[str], Path]:
    """Artifacts by version, built once per session (exporting scripts and checks parity: about a second)."""
    built: dict[str, Path] = {}

    def make(version: str) -> Path:
        if version not in built:
            built[version] = build_artifact(tmp_path_factory.mktemp(f"artifact-{version}"), version, seed=len(built))
        return built[version]

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
