"""Operator views: status, quarantine retry, shadow-versus-active, and one study's annotated printout."""

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import numpy as np
import pytest

from agent.batch import run_once
from agent.cli import main
from agent.errors import AgentError
from agent.loader import ModelLoader
from agent.operations import (
    LabelComparison,
    ShadowReport,
    label_release,
    retry_quarantined,
    shadow_report,
    status,
    study_findings,
    study_report,
)
from agent.registry import ModelRegistry
from agent.settings import ScoringSettings
from agent.sources import PulledEcg
from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.ecg_plot import LETTER_LANDSCAPE, PrintoutFinding
from integrations.store import (
    EcgStudy,
    InboxMessage,
    InboxStatus,
    LabLink,
    ModelState,
    PredictionSet,
    QuarantineEntry,
    QuarantineState,
    StudyStatus,
    TargetScores,
)

SCORING = ScoringSettings(batch_size=8)


def _ecg(record_id: str, *, duration_s: float = 10.0, seed: int = 0) -> PulledEcg:
    rng = np.random.default_rng(seed)
    t = np.arange(round(500 * duration_s)) / 500.0
    signal = np.stack([np.sin(2 * np.pi * 1.1 * t + lead) + 0.05 * rng.standard_normal(t.size) for lead in range(12)])
    record = EcgRecord(record_id, signal, 500.0, MODEL_LEAD_ORDER, source="list")
    study = EcgStudy("list", record_id, "1", 500.0, MODEL_LEAD_ORDER, acquired_at=datetime.now(UTC))
    return PulledEcg(record, study)


class ListSource:
    name = "list"

    def __init__(self, items) -> None:
        self.items = list(items)

    def pull(self) -> Iterator:
        yield from self.items

    def done(self, items: Sequence) -> None:
        pass


@pytest.fixture
def registry(store, tmp_path, artifact_factory) -> ModelRegistry:
    registry = ModelRegistry(store, tmp_path / "registry", actor="ops")
    for version in ("1.0.0", "1.1.0"):
        registry.register(artifact_factory(version))
    registry.promote("1.0.0", reason="live")
    return registry


def _run(store, items) -> None:
    run_once(store, ModelLoader(store).load_for_run(), [ListSource(items)], [], SCORING, progress=False)


def test_status_shows_models_backlog_quarantine_and_runs(store, registry):
    registry.shadow("1.1.0", reason="compare")
    store.add_inbox_message(InboxMessage("mllp", "CART", "ED", "m1", "ORU^R01", b"MSH|..."))
    _run(store, [_ecg("a"), _ecg("too-short", duration_s=1.0)])
    view = status(store)
    assert view.active.version == "1.0.0" and [m.version for m in view.shadows] == ["1.1.0"]
    assert view.inbox_waiting == 1 and view.quarantine_open == {"ecg": 1}
    assert view.runs[0].counts["scored"] == 1


def test_a_quarantined_ecg_is_requeued_and_scored_by_the_next_run(store, registry):
    short = _ecg("short", duration_s=1.0)
    _run(store, [short])
    [entry] = store.list_quarantine()
    result = retry_quarantined(store, entry.id)
    assert result.requeued and store.get_study("list", "short", "1").status == StudyStatus.NEW
    assert store.get_quarantine(entry.id).state == QuarantineState.RETRIED


def test_a_quarantined_inbox_message_goes_back_to_the_inbox(store, registry):
    store.add_inbox_message(InboxMessage("mllp", "CART", "ED", "m1", "ORU^R01", b"MSH|..."))
    [stored] = store.list_inbox(InboxStatus.RECEIVED)
    store.set_inbox_status(stored.id, InboxStatus.FAILED, error="bad NA")
    quarantine_id = store.add_quarantine(QuarantineEntry("hl7_message", "inbox", "bad NA", f"inbox:{stored.id}"))
    assert retry_quarantined(store, quarantine_id).requeued
    assert [m.id for m in store.list_inbox(InboxStatus.RECEIVED)] == [stored.id]


def test_what_cannot_be_requeued_says_what_to_do(store):
    quarantine_id = store.add_quarantine(QuarantineEntry("wfdb_record", "/drop", "short .dat", "p1/s1/1"))
    result = retry_quarantined(store, quarantine_id)
    assert not result.requeued and "replace or fix the record's files" in result.message


def test_shadow_report_compares_each_label_on_the_studies_both_scored(store, registry):
    registry.shadow("1.1.0", reason="compare")
    _run(store, [_ecg(f"s{i}", seed=i) for i in range(5)])
    report = shadow_report(store)
    assert report.n_studies == 5 and len(report.labels) == 4
    for label in report.labels:
        assert label.n == 5 and 0.0 <= label.agreement <= 1.0 and label.mean_abs_probability_diff >= 0.0
    assert report.verdict().startswith(("promote looks safe", "review before promoting"))


def test_the_verdict_is_safe_only_when_every_label_agrees_and_keeps_its_positive_rate():
    same = LabelComparison("diagnosis", "I48", 100, 0.20, 0.21, 0.97, 0.02)
    shifted = LabelComparison("diagnosis", "E875", 100, 0.05, 0.15, 0.90, 0.10)
    assert ShadowReport("1.0.0", "1.1.0", 100, [same]).looks_safe
    report = ShadowReport("1.0.0", "1.1.0", 100, [same, shifted])
    assert not report.looks_safe and report.verdict() == "review before promoting: 1 labels disagree (E875)"
    assert not ShadowReport("1.0.0", "1.1.0", 0, []).looks_safe


