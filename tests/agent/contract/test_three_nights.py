"""The closing figures of the input work, as specifications: three sources at once, one poison each, three nights.

Run with ``-s`` to see the figures as JSON (the README quotes them)::

    .venv/bin/python -m pytest tests/agent/contract/test_three_nights.py -s
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from agent.registry import ModelRegistry
from agent.service import EXIT_OK, AgentService
from agent.settings import AgentSettings
from integrations.fhir.writeback import ECG_IDENTIFIER_SYSTEM
from integrations.store import Store, StoredStudy, StudyStatus

from .conftest import FhirFeed, Hl7Feed, WfdbFeed, ecg, settings_for

pytestmark = pytest.mark.slow
QUARANTINE_KINDS = {"fhir": "fhir_observation", "hl7": "hl7_message", "wfdb": "wfdb_record"}
LOCAL_TIME = {"fhir": "2026-11-20", "hl7": "20261120031400", "wfdb": "03:14:00 20/11/2026"}


class Hospital:
    """All three sources feeding one agent, which writes results back to FHIR."""

    def __init__(self, base_url: str, tmp_path: Path, artifact: Path) -> None:
        self.mrn_system = f"urn:test:mrn:{uuid.uuid4().hex}"
        self.feeds = (FhirFeed(base_url, tmp_path / "fhir"), Hl7Feed(tmp_path / "hl7"), WfdbFeed(tmp_path / "wfdb"))
        sinks = f'[sinks.fhir]\nenabled = true\npatient_identifier_system_without_authority = "{self.mrn_system}"\n'
        self.settings: AgentSettings = settings_for(tmp_path, "".join(feed.section for feed in self.feeds) + sinks)
        for feed in self.feeds:
            feed.settings = self.settings
        self.fhir = self.feeds[0].client
        self.store = Store.from_url(self.settings.database_url.get_secret_value())
        self.store.upgrade()
        registry = ModelRegistry(self.store, self.settings.registry_dir, actor="test")
        registry.register(artifact)
        registry.promote("1.0.0", reason="three nights")
        self.patients: dict[str, str] = {}  # MRN -> Patient id, for the HL7-sourced write-backs
        self.delivered: list[tuple[str, int]] = []

    def deliver_good(self, night: int, count: int) -> None:
        for feed in self.feeds:
            for n in range(count):
                index = 1000 * night + 10 * n + ("fhir", "hl7", "wfdb").index(feed.name)
                if feed.name == "hl7":
                    self._register_patient(f"MRN{index}")
                feed.deliver(f"{feed.name}-n{night}-{n}", ecg(index), time_text=LOCAL_TIME[feed.name])
                self.delivered.append((feed.name, index))

    def _register_patient(self, mrn: str) -> None:
        patient = {"resourceType": "Patient", "identifier": [{"system": self.mrn_system, "value": mrn}]}
        self.patients[mrn] = self.fhir.create(patient).resource["id"]

    def findings(self, study: StoredStudy) -> list[dict]:
        """What the chart holds for a study: the findings naming its ECG (FHIR) or on its Patient (HL7)."""
        if study.study.source == "fhir":
            params = {"identifier": f"{ECG_IDENTIFIER_SYSTEM}|{study.study.source_id}", "_count": "200"}
        else:
            params = {"subject": f"Patient/{self.patients[study.study.patient_ref]}", "_count": "200"}
        bundles = self.fhir.search_pages("Observation", params)
        return [e["resource"] for b in bundles for e in b.get("entry", []) if "derivedFrom" in e["resource"]]

    def positives(self, study: StoredStudy) -> int:
        return sum(p.is_positive for p in self.store.get_predictions(study.id, "1.0.0"))


@pytest.fixture
def hospital(fhir_base_url, tmp_path, all_positive_artifact) -> Hospital:
    hospital = Hospital(fhir_base_url, tmp_path, all_positive_artifact)
    yield hospital
    hospital.fhir.close()
    hospital.store.dispose()


def test_one_poison_per_source_then_two_clean_nights_block_lose_and_duplicate_nothing(hospital, capsys):
    hospital.deliver_good(night=1, count=3)
    for feed in hospital.feeds:
        feed.deliver_poison(f"{feed.name}-poison")
    nights = [AgentService(hospital.settings).run_once(progress=False)]
    for night in (2, 3):
        hospital.deliver_good(night=night, count=2)
        nights.append(AgentService(hospital.settings).run_once(progress=False))

    store = hospital.store
    scored = store.list_studies(status=StudyStatus.SCORED)
    charted = [study for study in scored if study.study.source in ("fhir", "hl7")]
    sql_rows = [len(store.get_predictions(study.id, "1.0.0")) for study in scored]
    chart = {study.id: hospital.findings(study) for study in charted}
    identifiers = [f["identifier"][0]["value"] for findings in chart.values() for f in findings]
    figures = {
        "nights": [dict(outcome.report.counts) | {"exit": outcome.exit_code} for outcome in nights],
        "good_ecgs_delivered": len(hospital.delivered),
        "blocked": len(hospital.delivered) - len(scored),
        "sql_lost": sum(rows == 0 for rows in sql_rows),
        "sql_duplicated": sum(rows > 4 for rows in sql_rows),  # the tiny artifact has 4 outputs
        "fhir_lost": sum(max(0, hospital.positives(s) - len(chart[s.id])) for s in charted),
        "fhir_duplicated": len(identifiers) - len(set(identifiers)),
        "quarantine_rows": len(store.list_quarantine()),
    }
    with capsys.disabled():
        print("\nthree nights:", json.dumps(figures))
    assert [outcome.exit_code for outcome in nights] == [EXIT_OK] * 3, [o.message for o in nights]
    assert figures["blocked"] == figures["sql_lost"] == figures["sql_duplicated"] == 0
    assert figures["fhir_lost"] == figures["fhir_duplicated"] == 0
    assert figures["quarantine_rows"] == 3  # one poison per source
    assert all(len(chart[s.id]) == hospital.positives(s) > 0 for s in charted)


def test_the_same_bad_input_arriving_five_times_is_one_quarantine_row_per_source(hospital, capsys):
    rows = {}
    for feed in hospital.feeds:
        feed.deliver_poison(f"{feed.name}-poison")
        AgentService(hospital.settings).run_once(progress=False)
        for _ in range(4):
            feed.deliver_again(f"{feed.name}-poison")
            AgentService(hospital.settings).run_once(progress=False)
        entries = [e for e in hospital.store.list_quarantine() if e.entry.kind == QUARANTINE_KINDS[feed.name]]
        rows[feed.name] = [{"seen": e.seen_count, "item": e.entry.raw_ref, "reason": e.entry.reason[:60]}
                           for e in entries]  # fmt: skip
    with capsys.disabled():
        print("\nsame bad input 5 times:", json.dumps(rows))
    assert {name: len(entries) for name, entries in rows.items()} == {"fhir": 1, "hl7": 1, "wfdb": 1}
    assert all(entries[0]["seen"] >= 5 for entries in rows.values())
