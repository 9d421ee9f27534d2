"""A backfill on a real Dask LocalCluster (2 worker processes): every ECG of an archive scored once, through the
nightly run's store and outbox; reruns, killed workers, a tampered artifact and an overlapping nightly run
lose nothing and duplicate nothing."""

from __future__ import annotations

import csv
import json
import os
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import cloudpickle
import dask
import psutil
import pytest
import sqlalchemy as sa
from distributed import Client

from agent.backfill import worker
from agent.backfill.archive import ArchiveRoots
from agent.backfill.client import BackfillPlan, dask_client, run_backfill
from agent.batch import RunReport
from agent.service import AgentService
from agent.sources.fhir import observation_ref
from integrations.hl7.message import read_header
from integrations.store import BackfillStatus, QuarantineState, Store, StudyStatus
from integrations.store import schema as t
from model_training.artifact import MODEL_FILE

from .conftest import CORPUS, Hospital, corpus_archive, worker_settings, write_wfdb_tree

N_TARGETS = 4  # the tiny artifact: 2 diagnoses + 2 lab targets
pytestmark = pytest.mark.slow  # a cluster of two worker processes, each importing torch
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers run this module's task wrappers


@pytest.fixture(scope="module")
def cluster_client():
    """Two worker processes, one thread each, on loopback; closed at the end of the module."""
    with dask_client(None, workers=2) as client:
        yield client


def test_the_local_cluster_listens_on_loopback_only(cluster_client):
    processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
    listening = [c.laddr for p in processes for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN]
    assert len(cluster_client.scheduler_info()["workers"]) == 2
    assert len(listening) >= 5  # scheduler, its HTTP endpoint, two workers, two nannies
    assert {address.ip for address in listening} == {"127.0.0.1"}


def _backfill(client: Client, hospital: Hospital, roots: ArchiveRoots, **kwargs):
    plan = BackfillPlan("archive", roots, config_file=hospital.config)
    return run_backfill(client, hospital.store, hospital.settings, plan, progress=False, **kwargs)


def _table_counts(store: Store) -> dict[str, int]:
    with store.engine.connect() as connection:
        return {
            table.name: connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in (t.ecg_studies, t.study_predictions, t.outbox, t.quarantine)
        }


def _assert_each_scored_study_once(store: Store) -> None:
    """Every scored study has one prediction set of every target and one outbox row; no key appears twice."""
    with store.engine.connect() as connection:
        per_study = dict(
            connection.execute(
                sa.select(t.study_predictions.c.study_id, sa.func.count()).group_by(t.study_predictions.c.study_id)
            ).all()
        )
        outbox = connection.execute(sa.select(t.outbox.c.payload)).scalars().all()
    scored = store.list_studies(status=StudyStatus.SCORED, limit=10_000)
    assert {study.id: per_study.get(study.id) for study in scored} == {study.id: 1 for study in scored}
    assert all(len(store.get_predictions(study.id)) == N_TARGETS for study in scored)
    assert sorted(payload["study_id"] for payload in outbox) == sorted(study.id for study in scored)


class CorpusCase(NamedTuple):
    case: str
    source: str
    path: str
    outcome: str
    reason: str

    @property
    def file(self) -> Path:
        return CORPUS / self.path


def _load_cases() -> list[CorpusCase]:
    with (CORPUS / "cases.csv").open(newline="", encoding="utf-8") as table:
        return [CorpusCase(*(row[field] for field in CorpusCase._fields)) for row in csv.DictReader(table)]


def _outcome(store: Store, archive, case) -> tuple[str, str]:
    """How the case ended in the store: (scored | scored-imputed | quarantined, the quarantine reason)."""
    if case.source == "fhir":
        observation = json.loads(case.file.read_text(encoding="utf-8"))
        key = ("fhir", observation["id"], observation["meta"]["versionId"])
        refs = [observation_ref(observation["id"], observation["meta"]["versionId"])]
    elif case.source == "hl7":
        path, place = archive.hl7_places[case.case]
        try:
            header = read_header(case.file.read_bytes())
        except ValueError:
            key, refs = None, [f"{path}#{place}"]
        else:
            msh = f"{header.sender.application}|{header.sender.facility}|{header.control_id}"
            key, refs = ("hl7", msh, "1"), [f"msh={msh}"]
    else:
        record_id = f"{case.file.parent.name}/{case.file.name}"
        studies = [s for s in store.list_studies(source="wfdb", limit=10_000) if s.study.source_id == record_id]
        key = ("wfdb", record_id, studies[0].study.source_version) if studies else None
        refs = [str(archive.wfdb / record_id)]
    study = store.get_study(*key) if key else None
    if study is not None and study.status == StudyStatus.SCORED:
        return ("scored-imputed" if study.signal_notes else "scored"), ""
    if study is not None:
        return "quarantined", study.error or ""
    entries = [e for ref in refs for e in store.list_quarantine(raw_ref=ref, state=QuarantineState.OPEN)]
    assert len(entries) == 1, (case.case, refs, entries)
    return "quarantined", entries[0].entry.reason


