"""One run of the agent: collect new ECGs, validate, score, store, write back, advance.

The steps, in order (the README's diagram)::

    sources ─► store the study ─► validate (plausibility) ─► preprocess + score (active, shadows)
               │                   │
               └─► quarantine ◄────┘  one row per (item, reason); a re-read only counts it
    ─► one transaction per batch: a row of predictions (with explanations) per study and model, outbox rows,
       study status, each a single statement for the whole batch
    ─► source.done(batch)  (watermark / inbox status advance only after that commit)
    ─► the batch's outbox rows go to the sinks while the next batch is collected (agent.delivery)
    ─► once every source is read (or the deadline passed): the rest of the outbox, then the run row

**Per-ECG isolation.** Every failure that belongs to one ECG — it cannot be decoded, its time
cannot be placed, its signal is implausible, the model fails on it, the store refuses its rows, its
write-back is refused — quarantines that ECG (or parks its write-back) with the reason, and the
run goes on. Only infrastructure failures stop something: a source that cannot be reached (or
whose paging loops) stops that source; a receiver that cannot be reached stops its deliveries;
a store that cannot be reached stops the run. None of these moves a watermark past what was
committed.

Crash safety comes from the order: nothing is acknowledged to a source before its results are
committed, and every write is idempotent (unique predictions, unique outbox keys, conditional
creates at the receiver), so rerunning after a crash at any point loses nothing and duplicates
nothing. Shadow models are scored and stored but never reach the outbox.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Protocol

from tqdm import tqdm

from agent.delivery import Deliveries
from agent.loader import LoadedModel, RunModels
from agent.scoring import ScoredEcg, score_records, validation_rules
from agent.settings import ScoringSettings
from agent.sinks import ResultSink
from agent.sinks.payload import ModelRef, PayloadExplanation, PayloadFinding, ResultPayload
from agent.sources import EcgSource, Pulled, PulledEcg, RejectedItem, study_ref
from agent.validation import SignalAssessment, validate_record
from integrations.ecg import EcgRecord
from integrations.errors import IntegrationError, InvalidEcgError
from integrations.hl7.patient import PatientIdentifier
from integrations.store import (
    EcgStudy,
    LabLink,
    OutboxMessage,
    PredictionSet,
    QuarantineEntry,
    RunStatus,
    Store,
    StoredStudy,
    StoreError,
    StoreUnavailableError,
    StudyStatus,
    TargetScores,
)
from model_training.artifact import ArtifactError

log = logging.getLogger(__name__)

#: The quarantine kind of an ECG that decoded but could not be stored, validated or scored.
ECG_QUARANTINE_KIND = "ecg"
#: Failures of one record inside the model or the preprocessing (torch raises RuntimeError).
SCORING_ERRORS: tuple[type[Exception], ...] = (IntegrationError, ArtifactError, ValueError, RuntimeError)


class Tally(Protocol):
    """Where batch processing counts its outcomes: a run's report, or a backfill partition's."""

    counts: Counter[str]
    problems: list[str]


class OutboxRoute(Protocol):
    """What batch processing needs of a sink: which studies' results it takes, and its outbox destination.

    A :class:`~agent.sinks.ResultSink` is one; a backfill worker, which enqueues but never sends, uses
    :class:`CarriedRoute` built from the settings alone.
    """

    destination: str

    def accepts(self, study: StoredStudy) -> bool: ...


@dataclass(frozen=True, slots=True)
class CarriedRoute:
    """An outbox destination and the sources whose results it carries (see :mod:`agent.routing`)."""

    destination: str
    carries: frozenset[str]

    def accepts(self, study: StoredStudy) -> bool:
        return study.study.source in self.carries


@dataclass(slots=True)
class RunReport:
    """What one run did: counts per outcome, and what an operator should know.

    ``scored``, ``quarantined`` and ``failed`` count NEW ECGs only: an item the run has already
    quarantined or scored, read again inside a source's re-read window, is counted as
    ``already_quarantined`` / ``already_scored`` and never makes a night look worse than it was.
    """

    run_id: int
    model_version: str | None
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    #: Sources that stopped with an infrastructure failure (server unreachable, paging loop), by name.
    stopped_sources: dict[str, str] = field(default_factory=dict)
    #: Sinks whose receiver could not be reached this run, by destination.
    unreachable_sinks: dict[str, str] = field(default_factory=dict)
    deadline_reached: bool = False

    @property
    def failure_rate(self) -> float:
        attempted = self.counts["scored"] + self.counts["quarantined"] + self.counts["failed"]
        return (self.counts["quarantined"] + self.counts["failed"]) / attempted if attempted else 0.0

    @property
    def infrastructure_failed(self) -> bool:
        return bool(self.stopped_sources or self.unreachable_sinks)

    @property
    def needs_attention(self) -> bool:
        """Finished, but not cleanly: a refused model, the deadline, or write-backs that failed."""
        return bool(self.problems) or self.deadline_reached or self.counts["writeback_failed"] > 0


@dataclass(frozen=True, slots=True)
class RunLimits:
    """When the run stops collecting: ``deadline`` on ``clock`` (monotonic seconds), None for never."""

    deadline: float | None = None
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def after(cls, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> RunLimits:
        return cls(None if seconds is None else clock() + seconds, clock)

    def passed(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline


def run_once(
    store: Store,
    models: RunModels,
    sources: Sequence[EcgSource],
    sinks: Sequence[ResultSink],
    scoring: ScoringSettings,
    *,
    progress: bool = True,
    limits: RunLimits | None = None,
) -> RunReport:
    """One batch run; returns its report (also stored as the run row)."""
    limits = limits or RunLimits.after(scoring.deadline_s)
    active = models.active
    versions = [m.version for m in ([active] if active else []) + list(models.shadows)]
    run = store.start_run(versions)
    report = RunReport(run.id, active.version if active else None, problems=list(models.refusals))
    try:
        if active is None:
            raise _RunAborted("no verified active model: " + "; ".join(models.refusals))
        with Deliveries(store, sinks, deadline=limits.deadline, clock=limits.clock) as deliveries:
            for source in sources:
                _collect(store, source, active, models.shadows, sinks, scoring, report, progress, deliveries, limits)
            deliveries.finish()
            _take_tally(report, deliveries)
    except (_RunAborted, StoreError) as exc:
        report.problems.append(str(exc))
        store.finish_run(run.id, RunStatus.FAILED, report.counts, error=str(exc), problems=report.problems)
        log.error("run %s failed: %s", run.id, exc)
        return report
    store.finish_run(run.id, _final_status(report), report.counts, error=_error(report), problems=report.problems)
    return report


class _RunAborted(Exception):
    """The run cannot go on at all (as opposed to one bad record, which is quarantined)."""


def _final_status(report: RunReport) -> RunStatus:
    if report.infrastructure_failed:
        return RunStatus.FAILED
    return RunStatus.DEGRADED if report.needs_attention else RunStatus.SUCCEEDED


def _error(report: RunReport) -> str | None:
    stopped = [f"source {name} stopped: {why}" for name, why in report.stopped_sources.items()]
    unreachable = [f"sink {name} unreachable: {why}" for name, why in report.unreachable_sinks.items()]
    return "; ".join(stopped + unreachable) or None


def _take_tally(report: RunReport, deliveries: Deliveries) -> None:
    tally = deliveries.tally
    report.counts["written_back"] += tally.sent
    report.counts["writeback_failed"] += tally.failed
    report.counts["writeback_parked"] += tally.parked
    report.problems += tally.problems
    report.unreachable_sinks.update(tally.unreachable)


def _collect(
    store: Store,
    source: EcgSource,
    active: LoadedModel,
    shadows: Sequence[LoadedModel],
    sinks: Sequence[ResultSink],
    scoring: ScoringSettings,
    report: RunReport,
    progress: bool,
    deliveries: Deliveries,
    limits: RunLimits,
) -> None:
    """Read one source to its end (or the deadline); an infrastructure failure of the source stops only it."""
    pulled = _SourceItems(source, limits)
    items = tqdm(pulled, desc=f"score {source.name}", unit="ecg", disable=not progress)
    try:
        for batch in batches(items, scoring.batch_size):
            process_batch(store, batch, active, shadows, sinks, scoring, report)
            source.done(batch)
            deliveries.pump()
    finally:
        items.close()
    if pulled.failure is not None:
        report.stopped_sources[source.name] = pulled.failure
        log.error("source %s stopped: %s", source.name, pulled.failure)
    if pulled.stopped_by_deadline and not report.deadline_reached:
        report.deadline_reached = True
        report.problems.append(f"the run deadline passed while reading {source.name}; the rest waits for the next run")


class _SourceItems:
    """A source's items until it ends, fails or the deadline passes; what stopped it is kept, not raised.

    A store failure inside the source (the HL7 inbox and the WFDB feed read the store) is not the
    source's: it is raised, and ends the run.
    """

    def __init__(self, source: EcgSource, limits: RunLimits) -> None:
        self._source, self._limits = source, limits
        self.failure: str | None = None
        self.stopped_by_deadline = False

    def __iter__(self) -> Iterator[Pulled]:
        items = iter(self._source.pull())
        try:
            while not self._deadline_passed():
                try:
                    item = next(items)
                except StopIteration:
                    return
                except StoreError:
                    raise
                except IntegrationError as exc:
                    self.failure = str(exc)
                    return
                yield item
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def _deadline_passed(self) -> bool:
        self.stopped_by_deadline = self._limits.passed()
        return self.stopped_by_deadline


def batches(items: Iterable[Pulled], size: int) -> Iterator[list[Pulled]]:
    """``items`` in lists of ``size`` (the last one shorter), read lazily."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


