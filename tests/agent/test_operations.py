"""Operator views: status, quarantine retry, shadow-versus-active, and one study's annotated printout."""

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import numpy as np
import pytest

from agent.batch import run_once
from agent.cli import main
from agent.loader import ModelLoader
from agent.operations import (
    LabelComparison,
    ShadowReport,
    retry_quarantined,
    shadow_report,
    status,
    study_report_png,
)
from agent.registry import ModelRegistry
from agent.settings import ScoringSettings
from agent.sources import PulledEcg
from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.store import EcgStudy, InboxMessage, InboxStatus, QuarantineEntry, QuarantineState, StudyStatus

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


def test_the_study_report_is_a_png_annotated_with_the_findings(store, registry, tmp_path):
    item = _ecg("a")
    _run(store, [item])
    study = store.get_study("list", "a", "1")
    path = study_report_png(store, study, item.record, "1.0.0", tmp_path / "a.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_status_and_quarantine_commands_print_what_they_see(tmp_path, capsys):
    config = tmp_path / "agent.toml"
    config.write_text(f'database_url = "sqlite:///{tmp_path / "agent.db"}"\n')
    assert main(["--config", str(config), "status"]) == 0
    assert main(["--config", str(config), "quarantine", "list"]) == 0
    out = capsys.readouterr().out
    assert "active model: none" in out and "last runs: none yet" in out and "quarantine is empty" in out
