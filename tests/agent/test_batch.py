"""One run: new ECGs are scored once, stored, written back once; bad ones are quarantined; nothing is lost."""

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import numpy as np
import pytest

from agent.batch import run_once
from agent.loader import ModelLoader
from agent.registry import ModelRegistry
from agent.settings import ScoringSettings
from agent.sinks.payload import ResultPayload
from agent.sources import PulledEcg, RejectedItem
from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.errors import IntegrationError
from integrations.store import EcgStudy, QuarantineEntry, RunStatus, StudyStatus

SCORING = ScoringSettings(batch_size=2)
N_TARGETS = 4  # the tiny artifact: 2 diagnoses + 2 lab targets


def _ecg(record_id: str, *, n_leads: int = 12, seed: int = 0) -> PulledEcg:
    rng = np.random.default_rng(seed)
    t = np.arange(5000) / 500.0
    signal = np.stack([np.sin(2 * np.pi * 1.2 * t + lead) + 0.05 * rng.standard_normal(t.size) for lead in range(12)])
    leads = MODEL_LEAD_ORDER[:n_leads]
    record = EcgRecord(record_id, signal[:n_leads], 500.0, leads, source="list", subject_id="p1")
    study = EcgStudy("list", record_id, "1", 500.0, leads, patient_ref="Patient/p1", acquired_at=datetime.now(UTC))
    return PulledEcg(record, study, token=record_id)


class ListSource:
    """A source over a fixed list; ``done`` records what was acknowledged and what the store held at that moment."""

    name = "list"

    def __init__(self, store, items) -> None:
        self.store, self.items, self.acknowledged, self.scored_when_acknowledged = store, list(items), [], []

    def pull(self) -> Iterator:
        yield from self.items

    def done(self, items: Sequence) -> None:
        self.acknowledged += [item.token for item in items]
        for item in items:
            if isinstance(item, PulledEcg):
                stored = self.store.get_study("list", item.study.source_id, "1")
                self.scored_when_acknowledged.append(stored.status)


class CollectingSink:
    """A receiver that keeps what it was sent, and can be told to be down."""

    destination = "collector"
    max_in_flight = 1

    def __init__(self) -> None:
        self.received: list[ResultPayload] = []
        self.down = False

    def accepts(self, study) -> bool:
        return True

    def send(self, payload: ResultPayload) -> None:
        if self.down:
            raise IntegrationError("collector is down")
        self.received.append(payload)


@pytest.fixture
def models(store, artifact_factory, tmp_path):
    registry = ModelRegistry(store, tmp_path / "registry", actor="test")
    registry.register(artifact_factory("1.0.0"))
    registry.promote("1.0.0", reason="test")
    return ModelLoader(store)


def test_new_ecgs_are_scored_stored_and_written_back(store, models):
    source, sink = ListSource(store, [_ecg("a"), _ecg("b", seed=1), _ecg("c", seed=2)]), CollectingSink()
    report = run_once(store, models.load_for_run(), [source], [sink], SCORING, progress=False)
    assert report.counts["scored"] == 3 and report.counts["written_back"] == 3
    study = store.get_study("list", "a", "1")
    assert study.status == StudyStatus.SCORED
    assert len(store.get_predictions(study.id, "1.0.0")) == N_TARGETS
    assert sorted(p.source_id for p in sink.received) == ["a", "b", "c"]
    assert store.get_run(report.run_id).status == RunStatus.SUCCEEDED


class CountingSource(ListSource):
    """A list source that notes how many items it had handed out each time a batch was acknowledged."""

    def __init__(self, store, items) -> None:
        super().__init__(store, items)
        self.handed_out, self.handed_out_when_acknowledged = 0, []

    def pull(self) -> Iterator:
        for item in self.items:
            self.handed_out += 1
            yield item

    def done(self, items: Sequence) -> None:
        super().done(items)
        self.handed_out_when_acknowledged.append(self.handed_out)


def test_a_run_reads_its_source_one_batch_at_a_time(store, models):
    """However long the night, the run holds one batch: the next is read only after the last one is committed."""
    source = CountingSource(store, [_ecg(f"e{index}", seed=index) for index in range(5)])

    report = run_once(store, models.load_for_run(), [source], [], SCORING, progress=False)

    assert report.counts["scored"] == 5
    assert source.handed_out_when_acknowledged == [2, 4, 5]


def test_a_source_is_acknowledged_only_after_its_results_are_committed(store, models):
    source = ListSource(store, [_ecg("a"), _ecg("b", seed=1), _ecg("c", seed=2)])
    run_once(store, models.load_for_run(), [source], [], SCORING, progress=False)
    assert source.acknowledged == ["a", "b", "c"]
    assert source.scored_when_acknowledged == [StudyStatus.SCORED] * 3