def test_the_study_report_is_a_png_or_a_one_page_pdf(store, registry, tmp_path):
    item = _ecg("a")
    _run(store, [item])
    study = store.get_study("list", "a", "1")
    path = study_report(store, study, item.record, "1.0.0", tmp_path / "a.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pdf = study_report(store, study, item.record, "1.0.0", tmp_path / "a.pdf", page=LETTER_LANDSCAPE).read_bytes()
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", pdf)) == 1


def test_findings_from_the_exported_manifest_are_named_by_its_displays(store, registry):
    _run(store, [_ecg(f"n{i}", seed=i) for i in range(6)])
    manifest = store.get_model_version("1.0.0").manifest
    displays = {label["display"] for label in manifest["diagnoses"] + manifest["lab_targets"]}
    findings = [f for i in range(6) for f in study_findings(store, store.get_study("list", f"n{i}", "1").id,
                                                            store.get_model_version("1.0.0"))]  # fmt: skip
    assert findings and {f.name for f in findings} <= displays
    assert all(f.code in (None, "I48", "E875") for f in findings)


#: A manifest as the exporter writes it (only what the printout reads), two labels with a release entry.
MANIFEST = {
    "diagnoses": [
        {"code": "I48", "display": "Atrial fibrillation and flutter", "threshold": 0.5},
        {
            "code": "E875",
            "display": "Hyperkalemia",
            "threshold": 0.5,
            "release": {"charted": False, "ppv": 0.31, "sensitivity": 0.55},
        },
        {"code": "N18", "display": "Chronic kidney disease", "threshold": 0.5},
    ],
    "lab_targets": [
        {"name": "potassium_high", "display": "Potassium high", "threshold": 0.5},
        {"name": "tsh_high", "display": "TSH high", "threshold": 0.5, "release": {"charted": True, "ppv": 0.62}},
    ],
}


def _scored_study(store, version: str = "2.0.0", state: ModelState = ModelState.ACTIVE) -> int:
    store.register_model_version(version, "0" * 64, f"/models/{version}", MANIFEST, actor="test")
    if state != ModelState.REGISTERED:
        store.set_model_state(version, state, actor="test", reason="test")
    study = store.upsert_study(EcgStudy("wfdb", "p1/s1/ref", "1", 500.0, MODEL_LEAD_ORDER))
    diagnoses = TargetScores(("I48", "E875", "N18", "R00"), (0.93, 0.64, 0.2, 0.7), (True, True, False, True))
    labs = TargetScores(("potassium_high", "tsh_high"), (0.82, 0.57), (True, True))
    explanations = (LabLink("I48", "potassium_high", 2.1),)
    store.put_prediction_sets([PredictionSet(study.id, version, diagnoses, labs, explanations)])
    return study.id


def test_findings_are_named_ordered_charted_and_explained_from_the_manifest(store):
    study_id = _scored_study(store)
    assert study_findings(store, study_id, store.get_model_version("2.0.0")) == [
        PrintoutFinding("Atrial fibrillation and flutter", "I48", 0.93, True, None, ("Potassium high (p 0.82)",)),
        PrintoutFinding("R00", None, 0.7, True),  # a code the manifest does not name prints as itself, once
        PrintoutFinding("Hyperkalemia", "E875", 0.64, False, "PPV 31 %, sensitivity 55 %"),
        PrintoutFinding("Potassium high", None, 0.82, True, predicted_lab=True),
        PrintoutFinding("TSH high", None, 0.57, True, "PPV 62 %", predicted_lab=True),
    ]


def test_a_shadow_versions_findings_are_never_charted(store):
    study_id = _scored_study(store, "2.1.0", ModelState.SHADOW)
    findings = study_findings(store, study_id, store.get_model_version("2.1.0"))
    assert len(findings) == 5 and not any(f.charted for f in findings)


def test_the_release_entry_decides_what_is_charted_and_without_one_every_positive_is(store):
    _scored_study(store)
    active = store.get_model_version("2.0.0")
    assert label_release({"code": "I48"}, active).charted
    assert not label_release({"code": "I48", "release": {"charted": False}}, active).charted
    assert label_release({"code": "I48", "release": {"charted": True, "sensitivity": 0.7}}, active).quality == (
        "sensitivity 70 %"
    )


def test_a_version_without_results_for_the_study_is_an_error_naming_both(store, tmp_path):
    study_id = _scored_study(store)
    store.register_model_version("3.0.0", "1" * 64, "/models/3.0.0", MANIFEST, actor="test")
    with pytest.raises(AgentError, match=re.escape(f"study {study_id} has no predictions from model 3.0.0")):
        study_findings(store, study_id, store.get_model_version("3.0.0"))
    with pytest.raises(AgentError, match=re.escape("model version 9.9.9 is not registered")):
        study_report(store, store.get_study_by_id(study_id), _ecg("x").record, "9.9.9", tmp_path / "x.png")


def test_status_and_quarantine_commands_print_what_they_see(tmp_path, capsys):
    config = tmp_path / "agent.toml"
    config.write_text(f'database_url = "sqlite:///{tmp_path / "agent.db"}"\n')
    assert main(["--config", str(config), "status"]) == 0
    assert main(["--config", str(config), "quarantine", "list"]) == 0
    out = capsys.readouterr().out
    assert "active model: none" in out and "last runs: none yet" in out and "quarantine is empty" in out