@dataclass(frozen=True, slots=True)
class _Admitted:
    """A study fit to be scored: the record to score (imputed leads filled in) and what was done to it."""

    study: StoredStudy
    record: EcgRecord
    assessment: SignalAssessment
    patient_identifier: PatientIdentifier | None = None


def process_batch(
    store: Store,
    batch: Sequence[Pulled],
    active: LoadedModel,
    shadows: Sequence[LoadedModel],
    routes: Sequence[OutboxRoute],
    scoring: ScoringSettings,
    report: Tally,
) -> None:
    """Store, validate, score and commit one batch of pulled items; every outcome is counted in ``report``.

    Idempotent: an item already scored is counted ``already_scored``, a known bad one only counts its
    quarantine row, and the results' rows and outbox keys are unique. The caller acknowledges the
    batch to its source (or records its backfill partition) only after this returns.
    """
    report.counts["pulled"] += len(batch)
    for item in batch:
        if isinstance(item, RejectedItem):
            _quarantine_rejected(store, item, report)
    stored = _store_studies(store, [item for item in batch if isinstance(item, PulledEcg)], report)
    admitted = _admissible(store, stored, active, report)
    if not admitted:
        return
    scored = _score_each(store, admitted, active, scoring, report)
    records = {entry.study.id: entry.record for entry in admitted}
    shadow_scores = [_score_shadow(scored, records, model, scoring, report) for model in shadows]
    by_id = {entry.study.id: entry for entry in admitted}
    _commit_results(store, scored, shadow_scores, by_id, routes, active, report)


