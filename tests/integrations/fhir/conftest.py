"""Fixtures for the FHIR tests: a real FHIR engine (Medplum behind tests/servers/fhir/server.mjs) and ECG builders.

The server needs Node ≥ 20 and ``npm ci --prefix tests/servers/fhir`` run beforehand; without its
node_modules the integration tests fail with that instruction rather than reaching the network.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.fhir import FhirClient, FhirConfig, RetryPolicy, ecg_to_observation

SERVER_DIR = Path(__file__).resolve().parents[2] / "servers" / "fhir"
SERVER_START_TIMEOUT_S = 60.0
#: Medplum 5 wants Node 22; on Node 20 the WebSocket global it touches at import is behind this flag.
NODE_22_MAJOR = 22


def _node_command() -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH; the FHIR integration tests need Node >= 20")
    if not (SERVER_DIR / "node_modules").is_dir():
        pytest.fail(f"{SERVER_DIR / 'node_modules'} is missing: run `npm ci --prefix {SERVER_DIR}` first")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    major = int(re.match(r"v(\d+)", version.strip()).group(1))  # type: ignore[union-attr]
    flags = ["--experimental-websocket"] if major < NODE_22_MAJOR else []
    return [node, *flags, str(SERVER_DIR / "server.mjs"), "0"]


def _read_port(process: subprocess.Popen[str]) -> int:
    """Wait for the shim's ``listening <port>`` line (read in a thread so a hung start cannot block us)."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(SERVER_START_TIMEOUT_S)
    match = re.match(r"listening (\d+)", lines[0]) if lines else None
    if match is None:
        process.kill()
        _, stderr = process.communicate(timeout=10)
        pytest.fail(f"the FHIR shim did not start within {SERVER_START_TIMEOUT_S} s: {stderr[-2000:]}")
    return int(match.group(1))


@pytest.fixture(scope="session")
def fhir_base_url() -> Iterator[str]:
    """Start the Medplum FHIR shim on a free port; yield its FHIR base URL; stop it."""
    process = subprocess.Popen(
        _node_command(), cwd=SERVER_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        port = _read_port(process)
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


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
