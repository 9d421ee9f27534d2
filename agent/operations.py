"""What operators ask the agent: status, quarantine, shadow-versus-active, one study's printout.

Read-mostly views over the store; the one mutating command (``quarantine retry``)
requeues an item for the next run and marks the quarantine row retried, so the audit of
what happened stays in the table.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import AgentError
from agent.sources import PulledEcg, RejectedItem, parse_study_ref, study_ref
from agent.sources.fhir import FhirEcgSource, parse_observation_ref
from integrations.ecg import EcgRecord
from integrations.ecg_plot import A4_LANDSCAPE, Page, PrintoutFinding, plot_12lead
from integrations.store import (
    BackfillProgress,
    InboxStatus,
    ModelState,
    ModelVersion,
    OutboxStatus,
    QuarantineState,
    Run,
    RunStatus,
    Store,
    StoredQuarantineEntry,
    StoredStudy,
    StudyStatus,
    TargetKind,
)

#: A shadow whose positive calls agree with the active model this often, label by label, looks safe to promote.
SAFE_AGREEMENT = 0.90
#: ... and whose positive rate moves by no more than this, label by label.
SAFE_POSITIVE_RATE_SHIFT = 0.05


@dataclass(frozen=True, slots=True)
class Status:
    runs: list[Run]
    active: ModelVersion | None
    shadows: list[ModelVersion]
    outbox_pending: int
    #: Write-backs that used up their attempts: parked until an operator requeues them (``outbox requeue``).
    outbox_parked: int
    inbox_waiting: int
    quarantine_open: dict[str, int]
    #: Archive backfills (``ecg-agent backfill``): partitions done / failed / pending and the ECGs of the done ones.
    backfills: list[BackfillProgress] = field(default_factory=list)

    def active_refusal(self) -> str | None:
        """Why the last finished run refused the active version (tampered, unreadable), if it did."""
        if self.active is None:
            return None
        finished = next((run for run in self.runs if run.status != RunStatus.RUNNING), None)
        if finished is None:
            return None
        marker = f"version {self.active.version}:"
        refusal = next((problem for problem in finished.problems if problem.startswith(marker)), None)
        return None if refusal is None else f"refused by run {finished.id}: {refusal.removeprefix(marker).strip()}"


def status(store: Store, *, n_runs: int = 5) -> Status:
    return Status(
        runs=store.list_runs(limit=n_runs),
        active=store.active_model_version(),
        shadows=store.shadow_model_versions(),
        outbox_pending=store.count_outbox(OutboxStatus.PENDING),
        outbox_parked=store.count_outbox(OutboxStatus.FAILED),
        inbox_waiting=store.count_inbox(InboxStatus.RECEIVED),
        quarantine_open=store.count_quarantine(state=QuarantineState.OPEN),
        backfills=store.backfill_progress(),
    )


# --- quarantine ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryResult:
    quarantine_id: int
    requeued: bool
    message: str


def retry_quarantined(store: Store, quarantine_id: int, *, fhir: FhirEcgSource | None = None) -> RetryResult:
    """Requeue a quarantined item for the next run, where that is possible; say what to do where it is not.

    ``fhir``: the configured FHIR source, which reads a quarantined Observation again by id.
    """
    entry = store.get_quarantine(quarantine_id)
    kind, raw_ref = entry.entry.kind, entry.entry.raw_ref
    if kind == "ecg":
        return _retry_study(store, entry)
    if kind == "fhir_observation" and fhir is not None:
        return _retry_observation(store, entry, fhir)
    if kind == "hl7_message" and raw_ref.startswith("inbox:"):
        store.set_inbox_status(int(raw_ref.removeprefix("inbox:")), InboxStatus.RECEIVED)
        store.mark_quarantine_retried(quarantine_id)
        return RetryResult(quarantine_id, True, f"inbox message {raw_ref} will be decoded again by the next run")
    advice = {
        "hl7_message": "the message was refused at receipt and its bytes were not kept (PHI): ask the sender to "
        "resend it with the same MSH-10",
        "fhir_observation": "sources.fhir is not configured here to read it again; correct the Observation on the "
        "FHIR server (a new version is pulled automatically)",
        "wfdb_record": "replace or fix the record's files; the folder feed reads a changed record again",
    }.get(kind, f"no automatic retry for kind {kind!r}")
    return RetryResult(quarantine_id, False, advice)


def _retry_study(store: Store, entry: StoredQuarantineEntry) -> RetryResult:
    """An ECG that failed validation or scoring: back to ``new``; its source hands it out again."""
    source, source_id, version = parse_study_ref(entry.entry.raw_ref)
    study = store.get_study(source, source_id, version)
    if study is None:
        raise AgentError(f"quarantine entry {entry.id} names study {entry.entry.raw_ref}, which is not in the store")
    store.set_study_status(study.id, StudyStatus.NEW)
    if source == "hl7":
        application, facility, control_id = source_id.split("|", 2)
        inbox = store.get_inbox_message(application, facility, control_id)
        if inbox is not None:
            store.set_inbox_status(inbox.id, InboxStatus.RECEIVED)
    store.mark_quarantine_retried(entry.id)
    return RetryResult(entry.id, True, f"study {entry.entry.raw_ref} will be scored again by the next run")


def _retry_observation(store: Store, entry: StoredQuarantineEntry, fhir: FhirEcgSource) -> RetryResult:
    """A FHIR Observation that could not be decoded: read its current version; if it decodes now, queue it."""
    observation_id = parse_observation_ref(entry.entry.raw_ref)
    item = fhir.reread(observation_id)
    if isinstance(item, RejectedItem):
        return RetryResult(
            entry.id,
            False,
            f"Observation/{observation_id} still cannot be read as an ECG ({item.entry.reason}); correct it on the "
            "FHIR server: a new version is pulled automatically",
        )
    assert isinstance(item, PulledEcg)
    study = store.upsert_study(item.study)
    store.mark_quarantine_retried(entry.id)
    ref = study_ref(study.study)
    if study.status == StudyStatus.SCORED:
        return RetryResult(entry.id, True, f"{ref} reads as an ECG now and is already scored")
    store.set_study_status(study.id, StudyStatus.NEW)
    return RetryResult(entry.id, True, f"{ref} reads as an ECG now; the next run scores it")


# --- shadow versus active --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabelComparison:
    kind: str
    code: str
    n: int
    active_positive_rate: float
    shadow_positive_rate: float
    agreement: float
    mean_abs_probability_diff: float

    @property
    def looks_safe(self) -> bool:
        shift = abs(self.shadow_positive_rate - self.active_positive_rate)
        return self.agreement >= SAFE_AGREEMENT and shift <= SAFE_POSITIVE_RATE_SHIFT


@dataclass(frozen=True, slots=True)
class ShadowReport:
    active_version: str
    shadow_version: str
    n_studies: int
    labels: list[LabelComparison]

    @property
    def looks_safe(self) -> bool:
        return self.n_studies > 0 and all(label.looks_safe for label in self.labels)

    def verdict(self) -> str:
        if self.n_studies == 0:
            return "no study was scored by both versions yet: let the shadow run first"
        unsafe = [label.code for label in self.labels if not label.looks_safe]
        if not unsafe:
            return (
                f"promote looks safe: on {self.n_studies} studies every label agrees ≥ {SAFE_AGREEMENT:.0%} "
                f"and moves its positive rate ≤ {SAFE_POSITIVE_RATE_SHIFT:.0%}"
            )
        return f"review before promoting: {len(unsafe)} labels disagree ({', '.join(unsafe[:10])})"


def shadow_report(store: Store, shadow_version: str | None = None) -> ShadowReport:
    """Per label, over the studies both scored: positive rates, agreement and mean |Δ probability|."""
    active = store.active_model_version()
    if active is None:
        raise AgentError("no model is active, so there is nothing to compare a shadow with")
    shadow = shadow_version or _only_shadow(store)
    by_label: dict[tuple[str, str], list[tuple[bool, bool, float]]] = defaultdict(list)
    studies = set()
    for mine, theirs in store.prediction_pairs(active.version, shadow):
        by_label[(mine.target_kind.value, mine.code)].append(
            (mine.is_positive, theirs.is_positive, abs(mine.probability - theirs.probability))
        )
        studies.add(mine.study_id)
    labels = [_compare(kind, code, rows) for (kind, code), rows in sorted(by_label.items())]
    return ShadowReport(active.version, shadow, len(studies), labels)


def _only_shadow(store: Store) -> str:
    shadows = store.shadow_model_versions()
    if len(shadows) != 1:
        names = ", ".join(s.version for s in shadows) or "none"
        raise AgentError(f"name the shadow version to compare (shadow versions: {names})")
    return shadows[0].version


def _compare(kind: str, code: str, rows: list[tuple[bool, bool, float]]) -> LabelComparison:
    n = len(rows)
    return LabelComparison(
        kind=kind,
        code=code,
        n=n,
        active_positive_rate=sum(a for a, _, _ in rows) / n,
        shadow_positive_rate=sum(s for _, s, _ in rows) / n,
        agreement=sum(a == s for a, s, _ in rows) / n,
        mean_abs_probability_diff=sum(d for _, _, d in rows) / n,
    )


# --- one study's printout ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabelRelease:
    """What the chart gets from one label: whether its positives are written back, and how far to trust one."""

    charted: bool
    quality: str | None  # e.g. "PPV 62 %, sensitivity 71 %"


def label_release(label: Mapping[str, Any], model: ModelVersion) -> LabelRelease:
    """Release of one manifest label (a ``diagnoses`` or ``lab_targets`` entry) for results of ``model``.

    A shadow version's results are stored and never written back. Otherwise the label's ``release``
    entry decides when the manifest has one (``charted``, and optional ``ppv`` / ``sensitivity`` on
    validation); a manifest without it predates per-label release, when every positive was charted.
    """
    release = label.get("release") or {}
    written_back = model.state != ModelState.SHADOW
    measured = [(name, release.get(key)) for key, name in (("ppv", "PPV"), ("sensitivity", "sensitivity"))]
    quality = ", ".join(f"{name} {100 * value:.0f} %" for name, value in measured if value is not None)
    return LabelRelease(charted=written_back and bool(release.get("charted", True)), quality=quality or None)


def study_findings(store: Store, study_id: int, model: ModelVersion) -> list[PrintoutFinding]:
    """The study's positive findings from ``model`` as a reader sees them: diagnoses then labs, most probable first."""
    predictions = store.get_predictions(study_id, model.version)
    if not predictions:
        raise AgentError(f"study {study_id} has no predictions from model {model.version}")
    labels = {
        TargetKind.DIAGNOSIS: {label["code"]: label for label in model.manifest.get("diagnoses", [])},
        TargetKind.LAB: {target["name"]: target for target in model.manifest.get("lab_targets", [])},
    }
    lab_probability = {p.code: p.probability for p in predictions if p.target_kind == TargetKind.LAB}
    explained_by = defaultdict(list)
    for explanation in store.get_explanations(study_id, model.version):
        lab_name = labels[TargetKind.LAB].get(explanation.lab_code, {}).get("display") or explanation.lab_code
        probability = lab_probability.get(explanation.lab_code)
        explained_by[explanation.diagnosis_code].append(
            lab_name if probability is None else f"{lab_name} (p {probability:.2f})"
        )
    positives = sorted(
        (p for p in predictions if p.is_positive), key=lambda p: (p.target_kind != TargetKind.DIAGNOSIS, -p.probability)
    )
    findings = []
    for p in positives:
        label = labels[p.target_kind].get(p.code, {})
        name = label.get("display") or p.code
        release = label_release(label, model)
        # a diagnosis is charted under its ICD-10 code, worth printing; a lab target's key means nothing to a reader
        code = p.code if p.target_kind == TargetKind.DIAGNOSIS and name != p.code else None
        findings.append(
            PrintoutFinding(name, code, p.probability, release.charted, release.quality, tuple(explained_by[p.code]),
                            predicted_lab=p.target_kind == TargetKind.LAB)
        )  # fmt: skip
    return findings


