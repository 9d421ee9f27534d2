"""One bad ECG never stops the others; only infrastructure stops something, and then only what it touches."""

from collections.abc import Iterator, Sequence
from datetime import datetime

import numpy as np
import pytest

import agent.batch
from agent.batch import RunLimits, run_once
from agent.loader import ModelLoader
from agent.registry import ModelRegistry
from agent.settings import ScoringSettings
from agent.sinks.payload import ResultPayload
from agent.sources import PulledEcg, RejectedItem
from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.errors import IntegrationError
from integrations.fhir.errors import FhirUnavailableError
from integrations.store import EcgStudy, OutboxStatus, QuarantineEntry, RunStatus, StudyStatus

SCORING = ScoringSettings(batch_size=2)


def _ecg(record_id: str, *, seed: int = 0, acquired_at: datetime | None = None) -> PulledEcg:
    rng = np.random.default_rng(seed)
    t = np.arange(5000) / 500.0
    signal = np.stack([np.sin(2 * np.pi * 1.2 * t + lead) + 0.05 * rng.standard_normal(t.size) for lead in range(12)])
    record = EcgRecord(record_id, signal, 500.0, MODEL_LEAD_ORDER, source="list", subject_id="p1")
    study = EcgStudy("list", record_id, "1", 500.0, MODEL_LEAD_ORDER, patient_ref="Patient/p1", acquired_at=acquired_at)
    return PulledEcg(record, study, token=record_id)


class ListSource:
    name = "list"

    def __init__(self, items, *, fail_after: int | None = None) -> None:
        self.items, self.fail_after, self.acknowledged = list(items), fail_after, []

    def pull(self) -> Iterator:
        for index, item in enumerate(self.items):
            if index == self.fail_after:
                raise FhirUnavailableError("GET", "http://fhir/Observation", 6, "connection refused")
            yield item

    def done(self, items: Sequence) -> None:
        self.acknowledged += [item.token for item in items]


class Sink:
    destination = "collector"
    max_in_flight = 1

    def __init__(self, failure: Exception | None = None) -> None:
        self.failure, self.received, self.attempts = failure, [], 0

    def accepts(self, study) -> bool:
        return True

    def send(self, payload: ResultPayload) -> None:
        self.attempts += 1
        if self.failure is not None:
            raise self.failure
        self.received.append(payload.source_id)


@pytest.fixture
def models(store, artifact_factory, tmp_path):
    registry = ModelRegistry(store, tmp_path / "registry", actor="test")
    registry.register(artifact_factory("1.0.0"))
    registry.promote("1.0.0", reason="test")
    return ModelLoader(store)


def _run(store, models, sources, sinks=(), **kwargs):
    return run_once(store, models.load_for_run(), sources, list(sinks), SCORING, progress=False, **kwargs)


def test_a_study_the_store_refuses_is_quarantined_alone_and_the_batch_goes_on(store, models):
    naive = _ecg("naive-time", acquired_at=datetime(2026, 11, 20, 3, 14))  # the store keeps aware UTC only
    source = ListSource([_ecg("a"), naive, _ecg("b", seed=1)])
    report = _run(store, models, [source])
    assert report.counts["scored"] == 2 and report.counts["quarantined"] == 1
    [entry] = store.list_quarantine()
    assert entry.entry.raw_ref == "list:naive-time@1" and entry.entry.reason.startswith("store-refused:")
    assert source.acknowledged == ["a", "naive-time", "b"]
    assert store.get_run(report.run_id).status == RunStatus.SUCCEEDED


def test_a_record_the_model_fails_on_is_quarantined_as_failed_and_the_others_are_scored(store, models, monkeypatch):
    real = agent.batch.score_records

    def score_records(records, *args, **kwargs):
        if any(record.record_id == "poison" for record in records):
            raise RuntimeError("shape mismatch inside the model")
        return real(records, *args, **kwargs)

    monkeypatch.setattr(agent.batch, "score_records", score_records)
    report = _run(store, models, [ListSource([_ecg("a"), _ecg("poison", seed=1), _ecg("b", seed=2)])])
    assert report.counts["scored"] == 2 and report.counts["failed"] == 1
    assert store.get_study("list", "poison", "1").status == StudyStatus.FAILED
    assert "scoring-failed: shape mismatch" in store.list_quarantine()[0].entry.reason


def test_an_ecg_read_again_after_it_was_quarantined_is_counted_not_quarantined_again(store, models):
    flat = _ecg("flat")
    flat.record.signal_mv[:] = 0.0
    first = _run(store, models, [ListSource([flat, _ecg("a")])])
    again = _run(store, models, [ListSource([flat, _ecg("a")])])  # the source's re-read window
    assert first.counts["quarantined"] == 1 and first.failure_rate == 0.5
    assert again.counts["quarantined"] == 0 and again.counts["already_quarantined"] == 1
    assert again.counts["already_scored"] == 1 and again.failure_rate == 0.0
    [entry] = store.list_quarantine()
    assert entry.seen_count == 2