def _store_studies(store: Store, items: list[PulledEcg], report: Tally) -> list[tuple[PulledEcg, StoredStudy]]:
    """The study row of each item, in one statement; a row the store refuses quarantines its item alone."""
    try:
        return list(zip(items, store.upsert_studies([item.study for item in items]), strict=True))
    except StoreUnavailableError:
        raise
    except StoreError:
        log.warning("storing a batch of %d studies failed; storing them one by one to isolate the bad one", len(items))
    stored = []
    for item in items:
        try:
            stored.append((item, store.upsert_study(item.study)))
        except StoreUnavailableError:
            raise
        except StoreError as exc:  # the per-record boundary: a constraint on this study's row
            entry = QuarantineEntry(ECG_QUARANTINE_KIND, item.record.source, f"store-refused: {exc}",
                                    study_ref(item.study))  # fmt: skip
            _count_quarantine(store, entry, report, outcome="quarantined")
    return stored


def _admissible(
    store: Store, stored: list[tuple[PulledEcg, StoredStudy]], active: LoadedModel, report: Tally
) -> list[_Admitted]:
    """Studies that are new and pass validation; the rest are counted, and the invalid ones quarantined."""
    rules = validation_rules(active.artifact.manifest)
    admitted: list[_Admitted] = []
    in_batch: set[int] = set()
    for item, study in stored:
        if study.status == StudyStatus.SCORED:
            report.counts["already_scored"] += 1
            continue
        if study.status == StudyStatus.FAILED:
            # Quarantined by an earlier run and read again (a source's re-read window): counted, not refused again.
            _count_quarantine(store, _study_entry(study, study.error or "failed"), report, outcome="quarantined")
            continue
        if study.id in in_batch:  # requeued by id and pulled again as new: one study, scored once
            report.counts["duplicate"] += 1
            continue
        in_batch.add(study.id)
        try:
            assessment = validate_record(item.record, rules)
        except IntegrationError as exc:
            _refuse(store, study, exc.reason if isinstance(exc, InvalidEcgError) else str(exc), report)
            continue
        if assessment.altered:
            report.counts["signal_repaired"] += 1
            log.info("study %s: %s", study_ref(study.study), assessment.summary())
        admitted.append(_Admitted(study, assessment.record, assessment, item.patient_identifier))
    return admitted