def study_report(
    store: Store,
    study: StoredStudy,
    record: EcgRecord,
    model_version: str,
    path: Path,
    *,
    signal_notes: Sequence[str] = (),
    page: Page = A4_LANDSCAPE,
) -> Path:
    """The 12-lead printout of ``record`` with the findings of ``model_version``, as PNG or PDF by ``path``'s suffix.

    ``signal_notes`` say what was done to the signal before scoring (an imputed lead, a filter).
    """
    model = store.get_model_version(model_version)
    if model is None:
        raise AgentError(f"model version {model_version} is not registered")
    findings = study_findings(store, study.id, model)
    return plot_12lead(record, path, title=_printout_title(study, model), findings=findings,
                       signal_notes=signal_notes, page=page)  # fmt: skip


def _printout_title(study: StoredStudy, model: ModelVersion) -> str:
    source = study.study
    patient = f"patient {source.patient_ref}, " if source.patient_ref else ""
    acquired = f", acquired {source.acquired_at:%Y-%m-%d %H:%M %Z}".rstrip() if source.acquired_at else ""
    shadow = " (shadow)" if model.state == ModelState.SHADOW else ""
    return f"Study {study.id}: {patient}{source.source} {source.source_id} v{source.source_version}{acquired}, " \
           f"model {model.version}{shadow}"  # fmt: skip