def test_a_corpus_archive_is_backfilled_each_ecg_ending_as_its_table_says_and_a_rerun_adds_nothing(
    cluster_client, hospital_factory, tmp_path
):
    hospital = hospital_factory()
    cases = _load_cases()
    archive = corpus_archive(tmp_path / "archive", cases)
    roots = ArchiveRoots(wfdb=archive.wfdb, fhir_ndjson=archive.ndjson, hl7=archive.hl7)

    report = _backfill(cluster_client, hospital, roots)

    assert report.failed == {} and report.done == report.listed > 3
    for case in cases:
        outcome, reason = _outcome(hospital.store, archive, case)
        assert outcome == case.outcome, (case.case, reason)
        assert reason.startswith(case.reason), (case.case, reason)
    expected = Counter(case.outcome for case in cases)
    assert report.counts["scored"] == expected["scored"] + expected["scored-imputed"]
    assert report.counts["not_ecg"] == 2  # the lab Observation and the Patient
    fhir_refused = hospital.store.list_quarantine(kind="fhir_observation", limit=1000)
    bad_lines = [e.entry.reason for e in fhir_refused if ".ndjson@" in e.entry.raw_ref]
    assert [reason.split("(")[0] for reason in bad_lines] == ["malformed: not a JSON resource "]
    _assert_each_scored_study_once(hospital.store)
    before = _table_counts(hospital.store)

    rerun = _backfill(cluster_client, hospital, roots)

    assert (rerun.done, rerun.done_before, rerun.failed) == (0, report.listed, {})
    assert _table_counts(hospital.store) == before
    (progress,) = hospital.store.backfill_progress()
    assert progress.count(BackfillStatus.DONE) == progress.total == report.listed
    assert progress.counts["scored"] == report.counts["scored"]


def test_a_tampered_artifact_fails_every_partition_with_the_reason_and_the_next_backfill_retries_them(
    cluster_client, hospital_factory, tmp_path
):
    hospital = hospital_factory()
    roots = ArchiveRoots(wfdb=write_wfdb_tree(tmp_path / "wfdb", 4))
    model_file = Path(hospital.store.active_model_version().path) / MODEL_FILE
    original = model_file.read_bytes()
    model_file.write_bytes(original + b"tampered")

    refused = _backfill(cluster_client, hospital, roots)

    assert refused.done == 0 and len(refused.failed) == refused.listed == 2
    assert all("does not match the registered" in error for error in refused.failed.values())
    assert hospital.store.list_studies() == []
    (progress,) = hospital.store.backfill_progress()
    assert progress.count(BackfillStatus.FAILED) == 2 and "tampered or replaced" in progress.last_error

    model_file.write_bytes(original)
    retried = _backfill(cluster_client, hospital, roots)

    assert (retried.done, retried.failed, retried.counts["scored"]) == (2, {}, 4)
    _assert_each_scored_study_once(hospital.store)


def test_a_backfill_overlapping_a_nightly_run_of_the_same_records_duplicates_nothing(
    cluster_client, hospital_factory, tmp_path
):
    folder = write_wfdb_tree(tmp_path / "wfdb", 8)
    hospital = hospital_factory(wfdb_folder=folder)
    nightly = threading.Thread(target=lambda: AgentService(hospital.settings).run_once(progress=False))

    nightly.start()
    report = _backfill(cluster_client, hospital, ArchiveRoots(wfdb=folder))
    nightly.join()

    assert report.failed == {}
    assert report.counts["scored"] + report.counts["already_scored"] == 8  # each record once, whoever scored it
    studies = hospital.store.list_studies(limit=100)
    assert len(studies) == 8 and {s.status for s in studies} == {StudyStatus.SCORED}
    _assert_each_scored_study_once(hospital.store)
    assert AgentService(hospital.settings).run_once(progress=False).report.counts["scored"] == 0


