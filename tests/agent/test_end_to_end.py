"""End to end against a real FHIR engine: seed ECGs, run-once, results in SQL and in FHIR, exactly once.

Each test uses its own ECG code on the shared Medplum server, so tests see only their own ECGs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from agent.service import EXIT_LOCKED, EXIT_OK, AgentService
from integrations.store import QuarantineState, RunStatus, Store, StoredStudy, StudyStatus

pytestmark = pytest.mark.slow
N_TARGETS = 4  # the tiny artifact: 2 diagnoses + 2 lab targets


def _positives(store: Store, study_id: int) -> int:
    return sum(p.is_positive for p in store.get_predictions(study_id, "1.0.0"))


def test_run_once_scores_stores_and_writes_back_and_a_second_run_adds_nothing(hospital):
    hospital.seed(6)
    broken = hospital.seed_broken()
    service = AgentService(hospital.settings)
    first = service.run_once(progress=False)
    assert first.exit_code == EXIT_OK, first.message
    assert first.report.counts["scored"] == 6 and first.report.counts["quarantined"] == 1
    store = service.store
    written = {}
    for ecg_id in hospital.ecg_ids:
        study = _study(store, ecg_id)
        assert study.status == StudyStatus.SCORED
        assert len(store.get_predictions(study.id, "1.0.0")) == N_TARGETS
        written[ecg_id] = len(hospital.findings_for(ecg_id))
        assert written[ecg_id] == _positives(store, study.id)
    assert sum(written.values()) > 0, "the tiny model should call something positive"
    [quarantined] = store.list_quarantine(state=QuarantineState.OPEN)
    assert broken in quarantined.entry.raw_ref and "component" in quarantined.entry.reason

    second = service.run_once(progress=False)
    assert second.exit_code == EXIT_OK and second.report.counts["scored"] == 0
    assert {ecg_id: len(hospital.findings_for(ecg_id)) for ecg_id in hospital.ecg_ids} == written


def test_written_observations_carry_the_ai_label_the_model_device_and_the_ecg(hospital):
    hospital.seed(1)
    AgentService(hospital.settings).run_once(progress=False)
    version = hospital.client.read("Observation", hospital.ecg_ids[0])["meta"]["versionId"]
    for finding in hospital.findings_for(hospital.ecg_ids[0]):
        assert finding["meta"]["security"][0]["code"] == "AIAST"
        assert finding["status"] == "preliminary" and finding["valueQuantity"]["code"] == "1"
        assert finding["device"]["reference"].startswith("Device/")
        assert {"reference": f"Observation/{hospital.ecg_ids[0]}/_history/{version}"} in finding["derivedFrom"]


def test_a_second_agent_process_exits_cleanly_while_a_run_holds_the_lock(hospital):
    store = AgentService(hospital.settings).store
    with store.run_lock("ecg-agent-run", holder="other-host:1", lease_s=60) as held:
        assert held.acquired
        result = subprocess.run(
            [sys.executable, "-m", "agent.cli", "--config", str(hospital.config), "run-once", "--no-progress"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == EXIT_LOCKED
    assert "another run is in progress (other-host:1 since" in result.stdout


def test_a_run_killed_mid_batch_is_completed_by_the_rerun_with_nothing_lost_or_duplicated(hospital, tmp_path):
    n_ecgs = 24
    hospital.seed(n_ecgs)
    store = AgentService(hospital.settings).store
    command = [sys.executable, "-m", "agent.cli", "--config", str(hospital.config), "run-once", "--no-progress"]
    victim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline_s = time.monotonic() + 120
    while _scored(store, hospital) == 0 and victim.poll() is None and time.monotonic() < deadline_s:
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    scored_before_kill = _scored(store, hospital)
    assert scored_before_kill > 0, "the kill should land after some predictions were committed"

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == EXIT_OK, rerun.stdout + rerun.stderr
    assert [run.status for run in store.list_runs()] == [RunStatus.SUCCEEDED, RunStatus.ABANDONED]
    assert _scored(store, hospital) == n_ecgs
    for ecg_id in hospital.ecg_ids:
        study = _study(store, ecg_id)
        assert len(store.get_predictions(study.id, "1.0.0")) == N_TARGETS  # unique rows: no duplicates in SQL
        findings = hospital.findings_for(ecg_id)
        identifiers = [f["identifier"][0]["value"] for f in findings]
        assert len(identifiers) == len(set(identifiers)) == _positives(store, study.id)  # none lost, none twice


def _study(store: Store, ecg_id: str) -> StoredStudy | None:
    """The study of an ECG Observation, whatever its versionId (Medplum's are UUIDs)."""
    matches = [s for s in store.list_studies(source="fhir") if s.study.source_id == ecg_id]
    return matches[-1] if matches else None


def _scored(store: Store, hospital) -> int:
    studies = [_study(store, ecg_id) for ecg_id in hospital.ecg_ids]
    return sum(study is not None and study.status == StudyStatus.SCORED for study in studies)


def test_quarantine_retry_reads_a_quarantined_observation_again_and_queues_it_once_it_decodes(hospital):
    broken = hospital.seed_broken()
    service = AgentService(hospital.settings)
    assert service.run_once(progress=False).report.counts["quarantined"] == 1
    [entry] = service.store.list_quarantine(state=QuarantineState.OPEN)
    retry = [sys.executable, "-m", "agent.cli", "--config", str(hospital.config), "quarantine", "retry", str(entry.id)]

    still_broken = subprocess.run(retry, capture_output=True, text=True, timeout=120)
    assert still_broken.returncode == 1 and "still cannot be read as an ECG (no-components" in still_broken.stdout
    assert service.store.get_quarantine(entry.id).state == QuarantineState.OPEN

    hospital.correct(broken, index=7)
    corrected = subprocess.run(retry, capture_output=True, text=True, timeout=120)
    assert corrected.returncode == 0 and "reads as an ECG now; the next run scores it" in corrected.stdout
    assert service.store.get_quarantine(entry.id).state == QuarantineState.RETRIED

    # The corrected version is requeued by id and also newer than the watermark: scored and written once.
    after = service.run_once(progress=False)
    assert after.report.counts["scored"] == 1 and after.report.counts["duplicate"] == 1
    study = _study(service.store, broken)
    assert study.status == StudyStatus.SCORED
    assert len(hospital.findings_for(broken)) == _positives(service.store, study.id)