def test_a_second_run_adds_nothing(store, models):
    sink = CollectingSink()
    run_once(store, models.load_for_run(), [ListSource(store, [_ecg("a")])], [sink], SCORING, progress=False)
    again = run_once(store, models.load_for_run(), [ListSource(store, [_ecg("a")])], [sink], SCORING, progress=False)
    assert again.counts["already_scored"] == 1 and again.counts["scored"] == 0
    assert len(sink.received) == 1
    assert len(store.get_predictions(store.get_study("list", "a", "1").id)) == N_TARGETS


def test_bad_records_are_quarantined_with_the_reason_and_the_run_goes_on(store, models):
    rejected = RejectedItem(QuarantineEntry("fhir_observation", "fhir", "no components", "Observation/9"), token="9")
    source = ListSource(store, [_ecg("short-of-leads", n_leads=11), rejected, _ecg("good")])
    report = run_once(store, models.load_for_run(), [source], [], SCORING, progress=False)
    assert report.counts["scored"] == 1 and report.counts["quarantined"] == 2
    reasons = sorted(entry.entry.reason for entry in store.list_quarantine())
    assert reasons == ["missing-leads: missing leads V6", "no components"]
    assert store.get_study("list", "short-of-leads", "1").status == StudyStatus.FAILED
    assert source.acknowledged == ["short-of-leads", "9", "good"]


def test_shadow_results_are_stored_and_never_written_back(store, models, artifact_factory, tmp_path):
    registry = ModelRegistry(store, tmp_path / "registry", actor="test")
    registry.register(artifact_factory("1.1.0"))
    registry.shadow("1.1.0", reason="compare")
    sink = CollectingSink()
    report = run_once(store, models.load_for_run(), [ListSource(store, [_ecg("a")])], [sink], SCORING, progress=False)
    study_id = store.get_study("list", "a", "1").id
    assert report.counts["shadow_scored"] == 1
    assert len(store.get_predictions(study_id, "1.1.0")) == N_TARGETS
    assert [payload.model.version for payload in sink.received] == ["1.0.0"]


def test_a_failed_write_back_stays_queued_and_is_delivered_by_the_next_run(store, models):
    sink = CollectingSink()
    sink.down = True
    first = run_once(store, models.load_for_run(), [ListSource(store, [_ecg("a")])], [sink], SCORING, progress=False)
    assert first.counts["writeback_failed"] == 1 and sink.received == []
    sink.down = False
    second = run_once(store, models.load_for_run(), [ListSource(store, [])], [sink], SCORING, progress=False)
    assert second.counts["written_back"] == 1 and [p.source_id for p in sink.received] == ["a"]


def test_without_an_active_model_the_run_fails_and_says_why(store):
    report = run_once(store, ModelLoader(store).load_for_run(), [ListSource(store, [_ecg("a")])], [], SCORING,
                      progress=False)  # fmt: skip
    run = store.get_run(report.run_id)
    assert run.status == RunStatus.FAILED and "no model version is active" in run.error
    assert store.get_study("list", "a", "1") is None  # nothing was pulled, so nothing is lost


class ParallelSink:
    """A receiver that lets a send through only when ``max_in_flight`` sends are under way together."""

    destination = "parallel"

    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight
        self._barrier = threading.Barrier(max_in_flight, timeout=10)
        self._lock = threading.Lock()
        self.under_way = self.most_under_way = 0
        self.received: list[str] = []

    def accepts(self, study) -> bool:
        return True

    def send(self, payload: ResultPayload) -> None:
        with self._lock:
            self.under_way += 1
            self.most_under_way = max(self.most_under_way, self.under_way)
        try:
            self._barrier.wait()
        except threading.BrokenBarrierError as exc:
            raise IntegrationError("fewer sends under way than the sink allows") from exc
        finally:
            with self._lock:
                self.under_way -= 1
        with self._lock:
            self.received.append(payload.source_id)


def test_write_backs_go_out_in_parallel_up_to_the_sinks_limit_and_no_further(store, models):
    sink = ParallelSink(max_in_flight=3)
    source = ListSource(store, [_ecg(f"e{i}", seed=i) for i in range(6)])
    report = run_once(store, models.load_for_run(), [source], [sink], SCORING, progress=False)
    assert report.counts["written_back"] == 6 and report.counts["writeback_failed"] == 0
    assert sink.most_under_way == 3
    assert sorted(sink.received) == [f"e{i}" for i in range(6)]


def test_a_write_back_that_fails_is_tried_once_per_run_even_with_parallel_senders(store, models):
    sink = CollectingSink()
    sink.down, sink.max_in_flight = True, 4
    attempts: list[str] = []
    send = sink.send
    sink.send = lambda payload: (attempts.append(payload.source_id), send(payload))  # type: ignore[method-assign]
    source = ListSource(store, [_ecg(f"e{i}", seed=i) for i in range(5)])
    report = run_once(store, models.load_for_run(), [source], [sink], SCORING, progress=False)
    assert report.counts["writeback_failed"] == 5 and sorted(attempts) == [f"e{i}" for i in range(5)]
