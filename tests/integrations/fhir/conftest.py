"""Fixtures for the FHIR tests: a client of the real FHIR engine, and ECG builders.

The engine itself (Medplum behind tests/servers/fhir/server.mjs, session-scoped ``fhir_base_url``) is
started by tests/conftest.py, shared with the agent's end-to-end tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import numpy as np
import pytest

from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.fhir import FhirClient, FhirConfig, RetryPolicy, ecg_to_observation


@pytest.fixture
def fhir_client(fhir_base_url: str) -> Iterator[FhirClient]:
    config = FhirConfig(base_url=fhir_base_url, retry=RetryPolicy(max_attempts=2, base_delay_s=0.01))
    with FhirClient(config) as client:
        yield client


@pytest.fixture
def ecg_code() -> str:
    """A code unique to the test, so tests sharing the one server see only their own ECGs."""
    return f"urn:test:ecg|{uuid.uuid4().hex}"


def synthetic_record(record_id: str, *, fs_hz: float = 500.0, duration_s: float = 10.0, seed: int = 0) -> EcgRecord:
    """A 12-lead record of smooth noise in mV: values survive a µV-resolution round trip to within 0.5 µV."""
    rng = np.random.default_rng(seed)
    n_samples = round(fs_hz * duration_s)
    signal_mv = np.cumsum(rng.normal(0.0, 0.02, (len(MODEL_LEAD_ORDER), n_samples)), axis=1)
    acquired_at = datetime(2024, 5, 1, 8, 30, tzinfo=UTC)
    return EcgRecord(record_id, signal_mv, fs_hz, MODEL_LEAD_ORDER, source="test", acquired_at=acquired_at)


@pytest.fixture
def make_record() -> Callable[..., EcgRecord]:
    return synthetic_record


def ecg_observation_with_code(record: EcgRecord, code: str, subject_reference: str = "Patient/p1") -> dict:
    """An ECG Observation for ``record``, coded with the test's unique ``system|code``."""
    observation = ecg_to_observation(record, subject_reference=subject_reference)
    system, value = code.split("|")
    observation["code"] = {"coding": [{"system": system, "code": value}]}
    return observation


@pytest.fixture
def seed_ecgs(fhir_client: FhirClient, ecg_code: str) -> Callable[..., list[dict]]:
    """Create ``n`` ECG Observations with the test's code; returns the stored resources."""

    def seed(n: int, *, fs_hz: float = 500.0, duration_s: float = 2.0, start: int = 0) -> list[dict]:
        records = [
            synthetic_record(f"ecg-{i}", fs_hz=fs_hz, duration_s=duration_s, seed=i) for i in range(start, start + n)
        ]
        return [fhir_client.create(ecg_observation_with_code(r, ecg_code)).resource for r in records]

    return seed


@pytest.fixture
def observation_with_code() -> Callable[..., dict]:
    return ecg_observation_with_code