def _score_each(
    store: Store,
    admitted: list[_Admitted],
    active: LoadedModel,
    scoring: ScoringSettings,
    report: Tally,
) -> list[tuple[StoredStudy, ScoredEcg]]:
    records = [entry.record for entry in admitted]
    try:
        results = score_records(
            records, active.artifact, batch_size=scoring.batch_size, explanation_top_k=scoring.explanation_top_k
        )
        return list(zip((entry.study for entry in admitted), results, strict=True))
    except SCORING_ERRORS:
        log.warning("batch scoring failed; scoring its %d records one by one to isolate the bad one", len(records))
    scored = []
    for entry in admitted:
        try:
            result = score_records(
                [entry.record], active.artifact, batch_size=1, explanation_top_k=scoring.explanation_top_k
            )
        except SCORING_ERRORS as exc:  # the per-record boundary
            _refuse(store, entry.study, f"scoring-failed: {exc}", report, outcome="failed")
            continue
        scored.append((entry.study, result[0]))
    return scored


def _score_shadow(
    scored: list[tuple[StoredStudy, ScoredEcg]],
    records: dict[int, EcgRecord],
    model: LoadedModel,
    scoring: ScoringSettings,
    report: Tally,
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
    except SCORING_ERRORS as exc:
        report.problems.append(f"shadow {model.version}: {exc}")
        return {}
    return {study.id: result for study, result in zip(studies, results, strict=True)}


@dataclass(frozen=True, slots=True)
class _StudyResults:
    """What one scored study writes: its prediction sets (active and shadows), outbox rows and signal notes."""

    study_id: int
    prediction_sets: list[PredictionSet]
    outbox: list[OutboxMessage]
    signal_notes: tuple[str, ...]


def _commit_results(
    store: Store,
    scored: list[tuple[StoredStudy, ScoredEcg]],
    shadow_scores: list[dict[int, ScoredEcg]],
    admitted: dict[int, _Admitted],
    routes: Sequence[OutboxRoute],
    active: LoadedModel,
    report: Tally,
) -> None:
    """The batch's results, outbox rows and statuses in one commit; if the store refuses it, study by study."""
    results = [
        _study_results(admitted[study.id], result, [shadow.get(study.id) for shadow in shadow_scores], routes, active)
        for study, result in scored
    ]
    try:
        with store.transaction() as unit:
            _write_results(unit, results)
        report.counts["scored"] += len(scored)
        report.counts["shadow_scored"] += sum(len(shadow) for shadow in shadow_scores)
        return
    except StoreUnavailableError:
        raise
    except StoreError:
        log.warning("storing the results of %d studies failed; storing them one by one", len(scored))
    for (study, _), written in zip(scored, results, strict=True):
        try:
            with store.transaction() as unit:
                _write_results(unit, [written])
        except StoreUnavailableError:
            raise
        except StoreError as exc:  # the per-record boundary: a constraint on this study's result rows
            _refuse(store, study, f"store-refused: {exc}", report, outcome="failed")
            continue
        report.counts["scored"] += 1
        report.counts["shadow_scored"] += len(written.prediction_sets) - 1


def _study_results(
    entry: _Admitted,
    result: ScoredEcg,
    shadows: list[ScoredEcg | None],
    routes: Sequence[OutboxRoute],
    active: LoadedModel,
) -> _StudyResults:
    study = entry.study
    results = [result, *(shadow for shadow in shadows if shadow is not None)]
    payload = _payload(entry, result, active)
    return _StudyResults(
        study_id=study.id,
        prediction_sets=[_prediction_set(study.id, r) for r in results],
        outbox=[_outbox_message(route.destination, payload) for route in routes if route.accepts(study)],
        signal_notes=entry.assessment.notes,
    )


def _write_results(unit: Store, results: Sequence[_StudyResults]) -> None:
    """Every row of ``results`` in a few statements: prediction sets, outbox rows, then the studies' status."""
    unit.put_prediction_sets([s for written in results for s in written.prediction_sets])
    for written in results:
        if written.signal_notes:
            unit.set_signal_notes(written.study_id, written.signal_notes)
    unit.enqueue_outbox_many([message for written in results for message in written.outbox])
    unit.set_studies_status([written.study_id for written in results], StudyStatus.SCORED)


def _refuse(store: Store, study: StoredStudy, reason: str, report: Tally, *, outcome: str = "quarantined") -> None:
    """Quarantine a stored study and mark it failed, in one commit."""
    entry = _study_entry(study, reason)
    with store.transaction() as unit:
        sighting = unit.quarantine(entry)
        unit.set_study_status(study.id, StudyStatus.FAILED, error=reason)
    report.counts[outcome if sighting.first_time else "already_quarantined"] += 1
    log.warning("quarantined %s: %s", entry.raw_ref, reason)


def _study_entry(study: StoredStudy, reason: str) -> QuarantineEntry:
    return QuarantineEntry(kind=ECG_QUARANTINE_KIND, origin=study.study.source, reason=reason,
                           raw_ref=study_ref(study.study))  # fmt: skip


def _quarantine_rejected(store: Store, item: RejectedItem, report: Tally) -> None:
    if item.quarantine_id is not None:  # the source quarantined it itself (the WFDB feed), once
        report.counts["quarantined"] += 1
        log.warning("quarantined %s: %s", item.entry.raw_ref, item.entry.reason)
        return
    _count_quarantine(store, item.entry, report, outcome="quarantined")


def _count_quarantine(store: Store, entry: QuarantineEntry, report: Tally, *, outcome: str) -> None:
    """Quarantine ``entry``; counted under ``outcome`` the first time, as ``already_quarantined`` after."""
    sighting = store.quarantine(entry)
    if sighting.first_time:
        report.counts[outcome] += 1
        log.warning("quarantined %s from %s: %s", entry.raw_ref, entry.origin, entry.reason)
    else:
        report.counts["already_quarantined"] += 1


def _prediction_set(study_id: int, result: ScoredEcg) -> PredictionSet:
    return PredictionSet(
        study_id=study_id,
        model_version=result.model_version,
        diagnoses=_target_scores(result, "diagnosis"),
        labs=_target_scores(result, "lab"),
        explanations=tuple(LabLink(e.diagnosis_code, e.lab_target, e.lab_probability) for e in result.explanations),
    )


def _target_scores(result: ScoredEcg, kind: str) -> TargetScores:
    findings = [f for f in result.findings if f.kind == kind]
    return TargetScores(
        codes=tuple(f.code for f in findings),
        probabilities=tuple(f.probability for f in findings),
        positive=tuple(f.positive for f in findings),
    )


def _payload(entry: _Admitted, result: ScoredEcg, active: LoadedModel) -> ResultPayload:
    study = entry.study
    key: EcgStudy = study.study
    return ResultPayload(
        study_id=study.id,
        source=key.source,
        source_id=key.source_id,
        source_version=key.source_version,
        patient_ref=key.patient_ref,
        acquired_at=key.acquired_at,
        model=ModelRef(active.artifact.manifest.model_name, active.version, active.sha256),
        findings=tuple(PayloadFinding(f.kind, f.code, f.probability, True) for f in result.findings if f.positive),
        explanations=tuple(
            PayloadExplanation(e.diagnosis_code, e.lab_target, e.lab_probability) for e in result.explanations
        ),
        signal_notes=entry.assessment.notes,
        patient_identifier=entry.patient_identifier,
    )


def _outbox_message(destination: str, payload: ResultPayload) -> OutboxMessage:
    return OutboxMessage(destination=destination, idempotency_key=payload.outbox_key(destination),
                         payload=payload.to_json())  # fmt: skip
