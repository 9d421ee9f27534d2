"""What the chart holds after a run, read from a real FHIR engine the way an EHR reads it.

Every written-back Observation is read back from the server: none may look like a lab result
(a lab's LOINC as its code, a lab's unit on its value), each must carry a category, our code and
the words a clinician needs; only charted labels reach the chart; and after an ECG is corrected,
the chart holds exactly the corrected version's findings.
"""

from __future__ import annotations

import re

import pytest

from agent.service import EXIT_OK, AgentService
from integrations.fhir import EcgReference, retire_superseded
from integrations.fhir.ai_finding import FINDING_CODE_SYSTEM
from integrations.fhir.supersede import RETIRED_STATUS
from integrations.fhir.validation import validate_r4
from integrations.store import Store, StoredStudy
from model_training.data.catalogue import LABS

pytestmark = pytest.mark.slow
LOINC = "http://loinc.org"
LAB_UNITS = {lab.unit for lab in LABS if lab.unit}
QUALITY_NOTE = re.compile(
    r"Validated on \d+ ECGs: sensitivity \d+ %, PPV \d+ % at \d+ % prevalence, AUROC 0\.\d\d "
    r"\(95 % CI 0\.\d\d to 0\.\d\d\); model tiny-test-model 1\.0\.0\. Not a measurement\."
)


def _latest_study(store: Store, ecg_id: str) -> StoredStudy:
    return [s for s in store.list_studies(source="fhir") if s.study.source_id == ecg_id][-1]


def _our_code(kind: str, code: str) -> str:
    return f"{'dx' if kind == 'diagnosis' else 'lab'}-{code.replace('_', '-')}"


def _charted_positives(store: Store, study: StoredStudy, charted: frozenset[str]) -> dict[str, float]:
    predictions = store.get_predictions(study.id, "1.0.0")
    return {
        _our_code(p.target_kind, p.code): round(p.probability, 6)
        for p in predictions
        if p.is_positive and p.code in charted
    }


def _chart(hospital, ecg_id: str) -> dict[str, float]:
    """Our code → probability of the active findings derived from ``ecg_id``."""
    return {f["code"]["coding"][0]["code"]: f["valueQuantity"]["value"] for f in hospital.findings_for(ecg_id)}


def test_no_written_finding_reads_as_a_lab_result_and_each_says_what_it_is_and_how_good(hospital):
    hospital.seed(6)
    assert AgentService(hospital.settings).run_once(progress=False).exit_code == EXIT_OK
    findings = [f for ecg_id in hospital.ecg_ids for f in hospital.findings_for(ecg_id, active_only=False)]
    assert findings, "the tiny model should call something positive"

    for finding in findings:
        validate_r4(finding, f"Observation/{finding['id']} as stored")
        assert [c["system"] for c in finding["code"]["coding"]] == [FINDING_CODE_SYSTEM]  # never a LOINC
        assert {finding["valueQuantity"]["unit"], finding["valueQuantity"]["code"]} & LAB_UNITS == set()
        assert finding["valueQuantity"]["code"] == "1" and 0 <= finding["valueQuantity"]["value"] <= 1
        [category] = finding["category"]
        assert [c["code"] for c in category["coding"]] == ["ecg-ai-assessment"]
        assert finding["method"]["text"] == "Predicted from ECG by model tiny-test-model 1.0.0"
        assert finding["interpretation"][0]["coding"][0]["code"] == "POS"
        assert QUALITY_NOTE.fullmatch(finding["note"][0]["text"]), finding["note"][0]["text"]
        [component] = finding["component"]  # the standard code of what was predicted, as an answer only
        assert component["code"]["coding"][0]["system"] == FINDING_CODE_SYSTEM
        answer = component["valueCodeableConcept"]["coding"][0]
        expected_system = (
            LOINC if finding["code"]["coding"][0]["code"].startswith("lab-") else "http://hl7.org/fhir/sid/icd-10-cm"
        )
        assert answer["system"] == expected_system


def test_only_charted_labels_reach_the_chart_and_explanations_link_only_charted_findings(
    hospital_with, artifact_factory
):
    charted = frozenset({"I48", "potassium_high"})
    # Every operating threshold at 0: all four labels positive on every ECG, two of them charted.
    hospital = hospital_with(artifact_factory("1.0.0", charted, threshold=0.0))
    service = AgentService(hospital.settings)
    hospital.seed(2)
    hospital.seed(1, start=2, flat_lead="II")
    assert service.run_once(progress=False).exit_code == EXIT_OK

    for ecg_id in hospital.ecg_ids:
        study = _latest_study(service.store, ecg_id)
        assert sum(p.is_positive for p in service.store.get_predictions(study.id, "1.0.0")) == 4
        assert _chart(hospital, ecg_id) == _charted_positives(service.store, study, charted)  # 2 of 4 positives
        by_id = {f"Observation/{f['id']}": f for f in hospital.findings_for(ecg_id)}
        signal = [f"Signal: {note}" for note in study.signal_notes]
        for finding in by_id.values():
            assert [note["text"] for note in finding["note"][1:]] == signal  # on every finding of the study
            for reference in finding["derivedFrom"][1:]:  # after the ECG: the explaining lab findings
                assert by_id[reference["reference"]]["code"]["coding"][0]["code"] == "lab-potassium-high"
    repaired = _latest_study(service.store, hospital.ecg_ids[2])
    assert [note.split(" (")[0] for note in repaired.signal_notes] == ["lead II imputed from I and III"]


def test_a_corrected_ecg_leaves_exactly_its_corrected_findings_active_and_retires_the_rest(hospital):
    hospital.seed(1)
    [ecg_id] = hospital.ecg_ids
    service = AgentService(hospital.settings)
    assert service.run_once(progress=False).exit_code == EXIT_OK
    before = hospital.findings_for(ecg_id)
    assert before, "the tiny model should call something positive"

    hospital.correct(ecg_id, index=11)  # the sender's corrected ECG: the same Observation id, a new version
    assert service.run_once(progress=False).exit_code == EXIT_OK

    corrected = _latest_study(service.store, ecg_id)
    version = corrected.study.source_version
    all_charted = frozenset({"I48", "E875", "potassium_high", "hemoglobin_low"})
    assert _chart(hospital, ecg_id) == _charted_positives(service.store, corrected, all_charted)
    for finding in hospital.findings_for(ecg_id):
        assert finding["derivedFrom"][0] == {"reference": f"Observation/{ecg_id}/_history/{version}"}
        assert f"/{version}/1.0.0/" in finding["identifier"][0]["value"]
    retired = [f for f in hospital.findings_for(ecg_id, active_only=False) if f["status"] == RETIRED_STATUS]
    assert sorted(f["id"] for f in retired) == sorted(f["id"] for f in before)
    assert all(f"Observation/{ecg_id} was corrected (version {version})" in f["note"][-1]["text"] for f in retired)

    # Retiring again changes nothing, and so does another run.
    reference = EcgReference(observation_id=ecg_id, version=version, subject_reference=None,
                             effective_at=corrected.study.acquired_at)  # fmt: skip
    assert retire_superseded(hospital.client, reference) == []
    assert service.run_once(progress=False).report.counts["scored"] == 0
    assert len(hospital.findings_for(ecg_id, active_only=False)) == len(before) + len(_chart(hospital, ecg_id))
