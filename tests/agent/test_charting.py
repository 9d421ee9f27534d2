"""What reaches the chart: only charted labels, each saying how good it is; a correction's ORU supersedes.

The manifests are those of real (tiny) exported artifacts, registered in a real store; the ORU is
decoded with python-hl7 as a receiver would.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import UTC, datetime

import hl7
import pytest

from agent.registry import ModelRegistry
from agent.sinks.charting import charted_findings, quality_note
from agent.sinks.corrections import study_versions
from agent.sinks.fhir import FhirResultSink
from agent.sinks.hl7 import Hl7ResultSink
from agent.sinks.manifests import ManifestIndex
from agent.sinks.payload import ModelRef, PayloadExplanation, PayloadFinding, ResultPayload
from integrations.store import EcgStudy, OutboxMessage, Store, StudyStatus
from model_training.artifact import ReleaseEntry, ReleaseRule
from model_training.data.catalogue import LABS

LAB_UNITS = {lab.unit for lab in LABS if lab.unit}
MODEL = ModelRef("tiny-test-model", "1.0.0", "0" * 64)
SIGNAL_NOTE = "lead II imputed from I and III (flat)"


def _register(store: Store, artifact, tmp_path) -> None:
    registry = ModelRegistry(store, tmp_path / "models", actor="test")
    registry.register(artifact)


def _study(store: Store, version: str) -> int:
    study = store.upsert_study(
        EcgStudy("fhir", "ecg-9", version, 500.0, ("I",), "Patient/p9", datetime(2026, 11, 1, tzinfo=UTC))
    )
    store.set_study_status(study.id, StudyStatus.SCORED)
    return study.id


def _payload(study_id: int, version: str, positives: dict[str, float], notes: tuple[str, ...] = ()) -> ResultPayload:
    kinds = {"I48": "diagnosis", "E875": "diagnosis", "potassium_high": "lab", "hemoglobin_low": "lab"}
    findings = tuple(
        PayloadFinding(kind, code, positives.get(code, 0.1), code in positives) for code, kind in kinds.items()
    )
    explanations = (PayloadExplanation("I48", "potassium_high", 0.7), PayloadExplanation("I48", "hemoglobin_low", 0.6))
    return ResultPayload(study_id, "fhir", "ecg-9", version, "Patient/p9", datetime(2026, 11, 1, tzinfo=UTC), MODEL,
                         findings, explanations, signal_notes=notes)  # fmt: skip


def test_the_quality_note_says_in_words_how_good_the_label_was_on_validation():
    release = ReleaseEntry(0.92, 0.86, 0.97, 0.71, 0.9, 0.42, 0.1, 20, 200, True, "ok")
    rule = ReleaseRule(min_auroc_ci_low=0.8, min_ppv=0.3, min_positives=10, ci_level=0.95, n_bootstrap=20, seed=0)

    assert quality_note(release, rule, ModelRef("ecg-ck", "1.2.0", "0" * 64)) == (
        "Validated on 200 ECGs: sensitivity 71 %, PPV 42 % at 10 % prevalence, AUROC 0.92 (95 % CI 0.86 to 0.97); "
        "model ecg-ck 1.2.0. Not a measurement."
    )


def test_only_positive_findings_of_charted_labels_are_charted_and_explained_only_by_charted_labs(
    store, tmp_path, artifact_factory
):
    _register(store, artifact_factory("1.0.0", charted=frozenset({"I48", "potassium_high"})), tmp_path)
    payload = _payload(1, "1", {"I48": 0.8, "E875": 0.9, "potassium_high": 0.7, "hemoglobin_low": 0.6}, (SIGNAL_NOTE,))

    charted = charted_findings(payload, ManifestIndex(store))

    assert [(f.target, f.probability) for f in charted] == [("potassium_high", 0.7), ("I48", 0.8)]
    assert charted[1].explained_by == ("potassium_high",)  # hemoglobin_low explains it too, but is not charted
    for finding in charted:
        assert finding.notes[0].startswith("Validated on ") and finding.notes[0].endswith("Not a measurement.")
        assert finding.notes[1:] == (f"Signal: {SIGNAL_NOTE}",)


def test_a_manifest_without_a_release_table_charts_nothing_and_says_so_once(store, tmp_path, artifact_factory, caplog):
    manifest = json.loads((artifact_factory("1.0.0") / "manifest.json").read_text())
    manifest |= {"schema_version": 1}
    for key in ("calibration", "release_rule"):
        manifest.pop(key)
    for label in manifest["diagnoses"]:
        label.pop("parents"), label.pop("release")
    for target in manifest["lab_targets"]:
        target.pop("release")
    store.register_model_version("0.9.0", "9" * 64, str(tmp_path), manifest, actor="test")
    index = ManifestIndex(store)
    payload = _payload(1, "1", {"I48": 0.8, "potassium_high": 0.7})
    old = dataclasses.replace(payload, model=ModelRef("m", "0.9.0", "9" * 64))

    with caplog.at_level(logging.WARNING, logger="agent.sinks.manifests"):
        assert charted_findings(old, index) == [] and charted_findings(old, index) == []

    assert [r.getMessage() for r in caplog.records if "0.9.0" in r.getMessage()] == [
        "model version 0.9.0 has no release table (manifest schema 1): none of its findings is written back to the "
        "chart; they stay stored"
    ]


@pytest.fixture
def hl7_sink(store, tmp_path, artifact_factory) -> Hl7ResultSink:
    _register(store, artifact_factory("1.0.0", charted=frozenset({"I48", "E875", "potassium_high"})), tmp_path)

    def no_connection():
        raise AssertionError("message() builds the ORU without connecting")

    return Hl7ResultSink(no_connection, ManifestIndex(store), store)


def _obxs(raw: bytes) -> list[tuple[str, str, str, str, str]]:
    """(OBX-2, OBX-3, OBX-5, OBX-6, OBX-11) of each OBX."""
    message = hl7.parse(raw.decode())
    return [(str(o[2]), str(o[3]), str(o[5]), str(o[6]), str(o[11])) for o in message.segments("OBX")]


def test_the_results_oru_codes_findings_with_our_codes_and_notes_each_with_its_validation_and_the_signal(
    store, hl7_sink
):
    payload = _payload(_study(store, "1"), "1", {"I48": 0.8, "potassium_high": 0.7, "hemoglobin_low": 0.9},
                       (SIGNAL_NOTE,))  # fmt: skip
    raw = hl7_sink.message(payload)

    obxs = _obxs(raw)
    assert [obx[2].split("^")[0] for obx in obxs if obx[0] == "CWE"] == ["2823-3", "I48"]  # hemoglobin: stored only
    for _, identifier, _, unit, status in obxs:
        assert identifier.split("^")[2] == "L" and identifier.split("^")[0].startswith("ECG_AI_")  # never a LOINC
        assert unit not in LAB_UNITS and status == "P"
    notes = [str(nte[3]) for nte in hl7.parse(raw.decode()).segments("NTE")]
    assert len(notes) == 4 and notes[1::2] == [f"Signal: {SIGNAL_NOTE}"] * 2
    assert all(note.startswith("Validated on 200 ECGs: ") for note in notes[0::2])


def test_a_corrected_ecg_sends_corrections_and_deletes_what_it_no_longer_finds(store, hl7_sink):
    first = _payload(_study(store, "1"), "1", {"I48": 0.8, "potassium_high": 0.7})
    store.enqueue_outbox(OutboxMessage("hl7", first.outbox_key("hl7"), first.to_json()))
    corrected = _payload(_study(store, "2"), "2", {"I48": 0.6, "E875": 0.7})

    message = hl7.parse(hl7_sink.message(corrected).decode())

    assert (str(message.segment("OBR")[3]), str(message.segment("OBR")[25])) == ("ecg-9", "C")
    status_by_code = {obx[2].split("^")[0]: obx[4] for obx in _obxs(hl7_sink.message(corrected)) if obx[0] == "CWE"}
    assert status_by_code == {"I48": "C", "E875": "C", "2823-3": "D"}  # potassium high: no longer found
    probabilities = [obx[2] for obx in _obxs(hl7_sink.message(corrected)) if obx[0] == "NM"]
    assert probabilities == ["0.6000", "0.7000", "0.7000"]  # the corrected ones, then the deleted one's as sent
    assert hl7_sink.message(first) is None  # the earlier version's results are superseded: never sent again


class _NoServer:
    """A FHIR client that must not be used: a superseded payload is dropped before any request."""

    def __getattr__(self, name: str):
        raise AssertionError(f"the FHIR server was asked {name}")


def test_the_results_of_a_version_a_later_scored_one_replaced_are_never_written(store, tmp_path, artifact_factory):
    _register(store, artifact_factory("1.0.0"), tmp_path)
    first = _payload(_study(store, "1"), "1", {"I48": 0.8})
    _study(store, "2")  # the corrected ECG, scored: its own payload retires what the first one wrote

    FhirResultSink(_NoServer(), ManifestIndex(store), store).send(first)  # a late retry: no request at all


def test_a_later_version_that_could_not_be_scored_supersedes_nothing(store):
    first = _payload(_study(store, "1"), "1", {"I48": 0.8})
    broken = store.upsert_study(EcgStudy("fhir", "ecg-9", "2", 500.0, ("I",)))
    store.set_study_status(broken.id, StudyStatus.FAILED, error="quarantined")

    versions = study_versions(store, first)

    assert not versions.superseded and versions.corrects is None