def test_on_postgresql_workers_knowing_only_the_database_url_backfill_beside_a_nightly_run_duplicating_nothing(
    cluster_client, hospital_factory, postgres_database_url, tmp_path
):
    """Several machines: the workers' settings name the database and what shapes the results, no file of the store's
    and no registry folder; the model comes from its registry row, its file checked against the row's sha256."""
    folder = write_wfdb_tree(tmp_path / "wfdb", 8)
    hospital = hospital_factory(wfdb_folder=folder, database_url=postgres_database_url)
    worker_config = tmp_path / "worker-machine" / "agent.toml"
    worker_config.parent.mkdir()
    worker_config.write_text(f'database_url = "{postgres_database_url}"\n' + worker_settings())
    plan = BackfillPlan("archive", ArchiveRoots(wfdb=folder), config_file=worker_config)
    nightly = threading.Thread(target=_run_nightly, args=(hospital,))

    nightly.start()
    report = run_backfill(cluster_client, hospital.store, hospital.settings, plan, progress=False)
    nightly.join()

    assert report.failed == {} and report.done == report.listed == 3
    assert report.counts["scored"] + report.counts["already_scored"] == 8  # each record once, whoever scored it
    studies = hospital.store.list_studies(limit=100)
    assert len(studies) == 8 and {s.status for s in studies} == {StudyStatus.SCORED}
    _assert_each_scored_study_once(hospital.store)
    assert list(tmp_path.rglob("*.db")) == []  # nothing went to a SQLite file
    assert _run_nightly(hospital).counts["scored"] == 0


def _run_nightly(hospital: Hospital) -> RunReport:
    """One ``run-once`` of the hospital's agent, its connections closed after it."""
    service = AgentService(hospital.settings)
    try:
        report = service.run_once(progress=False).report
    finally:
        service.store.dispose()
    assert report is not None
    return report


REPO_ROOT = Path(__file__).resolve().parents[3]


def _dies_after_its_first_batch_once(task: worker.PartitionTask) -> worker.PartitionResult:
    """The backfill's task, except that the first time (a marker file says) its worker process dies right
    after the partition's first batch is committed: mid-partition, before the partition is recorded done."""
    try:
        Path(os.environ["BACKFILL_TEST_MARKER"]).touch(exist_ok=False)  # atomic: one task of all wins
    except FileExistsError:
        pass
    else:
        commit = worker.process_batch

        def commit_then_die(*args, **kwargs):
            commit(*args, **kwargs)
            os._exit(1)

        worker.process_batch = commit_then_die
    return worker.score_partition(task)


@pytest.fixture
def fragile_cluster_client(tmp_path, monkeypatch):
    """A cluster whose scheduler gives up on a task the first time a worker dies under it (the default retries)."""
    monkeypatch.setenv("BACKFILL_TEST_MARKER", str(tmp_path / "died-once"))
    # Dask may still send this module's task by reference: the workers must be able to import it from the checkout.
    # Spawned workers take the parent's sys.path, where pytest's importlib mode does not put the checkout.
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), dask_client(None, workers=2) as client:
        yield client


def test_a_worker_killed_mid_partition_leaves_it_failed_and_the_rerun_completes_it_without_duplicates(
    fragile_cluster_client, hospital_factory, tmp_path
):
    hospital = hospital_factory()
    roots = ArchiveRoots(wfdb=write_wfdb_tree(tmp_path / "wfdb", 6))

    first = _backfill(fragile_cluster_client, hospital, roots, score=_dies_after_its_first_batch_once)

    # One worker dies mid-partition. The scheduler may have queued the other partition on that same worker too
    # (it then fails with it, never started): either way every partition is done or failed, none half-recorded.
    assert first.failed and all("KilledWorker" in error for error in first.failed.values())
    assert first.done + len(first.failed) == 2 and first.counts["scored"] == 3 * first.done
    scored_before_rerun = len(hospital.store.list_studies(status=StudyStatus.SCORED))
    assert scored_before_rerun == 3 * first.done + 2  # the killed partition's first batch (2 of its 3) was committed

    rerun = _backfill(fragile_cluster_client, hospital, roots, score=_dies_after_its_first_batch_once)

    assert (rerun.done_before, rerun.done, rerun.failed) == (first.done, len(first.failed), {})
    assert (rerun.counts["already_scored"], rerun.counts["scored"]) == (2, 6 - scored_before_rerun)
    assert len(hospital.store.list_studies(status=StudyStatus.SCORED)) == 6
    _assert_each_scored_study_once(hospital.store)
