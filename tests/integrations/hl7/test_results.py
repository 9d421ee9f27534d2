"""The results ORU^R01: one CWE and one NM OBX per finding, its notes, status (corrections), method, model."""

from __future__ import annotations

import dataclasses
import datetime as dt

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from integrations.hl7 import EcgResults, Finding, ModelInstance, build_results_oru

RESULTS = EcgResults(
    ecg_record_id="ECG-1",
    subject_id="PAT-1",
    acquired_at=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    findings=(
        Finding(
            kind="diagnosis",
            code="I48",
            system="I10",
            display="Atrial fibrillation",
            probability=0.91234,
            positive=True,
        ),
        Finding(kind="lab", code="2823-3", system="LN", display="Potassium high", probability=0.12, positive=False),
    ),
    model=ModelInstance(name="ecg-ck", version="1.2.0"),
)


def _parsed(results: EcgResults = RESULTS) -> hl7.Message:
    return hl7.parse(build_results_oru(results, control_id="RES-1").decode())


def test_each_finding_is_a_coded_obx_and_a_probability_obx_sharing_a_sub_id():
    obxs = _parsed().segments("OBX")
    assert [(str(obx[2]), str(obx[4])) for obx in obxs] == [("CWE", "1"), ("NM", "1"), ("CWE", "2"), ("NM", "2")]
    assert str(obxs[0][5]) == "I48^Atrial fibrillation^I10"
    assert str(obxs[0][8]) == "POS"
    assert (str(obxs[1][5]), str(obxs[1][6])) == ("0.9123", "1^^UCUM")
    assert str(obxs[2][8]) == "NEG"


def test_every_obx_names_the_method_and_the_model_instance():
    for obx in _parsed().segments("OBX"):
        assert str(obx[17]).startswith("ECG_AI^")
        assert str(obx[18]) == "1.2.0^ecg-ck"
        assert str(obx[14]) == "20260102030405+0000"


@pytest.mark.parametrize(("final", "status"), [(False, "P"), (True, "F")])
def test_the_result_status_is_preliminary_or_final(final, status):
    message = _parsed(dataclasses.replace(RESULTS, final=final))
    assert {str(obx[11]) for obx in message.segments("OBX")} == {status}
    assert str(message.segment("OBR")[25]) == status


def test_the_message_passes_hl7apy_strict_validation_and_files_under_the_ecg():
    raw = build_results_oru(RESULTS, control_id="RES-1").decode()
    assert parse_message(raw, validation_level=VALIDATION_LEVEL.STRICT).validate()
    message = hl7.parse(raw)
    assert (str(message.segment("PID")[3]), str(message.segment("OBR")[3])) == ("PAT-1", "ECG-1")


def test_an_unknown_finding_kind_is_refused():
    finding = dataclasses.replace(RESULTS.findings[0], kind="vital")
    bad = dataclasses.replace(RESULTS, findings=(finding,))
    with pytest.raises(ValueError, match="finding kinds"):
        build_results_oru(bad, control_id="RES-1")


def test_a_findings_notes_follow_its_probability_obx_as_ntes():
    noted = dataclasses.replace(RESULTS.findings[0], notes=("Validated on 200 ECGs.", "Signal: lead II imputed"))
    message = _parsed(dataclasses.replace(RESULTS, findings=(noted,)))
    segments = [str(segment[0]) for segment in message]
    assert segments[-4:] == ["OBX", "OBX", "NTE", "NTE"]
    assert [str(nte[3]) for nte in message.segments("NTE")] == ["Validated on 200 ECGs.", "Signal: lead II imputed"]


def test_a_correction_marks_the_order_and_its_results_c_and_sends_what_it_no_longer_finds_as_d():
    current, gone = RESULTS.findings
    correction = dataclasses.replace(RESULTS, findings=(current,), correction=True, retracted=(gone,))
    raw = build_results_oru(correction, control_id="RES-2").decode()
    message = hl7.parse(raw)

    assert str(message.segment("OBR")[25]) == "C" and str(message.segment("OBR")[3]) == "ECG-1"
    assert [(str(obx[4]), str(obx[11])) for obx in message.segments("OBX")] == [
        ("1", "C"), ("1", "C"), ("2", "D"), ("2", "D")
    ]  # fmt: skip
    assert str(message.segments("OBX")[2][5]) == "2823-3^Potassium high^LN"
    assert parse_message(raw, validation_level=VALIDATION_LEVEL.STRICT).validate()


def test_only_a_correction_retracts():
    with pytest.raises(ValueError, match="only a correction"):
        dataclasses.replace(RESULTS, retracted=RESULTS.findings)


def test_a_results_message_beyond_ascii_declares_utf8_in_msh_18_and_an_ascii_one_declares_nothing():
    from datetime import UTC, datetime

    from integrations.hl7.results import UTF8_CHARACTER_SET, EcgResults, Finding, ModelInstance, build_results_oru

    def oru(display: str) -> str:
        finding = Finding("diagnosis", "M350", "I10", display, 0.8, True)
        results = EcgResults("ECG-1", "MRN1", datetime(2026, 11, 20, tzinfo=UTC), (finding,), ModelInstance("m", "1"))
        return build_results_oru(results, control_id="C1").decode("utf-8")

    assert oru("Sjögren syndrome").split("\r")[0].split("|")[17] == UTF8_CHARACTER_SET
    assert len(oru("Sicca syndrome").split("\r")[0].split("|")) < 18
