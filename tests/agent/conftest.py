"""Fixtures for the agent's tests: a real (tiny) exported artifact, a real store, a hospital FHIR server."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from torch import nn

from agent.registry import ModelRegistry
from agent.service import AgentService
from agent.settings import load_settings
from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord, PreprocessConfig
from integrations.fhir import FhirClient, FhirConfig, ecg_to_observation
from integrations.fhir.supersede import ACTIVE_STATUSES
from integrations.fhir.writeback import ECG_IDENTIFIER_SYSTEM
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
    built: dict[tuple[str, frozenset[str], float], Path] = {}

    def make(version: str, charted: frozenset[str] = ALL_CHARTED, *, threshold: float = 0.5) -> Path:
        key = (version, frozenset(charted), threshold)
        if key not in built:
            out_dir = tmp_path_factory.mktemp(f"artifact-{version}")
            built[key] = build_artifact(out_dir, version, seed=len(built), charted=key[1], threshold=threshold)
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


def ecg_record(index: int) -> EcgRecord:
    rng = np.random.default_rng(index)
    t = np.arange(5000) / 500.0
    beats = np.exp(-(((t % 0.8) - 0.4) ** 2) / 2e-4)
    signal = np.stack([(0.4 + 0.1 * lead) * beats + 0.03 * rng.standard_normal(t.size) for lead in range(12)])
    return EcgRecord(f"ecg-{index}", signal, 500.0, MODEL_LEAD_ORDER, acquired_at=datetime(2026, 11, 1, tzinfo=UTC))


class Hospital:
    """A FHIR server with this test's ECGs, and the agent's config pointing at it."""

    def __init__(self, base_url: str, tmp_path: Path) -> None:
        self.base_url = base_url
        self.system, self.code = "urn:test:ecg", uuid.uuid4().hex
        self.client = FhirClient(FhirConfig(base_url=base_url))
        self.config = tmp_path / "agent.toml"
        self.config.write_text(
            f'database_url = "sqlite:///{tmp_path / "agent.db"}"\n'
            f'registry_dir = "{tmp_path / "models"}"\n'
            "[scoring]\nbatch_size = 4\nmax_failure_rate = 0.5\n"
            f'[sources.fhir]\nenabled = true\necg_code = "{self.system}|{self.code}"\npage_size = 5\n'
            f'[sources.fhir.server]\nbase_url = "{base_url}"\nmax_retries = 1\n'
            "[sinks.fhir]\nenabled = true\n"
        )
        self.settings = load_settings(self.config)
        self.ecg_ids: list[str] = []

    def seed(self, count: int, *, start: int = 0, flat_lead: str | None = None) -> None:
        """``count`` ECGs; ``flat_lead``: that lead held at 0 mV (a loose electrode), for the agent to repair."""
        for index in range(start, start + count):
            record = ecg_record(index)
            if flat_lead is not None:
                record.signal_mv[record.lead_names.index(flat_lead)] = 0.0
            observation = ecg_to_observation(record, subject_reference=f"Patient/p{index}")
            observation["code"] = {"coding": [{"system": self.system, "code": self.code}]}
            self.ecg_ids.append(self.client.create(observation).resource["id"])

    def seed_broken(self) -> str:
        """An ECG Observation without components: the agent must quarantine it."""
        observation = {"resourceType": "Observation", "status": "final", "subject": {"reference": "Patient/x"},
                       "code": {"coding": [{"system": self.system, "code": self.code}]}}  # fmt: skip
        return self.client.create(observation).resource["id"]

    def correct(self, observation_id: str, index: int) -> None:
        """The sender replaces the Observation with a corrected ECG: a new version of the same id."""
        observation = ecg_to_observation(ecg_record(index), subject_reference=f"Patient/p{index}")
        observation |= {"id": observation_id, "code": {"coding": [{"system": self.system, "code": self.code}]}}
        response = httpx.put(f"{self.base_url}/Observation/{observation_id}", json=observation, timeout=30)
        response.raise_for_status()

    def findings_for(self, ecg_id: str, *, active_only: bool = True) -> list[dict]:
        """The findings written for an ECG (any of its versions), found as an EHR would: by the ECG's identifier."""
        params = {"identifier": f"{ECG_IDENTIFIER_SYSTEM}|{ecg_id}", "_count": "200"}
        found = [
            entry["resource"]
            for page in self.client.search_pages("Observation", params)
            for entry in page.get("entry", [])
        ]
        return [f for f in found if not active_only or f["status"] in ACTIVE_STATUSES]

    def deploy_model(self, artifact: Path, store: Store) -> None:
        registry = ModelRegistry(store, self.settings.registry_dir, actor="test")
        registry.register(artifact)
        registry.promote(registry.list()[0].version, reason="end-to-end test")


@pytest.fixture
def hospital_with(fhir_base_url, tmp_path) -> Callable[[Path], Hospital]:
    """A hospital whose agent runs the artifact given (one per test)."""
    hospitals: list[Hospital] = []

    def make(artifact: Path) -> Hospital:
        hospital = Hospital(fhir_base_url, tmp_path)
        hospital.deploy_model(artifact, AgentService(hospital.settings).store)
        hospitals.append(hospital)
        return hospital

    yield make
    for hospital in hospitals:
        hospital.client.close()


@pytest.fixture
def hospital(hospital_with, artifact_factory) -> Hospital:
    """A hospital whose agent runs model 1.0.0, every label charted."""
    return hospital_with(artifact_factory("1.0.0"))
