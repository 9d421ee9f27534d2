"""The backfill's client: list the archive's partitions, send the ones not done to Dask, record how each ended.

Where the work runs:

- by default a ``distributed.LocalCluster`` on this machine: ``workers`` processes of one thread
  each (the model uses its own threads), scheduler, workers and nannies bound to 127.0.0.1 only,
  dashboard (metrics) on a loopback port;
- with ``scheduler`` (``tcp://HOST:PORT``), an existing cluster whose workers run on several
  machines and write to the database directly: PostgreSQL only. A SQLite file has one writer and
  lives on one machine's disk, so SQLite is refused there; on a LocalCluster its writers queue on
  SQLite's write lock (every transaction begins IMMEDIATE, waiting up to the busy timeout), which
  keeps the per-batch commits serial.

Resuming: every listed partition is registered ``pending``; a worker marks it ``done`` after its
commit; a task that fails (its worker killed more often than the scheduler allows, a refused
model, a store error) is recorded ``failed`` with its error by this client. The next backfill
with the same name sends every partition not ``done`` again, so a killed worker or client loses
nothing, and the idempotent batch processing duplicates nothing.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from agent.backfill.archive import ArchiveRoots, Partition, list_partitions
from agent.backfill.worker import PartitionResult, PartitionTask, database_fingerprint, score_partition
from agent.errors import BackfillError
from agent.settings import AgentSettings
from integrations.store import BackfillStatus, Store

if TYPE_CHECKING:  # distributed is the [scale] extra, imported only when a backfill runs
    from distributed import Client

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
ScoreFn = Callable[[PartitionTask], PartitionResult]


@dataclass(slots=True)
class BackfillReport:
    """What one backfill did: partitions listed, skipped as done before, done now, failed (key → error)."""

    name: str
    listed: int = 0
    done_before: int = 0
    done: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        counts = ", ".join(f"{name} {count}" for name, count in sorted(self.counts.items())) or "no ECGs"
        text = (f"backfill {self.name}: {self.listed} partitions, {self.done_before} done before, "
                f"{self.done} done now, {len(self.failed)} failed; {counts}")  # fmt: skip
        return text + ("; run the same backfill again to retry the failed ones" if self.failed else "")


@dataclass(frozen=True, slots=True)
class BackfillPlan:
    """What to backfill and how: the archive, the name a rerun resumes, where each worker finds the settings."""

    name: str
    roots: ArchiveRoots
    config_file: Path | None = None
    secrets_dir: Path | None = None


def backfill(
    settings: AgentSettings, plan: BackfillPlan, *, progress: bool = True, score: ScoreFn = score_partition
) -> BackfillReport:
    """Backfill ``plan`` on the cluster ``settings.backfill`` names (a LocalCluster unless a scheduler is given)."""
    url = settings.database_url.get_secret_value()
    scheduler = settings.backfill.scheduler
    if scheduler is not None and url.startswith("sqlite"):
        raise BackfillError("a SQLite database has one writer on one machine: backfill on a local cluster "
                            "(--workers N, no --scheduler) or move the store to PostgreSQL")  # fmt: skip
    store = Store.from_url(url)
    try:
        store.upgrade()
        with dask_client(scheduler, workers=settings.backfill.workers) as client:
            return run_backfill(client, store, settings, plan, progress=progress, score=score)
    finally:
        store.dispose()


@contextmanager
def dask_client(scheduler: str | None, *, workers: int) -> Iterator[Client]:
    """A client of the cluster at ``scheduler``, or of a LocalCluster on loopback, closed on exit."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise BackfillError("backfill needs Dask distributed: install the [scale] extra") from exc
    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, host=LOOPBACK, dashboard_address=f"{LOOPBACK}:0"
        ) as cluster,  # fmt: skip
        Client(cluster) as client,
    ):
        yield client


def run_backfill(
    client: Client,
    store: Store,
    settings: AgentSettings,
    plan: BackfillPlan,
    *,
    progress: bool = True,
    score: ScoreFn = score_partition,
) -> BackfillReport:
    """List, register and send the partitions not done yet; wait for all of them, recording each ending."""
    active = store.active_model_version()
    if active is None:
        raise BackfillError("no model version is active (ecg-agent model promote VERSION)")
    options = settings.backfill
    partitions = list_partitions(
        plan.roots, files_per_partition=options.files_per_partition, ndjson_range_bytes=options.ndjson_range_bytes
    )
    store.register_backfill_partitions(plan.name, [partition.describe() for partition in partitions])
    done_before = store.done_backfill_partitions(plan.name)
    todo = [partition for partition in partitions if partition.key not in done_before]
    report = BackfillReport(plan.name, listed=len(partitions), done_before=len(partitions) - len(todo))
    log.info("backfill %s with model %s: %d partitions, %d to do", plan.name, active.version, len(partitions),
             len(todo))  # fmt: skip
    fingerprint = database_fingerprint(settings)
    tasks = [
        PartitionTask(plan.name, p, active.version, active.sha256, fingerprint, plan.config_file, plan.secrets_dir)
        for p in todo
    ]
    _wait_for(client, store, tasks, report, progress=progress, score=score)
    return report


def _wait_for(
    client: Client,
    store: Store,
    tasks: Sequence[PartitionTask],
    report: BackfillReport,
    *,
    progress: bool,
    score: ScoreFn,
) -> None:
    from distributed import as_completed

    futures = {client.submit(score, task, pure=False): task.partition for task in tasks}
    bar = tqdm(total=len(futures), desc=f"backfill {report.name}", unit="partition", disable=not progress)
    try:
        for future in as_completed(futures):
            partition = futures.pop(future)
            try:
                result = future.result()
            except Exception as exc:  # the per-partition boundary: whatever the task raised, or KilledWorker
                _record_failure(store, report, partition, exc)
            else:
                report.done += 1
                report.counts.update(result.counts)
            bar.update(1)
            bar.set_postfix(scored=report.counts["scored"], failed=len(report.failed))
    finally:
        bar.close()
        for future in futures:
            future.cancel()


def _record_failure(store: Store, report: BackfillReport, partition: Partition, exc: Exception) -> None:
    error = f"{type(exc).__name__}: {exc}"
    report.failed[partition.key] = error
    store.finish_backfill_partition(report.name, partition.key, BackfillStatus.FAILED, error=error)
    log.error("backfill %s: partition %s (%s) failed: %s", report.name, partition.key[:12],
              partition.describe().first_item, error)  # fmt: skip
