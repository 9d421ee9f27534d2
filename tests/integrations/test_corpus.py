"""Every case of the input corpus (tests/corpus/cases.csv) through its decoder, as an outside system sent it.

A case quarantined at decode level must be refused with its reason prefix; every other case, including
those the agent's signal checks will refuse later, must decode to the table's rate, lead count (with
the 12 model leads present) and UTC acquisition time, keeping the source's own time text.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from agent.validation import ValidationRules, validate_record
from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord, select_leads
from integrations.errors import EcgReadError, InvalidEcgError, MissingLeadsError
from integrations.fhir import EcgRejectReason, InvalidEcgObservation, observation_to_ecg
from integrations.hl7 import Hl7MessageError, decode_ecg_oru, scan_ecg_oru
from integrations.wfdb_files import read_wfdb

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
SITE_TZ = ZoneInfo("America/New_York")
#: Reasons a decoder gives; the others are the agent's signal checks, for which decoding must succeed.
DECODE_REASONS = frozenset({"invalid-time", "malformed", "missing-leads", "unsupported"} | set(EcgRejectReason))
SIGNAL_REASONS = frozenset(
    {"implausible-amplitude", "implausible-rate", "non-finite", "saturated", "clipped", "flat-lead", "absent-lead",
     "too-many-unusable-leads"}
)  # fmt: skip
OUTCOMES = frozenset({"scored", "scored-imputed", "quarantined"})


@dataclass(frozen=True)
class CorpusCase:
    case: str
    source: str
    path: str
    outcome: str
    reason: str
    fs_hz: str
    n_leads: str
    acquired_at_utc: str
    note: str

    @property
    def file(self) -> Path:
        return CORPUS / self.path

    @property
    def refused_by_decoder(self) -> bool:
        return self.outcome == "quarantined" and self.reason in DECODE_REASONS


def load_cases() -> list[CorpusCase]:
    with (CORPUS / "cases.csv").open(newline="", encoding="utf-8") as table:
        return [CorpusCase(**row) for row in csv.DictReader(table)]


CASES = load_cases()


def decode(case: CorpusCase) -> EcgRecord:
    """The case through its source's decoder(s), as the agent would run them, with the site zone."""
    if case.source == "hl7":
        raw = case.file.read_bytes()
        scan_ecg_oru(raw)  # what the MLLP listener checks before it ACKs
        return decode_ecg_oru(raw, site_tz=SITE_TZ)
    if case.source == "fhir":
        return observation_to_ecg(json.loads(case.file.read_text(encoding="utf-8")), site_tz=SITE_TZ)
    record = read_wfdb(case.file, site_tz=SITE_TZ)
    select_leads(record, MODEL_LEAD_ORDER)  # a WFDB record's leads are checked by the shared preprocessing
    return record


def refusal_reason(error: Exception) -> str:
    if isinstance(error, Hl7MessageError):
        return error.quarantine_reason
    if isinstance(error, InvalidEcgObservation):
        return f"{error.reject_reason.value}: {error.detail}"
    if isinstance(error, MissingLeadsError):
        return f"missing-leads: {error.reason}"
    if isinstance(error, EcgReadError):  # the WFDB feed quarantines a record that will not read as malformed
        return f"malformed: {error.reason}"
    raise AssertionError(f"not a decoder refusal: {error!r}")


def test_the_table_is_well_formed():
    names = [case.case for case in CASES]
    assert len(names) == len(set(names)) >= 30
    assert {case.source for case in CASES} == {"hl7", "fhir", "wfdb"}
    for case in CASES:
        assert case.outcome in OUTCOMES, case.case
        assert case.file.with_suffix(".hea").exists() if case.source == "wfdb" else case.file.exists(), case.case
        assert case.file.parent.stat().st_size < 1_000_000
        if case.outcome == "quarantined":
            assert case.reason in DECODE_REASONS | SIGNAL_REASONS, case.case
        else:
            assert case.reason == "", case.case


def test_the_corpus_stays_small():
    sizes = [path.stat().st_size for path in CORPUS.rglob("*") if path.is_file()]
    assert max(sizes) < 1_000_000 and sum(sizes) < 8_000_000


@pytest.mark.parametrize("case", [c for c in CASES if c.refused_by_decoder], ids=lambda c: c.case)
def test_a_case_the_decoder_refuses_is_refused_with_its_reason(case):
    with pytest.raises((Hl7MessageError, InvalidEcgObservation, MissingLeadsError, EcgReadError)) as refused:
        decode(case)
    assert refusal_reason(refused.value).startswith(f"{case.reason}: ")


@pytest.mark.parametrize("case", [c for c in CASES if not c.refused_by_decoder], ids=lambda c: c.case)
def test_every_other_case_decodes_to_the_tables_rate_leads_and_utc_time(case):
    record = decode(case)
    assert record.fs_hz == float(case.fs_hz)
    assert len(record.lead_names) == int(case.n_leads)
    assert set(MODEL_LEAD_ORDER) <= set(record.lead_names)
    expected = datetime.fromisoformat(case.acquired_at_utc) if case.acquired_at_utc else None
    assert record.acquired_at == expected
    if record.acquired_at is not None:
        assert record.acquired_at.utcoffset() is not None and record.acquired_at.utcoffset().total_seconds() == 0
    if record.acquired_at_text is not None:  # the source's text, verbatim
        source_text = case.file.with_suffix(".hea") if case.source == "wfdb" else case.file
        assert record.acquired_at_text in source_text.read_bytes().decode("latin-1")
    else:
        assert expected is None


@pytest.mark.parametrize("name", ["hl7-mortara-1000hz-real", "fhir-1000hz-15-leads-real"])
def test_the_real_recording_arrives_sample_for_sample(name):
    """pydicom's DICOM ECG, sent in a vendor's style, decodes to the recording's own millivolts."""
    case = next(c for c in CASES if c.case == name)
    recorded_mv = dcmread(get_testdata_file("waveform_ecg.dcm")).waveform_array(0).T / 1000.0

    record = decode(case)

    assert record.lead_names == MODEL_LEAD_ORDER
    np.testing.assert_allclose(record.signal_mv, recorded_mv, atol=1e-9)


#: The demo model's input contract (100 Hz, 12 leads, 2.5 s windows), as the agent builds its rules from a manifest.
AGENT_RULES = ValidationRules(required_leads=MODEL_LEAD_ORDER, min_duration_s=2.5, min_fs_hz=100.0)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.case)
def test_every_case_ends_as_the_table_says_after_the_agents_signal_checks(case):
    """The whole way in: the decoder, then the agent's plausibility checks, which decide what is scored.

    (The agent side lives in agent.validation; it is run here so one table speaks for the whole input path.)
    """
    try:
        assessment = validate_record(decode(case), AGENT_RULES)
    except (Hl7MessageError, InvalidEcgObservation, MissingLeadsError, EcgReadError) as refused:
        assert (case.outcome, case.reason) == ("quarantined", refusal_reason(refused).split(": ")[0])
        return
    except InvalidEcgError as refused:
        assert (case.outcome, case.reason) == ("quarantined", refused.reason.split(": ")[0]), refused.reason
        return
    assert case.outcome == ("scored-imputed" if assessment.altered else "scored"), assessment.summary()
