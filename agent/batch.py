"""One run of the agent: collect new ECGs, validate, score, store, write back, advance.

The steps, in order (the README's diagram)::

    sources ─► validate ─► preprocess + score (active, shadows) ─► one transaction per batch:
               │                                                    predictions, explanations,
               └─► quarantine (reason)                              outbox rows, study status
    ─► source.done(batch)  (watermark / inbox status advance only after that commit)
    ─► the batch's outbox rows go to the sinks while the next batch is collected
       (worker threads; idempotent receivers: exactly-once effect)
    ─► once every source is read: the rest of the outbox, then the run row with counts per outcome

Crash safety comes from the order: nothing is acknowledged to a source before its
results are committed, and every write is idempotent (unique predictions, unique
outbox keys, conditional creates at the receiver), so rerunning after a crash at any
point loses nothing and duplicates nothing. Shadow models are scored and stored but
never reach the outbox.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol

from tqdm import tqdm

from agent.loader import LoadedModel, RunModels
from agent.scoring import ScoredEcg, score_records, validation_rules
from agent.settings import ScoringSettings
from agent.validation import validate_record
from integrations.ecg import EcgRecord
from integrations.errors import IntegrationError
from integrations.store import (
    EcgStudy,
    Explanation,
    OutboxMessage,
    Prediction,
    QuarantineEntry,
    RunStatus,
    Store,
    StoredOutboxMessage,
    StoredStudy,
    StudyStatus,
    TargetKind,
)
from model_training.artifact import ArtifactError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PulledEcg:
    """An ECG from a source, with how the store knows it; ``token`` is the source's own bookmark."""

    record: EcgRecord
    study: EcgStudy
    token: Any = None


@dataclass(frozen=True, slots=True)
class RejectedItem:
    """Something a source could not turn into an ECG; it goes to quarantine with the reason.

    ``quarantine_id`` is set when the source has already quarantined it (the WFDB feed does).
    """

    entry: QuarantineEntry
    token: Any = None
    quarantine_id: int | None = None


Pulled = PulledEcg | RejectedItem


class EcgSource(Protocol):
    """Where ECGs come from: FHIR, the HL7 inbox, a WFDB folder."""

    name: str

    def pull(self) -> Iterator[Pulled]:
        """New items since the last :meth:`done`, oldest first."""
        ...

    def done(self, items: Sequence[Pulled]) -> None:
        """``items`` and everything before them are committed: advance the watermark / mark them processed."""
        ...


class ResultSink(Protocol):
    """Where results go back to: FHIR Observations, HL7 ORU^R01."""

    destination: str
    #: Deliveries this sink may have under way at once (worker threads); 1 keeps them in order.
    max_in_flight: int

    def accepts(self, study: StoredStudy) -> bool:
        """Whether results for ``study`` go to this destination (e.g. FHIR only for ECGs that came from FHIR)."""
        ...

    def send(self, payload: dict[str, Any]) -> None:
        """Deliver one study's results; must be idempotent (a retry after a crash sends the same payload).

        Called from worker threads, up to ``max_in_flight`` at once.
        """
        ...


@dataclass(slots=True)
class RunReport:
    run_id: int
    model_version: str | None
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def failure_rate(self) -> float:
        attempted = self.counts["scored"] + self.counts["quarantined"] + self.counts["failed"]
        return (self.counts["quarantined"] + self.counts["failed"]) / attempted if attempted else 0.0


def run_once(
    store: Store,
    models: RunModels,
    sources: Sequence[EcgSource],
    sinks: Sequence[ResultSink],
    scoring: ScoringSettings,
    *,
    progress: bool = True,
) -> RunReport:
    """One batch run; returns its report (also stored as the run row)."""
    active = models.active
    versions = [m.version for m in ([active] if active else []) + list(models.shadows)]
    run = store.start_run(versions)
    report = RunReport(run.id, active.version if active else None, problems=list(models.refusals))
    try:
        if active is None:
            raise _RunAborted("no verified active model: " + "; ".join(models.refusals))
        with _Deliveries(store, sinks, report) as deliveries:
            for source in sources:
                _collect(store, source, active, models.shadows, sinks, scoring, report, progress, deliveries)
            deliveries.finish()
    except (_RunAborted, IntegrationError) as exc:
        report.problems.append(str(exc))
        store.finish_run(run.id, RunStatus.FAILED, report.counts, error=str(exc))
        log.error("run %s failed: %s", run.id, exc)
        return report
    store.finish_run(run.id, RunStatus.SUCCEEDED, report.counts)
    return report