def test_a_rejected_item_seen_five_times_is_one_quarantine_row(store, models):
    rejected = RejectedItem(
        QuarantineEntry("fhir_observation", "fhir", "malformed: no data", "Observation/9/_history/1")
    )
    reports = [_run(store, models, [ListSource([rejected])]) for _ in range(5)]
    assert [r.counts["quarantined"] for r in reports] == [1, 0, 0, 0, 0]
    [entry] = store.list_quarantine()
    assert entry.seen_count == 5


def test_a_source_that_becomes_unreachable_stops_alone_and_fails_the_run_after_the_others(store, models):
    broken = ListSource([_ecg("a"), _ecg("b", seed=1), _ecg("c", seed=2)], fail_after=2)
    other = ListSource([_ecg("x", seed=3)])
    other.name = "other"
    report = _run(store, models, [broken, other])
    assert report.counts["scored"] == 3  # a and b (committed before the failure) and x from the other source
    assert broken.acknowledged == ["a", "b"] and other.acknowledged == ["x"]
    run = store.get_run(report.run_id)
    assert run.status == RunStatus.FAILED and "source list stopped" in run.error and "connection refused" in run.error


def test_past_the_deadline_the_run_stops_collecting_keeps_what_it_committed_and_says_so(store, models):
    ticks = iter(range(100))
    limits = RunLimits(deadline=5, clock=lambda: next(ticks))
    source = ListSource([_ecg(f"e{i}", seed=i) for i in range(10)])
    report = _run(store, models, [source], limits=limits)
    assert report.deadline_reached and 0 < report.counts["scored"] < 10
    assert source.acknowledged == [f"e{i}" for i in range(report.counts["scored"])]
    run = store.get_run(report.run_id)
    assert run.status == RunStatus.DEGRADED and any("deadline" in problem for problem in run.problems)


def test_an_unreachable_receiver_is_not_blamed_on_the_messages_and_fails_the_run(store, models):
    sink = Sink(FhirUnavailableError("POST", "http://fhir", 6, "read timeout"))
    report = _run(store, models, [ListSource([_ecg("a"), _ecg("b", seed=1), _ecg("c", seed=2)])], [sink])
    assert sink.attempts == 1  # taken out of the run at the first unreachable answer
    assert report.counts["writeback_failed"] == 0
    assert {m.attempts for m in store.list_outbox(OutboxStatus.PENDING)} == {0}
    assert store.get_run(report.run_id).status == RunStatus.FAILED
    sink.failure = None
    second = _run(store, models, [ListSource([])], [sink])
    assert second.counts["written_back"] == 3 and sorted(sink.received) == ["a", "b", "c"]


def test_a_write_back_refused_on_every_attempt_is_parked_and_delivered_after_a_requeue(store, models):
    sink = Sink(IntegrationError("HTTP 422: invalid Observation"))
    reports = [_run(store, models, [ListSource([_ecg("a")])], [sink]) for _ in range(5)]
    assert [r.counts["writeback_failed"] for r in reports] == [1] * 5
    assert reports[-1].counts["writeback_parked"] == 1
    assert all(store.get_run(r.run_id).status == RunStatus.DEGRADED for r in reports)
    [parked] = store.list_outbox(OutboxStatus.FAILED)
    assert parked.attempts == 5 and "invalid Observation" in parked.last_error
    quiet = _run(store, models, [ListSource([])], [sink])
    assert sink.attempts == 5 and quiet.counts["writeback_failed"] == 0  # parked: not tried again by itself
    assert store.requeue_outbox() == 1
    sink.failure = None
    delivered = _run(store, models, [ListSource([])], [sink])
    assert delivered.counts["written_back"] == 1 and sink.received == ["a"]


def test_a_payload_whose_model_version_is_not_registered_fails_that_message_and_not_the_run(store, models):
    from agent.sinks.manifests import ManifestIndex

    index = ManifestIndex(store)

    class ManifestReadingSink(Sink):
        def send(self, payload: ResultPayload) -> None:
            self.attempts += 1
            version = "9.9.9" if payload.source_id == "a" else payload.model.version
            index.diagnosis(version, "I48")  # as the FHIR and HL7 sinks do for each positive diagnosis
            self.received.append(payload.source_id)

    sink = ManifestReadingSink()
    report = _run(store, models, [ListSource([_ecg("a"), _ecg("b", seed=1)])], [sink])
    assert sink.received == ["b"] and report.counts["writeback_failed"] == 1
    assert any("model version 9.9.9 is not registered" in problem for problem in report.problems)
    assert store.get_run(report.run_id).status == RunStatus.DEGRADED
