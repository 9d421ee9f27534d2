"""One partition on a Dask worker: read its files, score them, commit through the nightly batch's code.

A worker builds its settings itself, from the same config file and secrets folder as the client
(on its own machine), so no database password travels over the cluster's wire; it checks that it
writes to the database the client reads (a sha256 of the URL, not the URL, is compared).

Per worker process, once: the store (its connection pool) and the model. Before each partition the
model file is hashed again and compared with its registry row, and the row with the version the
backfill pinned at its start, so a tampered or replaced artifact fails the partition with the
reason, and a promote during a backfill never mixes two models in one backfill.

The partition is recorded ``done`` only after :func:`agent.batch.process_batch` has committed
every batch of it; a worker killed before that leaves it ``pending`` for the next backfill, which
reads it again: studies already scored are counted, not scored twice.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from agent.backfill.archive import Partition, ReadOptions, read_partition
from agent.batch import CarriedRoute, batches, process_batch
from agent.errors import BackfillError
from agent.loader import ArtifactRefused, LoadedModel, load_registered
from agent.routing import SINK_NAMES, sink_carries
from agent.settings import AgentSettings, load_settings
from integrations.fhir.pull import EcgPullConfig
from integrations.store import BackfillStatus, Store


@dataclass(frozen=True, slots=True)
class PartitionTask:
    """What the client sends a worker: the partition, the pinned model, where the settings are, no secrets."""

    backfill: str
    partition: Partition
    model_version: str
    model_sha256: str
    database_fingerprint: str
    config_file: Path | None = None
    secrets_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class PartitionResult:
    """What a partition did: ``scored``, ``quarantined``, ``already_scored``, ``not_ecg``, ..."""

    key: str
    counts: dict[str, int]


@dataclass(slots=True)
class PartitionTally:
    """The outcome counts of one partition (a :class:`agent.batch.Tally`; ``problems`` stays empty without shadows)."""

    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


def database_fingerprint(settings: AgentSettings) -> str:
    """Names the database without revealing its URL (which may carry a password)."""
    return hashlib.sha256(settings.database_url.get_secret_value().encode()).hexdigest()


def score_partition(task: PartitionTask) -> PartitionResult:
    """Score one partition and record it done; raises :class:`BackfillError` (or a store error) if it cannot."""
    settings = load_settings(task.config_file, secrets_dir=task.secrets_dir)
    if database_fingerprint(settings) != task.database_fingerprint:
        raise BackfillError("this worker's database_url is not the backfill client's: give every worker the "
                            "client's settings")  # fmt: skip
    store = _process_store(settings)
    model = _verified_model(store, task)
    tally = PartitionTally()
    options = ReadOptions(site_tz=settings.site.zone, fhir=_pull_config(settings))
    routes = outbox_routes(settings)
    items = read_partition(task.partition, options, tally.counts)
    for batch in batches(items, settings.scoring.batch_size):
        process_batch(store, batch, model, (), routes, settings.scoring, tally)
    store.finish_backfill_partition(task.backfill, task.partition.key, BackfillStatus.DONE, counts=tally.counts)
    return PartitionResult(task.partition.key, dict(tally.counts))


def outbox_routes(settings: AgentSettings) -> list[CarriedRoute]:
    """The enabled sinks as outbox destinations: results are queued as the nightly run queues them.

    A worker never sends: the next ``run-once`` (or ``serve``) delivers what the backfill queued.
    """
    carries = sink_carries(settings.sinks)
    return [CarriedRoute(name, carries[name]) for name in SINK_NAMES if getattr(settings.sinks, name).enabled]


def _pull_config(settings: AgentSettings) -> EcgPullConfig:
    return EcgPullConfig(ecg_code=settings.sources.fhir.ecg_code, site_tz=settings.site.zone)


_lock = threading.Lock()
_stores: dict[str, Store] = {}
_models: dict[tuple[str, str], LoadedModel] = {}


def _process_store(settings: AgentSettings) -> Store:
    url = settings.database_url.get_secret_value()
    with _lock:
        if url not in _stores:
            _stores[url] = Store.from_url(url)
        return _stores[url]


def _verified_model(store: Store, task: PartitionTask) -> LoadedModel:
    """The pinned model, loaded once per process and re-hashed against its registry row before every partition."""
    row = store.get_model_version(task.model_version)
    if row is None or row.sha256 != task.model_sha256:
        found = "no longer registered" if row is None else f"registered with sha256 {row.sha256[:12]}"
        raise BackfillError(f"model version {task.model_version} (sha256 {task.model_sha256[:12]}) is {found}")
    cache_key = (task.model_version, task.model_sha256)
    with _lock:
        try:
            model = load_registered(row, cached=_models.get(cache_key))
        except ArtifactRefused as exc:
            _models.pop(cache_key, None)
            raise BackfillError(f"model version {task.model_version} refused: {exc}") from exc
        _models[cache_key] = model
        return model