class _RunAborted(Exception):
    """The run cannot go on at all (as opposed to one bad record, which is quarantined)."""


def _collect(
    store: Store,
    source: EcgSource,
    active: LoadedModel,
    shadows: Sequence[LoadedModel],
    sinks: Sequence[ResultSink],
    scoring: ScoringSettings,
    report: RunReport,
    progress: bool,
    deliveries: _Deliveries,
) -> None:
    items = tqdm(source.pull(), desc=f"score {source.name}", unit="ecg", disable=not progress)
    for batch in _batches(items, scoring.batch_size):
        _process_batch(store, batch, active, shadows, sinks, scoring, report)
        source.done(batch)
        deliveries.pump()


def _batches(items: Iterable[Pulled], size: int) -> Iterator[list[Pulled]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _process_batch(
    store: Store,
    batch: list[Pulled],
    active: LoadedModel,
    shadows: Sequence[LoadedModel],
    sinks: Sequence[ResultSink],
    scoring: ScoringSettings,
    report: RunReport,
) -> None:
    report.counts["pulled"] += len(batch)
    for item in batch:
        if isinstance(item, RejectedItem):
            _quarantine(store, item, report)
    to_score = _admissible(store, [item for item in batch if isinstance(item, PulledEcg)], active, report)
    if not to_score:
        return
    scored = _score_each(store, to_score, active, scoring, report)
    records = {study.id: record for study, record in to_score}
    shadow_scores = [_score_shadow(scored, records, model, scoring, report) for model in shadows]
    predictions = [p for study, result in scored for p in _predictions(study.id, result)]
    predictions += [p for shadow in shadow_scores for study_id, r in shadow.items() for p in _predictions(study_id, r)]
    with store.transaction() as unit:  # the batch's results, outbox rows and statuses commit together
        unit.put_predictions(predictions)
        unit.put_explanations([e for study, result in scored for e in _explanations(study.id, result)])
        for study, result in scored:
            for sink in sinks:
                if sink.accepts(study):
                    unit.enqueue_outbox(_outbox_message(sink.destination, study, result, active))
            unit.set_study_status(study.id, StudyStatus.SCORED)
    report.counts["scored"] += len(scored)
    report.counts["shadow_scored"] += sum(len(shadow) for shadow in shadow_scores)


def _admissible(
    store: Store, items: list[PulledEcg], active: LoadedModel, report: RunReport
) -> list[tuple[StoredStudy, EcgRecord]]:
    """Studies that are new and pass validation; the rest are counted, and the invalid ones quarantined."""
    rules = validation_rules(active.artifact.manifest)
    with store.transaction() as unit:  # one commit for the batch's study rows, not one per study
        studies = [unit.upsert_study(item.study) for item in items]
    admissible, in_batch = [], set()
    for item, study in zip(items, studies, strict=True):
        if study.status == StudyStatus.SCORED:
            report.counts["already_scored"] += 1
            continue
        if study.id in in_batch:  # requeued by id and pulled again as new: one study, scored once
            report.counts["duplicate"] += 1
            continue
        in_batch.add(study.id)
        try:
            validate_record(item.record, rules)
        except IntegrationError as exc:
            _refuse(store, study, item.record.source, str(exc), report)
            continue
        admissible.append((study, item.record))
    return admissible


def _score_each(
    store: Store,
    to_score: list[tuple[StoredStudy, EcgRecord]],
    active: LoadedModel,
    scoring: ScoringSettings,
    report: RunReport,
) -> list[tuple[StoredStudy, ScoredEcg]]:
    records = [record for _, record in to_score]
    try:
        results = score_records(
            records, active.artifact, batch_size=scoring.batch_size, explanation_top_k=scoring.explanation_top_k
        )
        return list(zip((study for study, _ in to_score), results, strict=True))
    except (IntegrationError, ArtifactError, ValueError):
        log.warning("batch scoring failed; scoring its %d records one by one to isolate the bad one", len(records))
    scored = []
    for study, record in to_score:
        try:
            result = score_records([record], active.artifact, batch_size=1, explanation_top_k=scoring.explanation_top_k)
        except (IntegrationError, ArtifactError, ValueError) as exc:  # the per-record boundary
            _refuse(store, study, record.source, f"scoring failed: {exc}", report, outcome="failed")
            continue
        scored.append((study, result[0]))
    return scored


def _score_shadow(
    scored: list[tuple[StoredStudy, ScoredEcg]],
    records: dict[int, EcgRecord],
    model: LoadedModel,
    scoring: ScoringSettings,
    report: RunReport,
) -> dict[int, ScoredEcg]:
    """Shadow results by study id, for the studies the active model scored; a shadow failure never fails the run."""
    studies = [study for study, _ in scored]
    try:
        results = score_records(
            [records[study.id] for study in studies],
            model.artifact,
            batch_size=scoring.batch_size,
            explanation_top_k=scoring.explanation_top_k,
        )
    except (IntegrationError, ArtifactError, ValueError) as exc:
        report.problems.append(f"shadow {model.version}: {exc}")
        return {}
    return {study.id: result for study, result in zip(studies, results, strict=True)}


def _refuse(
    store: Store, study: StoredStudy, origin: str, reason: str, report: RunReport, *, outcome: str = "quarantined"
) -> None:
    key = study.study
    entry = QuarantineEntry(kind="ecg", origin=origin, reason=reason, raw_ref=study_ref(key))
    with store.transaction() as unit:
        unit.add_quarantine(entry)
        unit.set_study_status(study.id, StudyStatus.FAILED, error=reason)
    report.counts[outcome] += 1
    log.warning("quarantined %s: %s", entry.raw_ref, reason)


def study_ref(study: EcgStudy) -> str:
    """How a quarantined ECG names its study: ``source:source_id@source_version``."""
    return f"{study.source}:{study.source_id}@{study.source_version}"


def parse_study_ref(ref: str) -> tuple[str, str, str]:
    """(source, source_id, source_version) of a :func:`study_ref`."""
    source, _, rest = ref.partition(":")
    source_id, _, version = rest.rpartition("@")
    return source, source_id, version


def _quarantine(store: Store, item: RejectedItem, report: RunReport) -> None:
    entry = item.entry
    if item.quarantine_id is None:
        # Sources re-read a little behind their watermark; the same bad item is quarantined once, not per run.
        if store.list_quarantine(kind=entry.kind, raw_ref=entry.raw_ref):
            report.counts["already_quarantined"] += 1
            return
        store.add_quarantine(entry)
    report.counts["quarantined"] += 1
    log.warning("quarantined %s from %s: %s", entry.raw_ref, entry.origin, entry.reason)


def _predictions(study_id: int, result: ScoredEcg) -> list[Prediction]:
    return [
        Prediction(study_id, result.model_version, TargetKind(f.kind), f.code, f.probability, f.positive)
        for f in result.findings
    ]


def _explanations(study_id: int, result: ScoredEcg) -> list[Explanation]:
    return [
        Explanation(study_id, result.model_version, e.diagnosis_code, e.lab_target, e.lab_probability)
        for e in result.explanations
    ]


def _outbox_message(destination: str, study: StoredStudy, result: ScoredEcg, active: LoadedModel) -> OutboxMessage:
    key = study.study
    manifest = active.artifact.manifest
    payload = {
        "study_id": study.id,
        "source": key.source,
        "source_id": key.source_id,
        "source_version": key.source_version,
        "patient_ref": key.patient_ref,
        "acquired_at": key.acquired_at.isoformat() if key.acquired_at else None,
        "model": {"name": manifest.model_name, "version": active.version, "sha256": active.sha256},
        "findings": [
            {"kind": f.kind, "code": f.code, "probability": f.probability, "positive": f.positive}
            for f in result.findings
        ],
        "explanations": [
            {"diagnosis": e.diagnosis_code, "lab_target": e.lab_target, "probability": e.lab_probability}
            for e in result.explanations
        ],
    }
    idempotency_key = f"{destination}|{key.source}|{key.source_id}|{key.source_version}|{active.version}"
    return OutboxMessage(destination=destination, idempotency_key=idempotency_key, payload=payload)


class _Deliveries:
    """Write-backs under way while the run goes on: worker threads send, the run's thread records.

    Only the run's thread touches the store. Per sink, at most twice ``max_in_flight`` messages are
    leased and not yet delivered, so no lease runs out while its message waits for a worker. A failure
    is recorded only by :meth:`finish`: recording releases the lease, and a released message would be
    claimed again at once. So each message gets one attempt per run; a down receiver waits for the next.
    Leaving the block early (a source failed) waits for the sends under way and records nothing: their
    leases are released at the next run's start and the idempotent receivers absorb the resend.
    """

    def __init__(self, store: Store, sinks: Sequence[ResultSink], report: RunReport) -> None:
        self._store, self._sinks, self._report = store, sinks, report
        self._pools = {
            sink.destination: ThreadPoolExecutor(
                sink.max_in_flight, thread_name_prefix=f"write-back-{sink.destination}"
            )
            for sink in sinks
        }
        self._under_way: dict[Future[str | None], tuple[ResultSink, StoredOutboxMessage]] = {}
        self._failures: list[tuple[StoredOutboxMessage, str]] = []

    def __enter__(self) -> _Deliveries:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for future in self._under_way:
            future.cancel()
        for pool in self._pools.values():
            pool.shutdown(wait=True)

    def pump(self) -> None:
        """Record the deliveries that have finished and start pending ones, without waiting."""
        self._record([future for future in self._under_way if future.done()])
        for sink in self._sinks:
            self._start(sink)

    def finish(self) -> None:
        """Deliver every pending message once, then record the failures."""
        self.pump()
        while self._under_way:
            finished, _ = wait(self._under_way, return_when=FIRST_COMPLETED)
            self._record(list(finished))
            for sink in self._sinks:
                self._start(sink)
        for message, error in self._failures:
            _record_failure(self._store, message, error, self._report)
        self._failures.clear()

    def _start(self, sink: ResultSink) -> None:
        under_way = sum(1 for owner, _ in self._under_way.values() if owner is sink)
        if under_way > sink.max_in_flight:
            return  # the workers still have a queue: claim again in one go when it has run down
        room = 2 * sink.max_in_flight - under_way
        pool = self._pools[sink.destination]
        for message in self._store.claim_outbox(destination=sink.destination, limit=room):
            self._under_way[pool.submit(_deliver, sink, message)] = (sink, message)

    def _record(self, finished: list[Future[str | None]]) -> None:
        sent = []
        for future in finished:
            _, message = self._under_way.pop(future)
            error = future.result()  # anything but an IntegrationError is a bug: let it end the run
            if error is None:
                sent.append(message)
            else:
                self._failures.append((message, error))
        if sent:
            with self._store.transaction() as unit:
                for message in sent:
                    unit.mark_outbox_sent(message.id)
            self._report.counts["written_back"] += len(sent)


def _deliver(sink: ResultSink, message: StoredOutboxMessage) -> str | None:
    """Send one message; the error text if it failed (the per-message boundary)."""
    try:
        sink.send(message.message.payload)
    except IntegrationError as exc:
        return str(exc)
    return None


def _record_failure(store: Store, message: StoredOutboxMessage, error: str, report: RunReport) -> None:
    stored = store.mark_outbox_failed(message.id, error)
    key = message.message.idempotency_key
    report.counts["writeback_failed"] += 1
    report.problems.append(f"write-back {key}: {error}")
    log.warning("write-back %s failed (attempt %d, now %s): %s", key, stored.attempts, stored.status.value, error)
