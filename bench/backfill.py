"""Archive backfill throughput: ECG/s of `ecg-agent backfill` on a Dask LocalCluster of 1 and 2 workers, against the
single-process agent (`run-once` over the same archive as its WFDB folder). Prints one JSON object.

    .venv/bin/python bench/backfill.py [--ecgs 300] [--artifact out/demo/model]
    .venv/bin/python bench/backfill.py --postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

The archive is a MIMIC-like WFDB tree of ``--ecgs`` 12-lead, 10 s, 500 Hz records (format 16), written once.
Each measurement scores all of it into a fresh store (a SQLite file; with ``--postgres-url``, a database of its own
created on that PostgreSQL server, which must let the URL's user create databases without a password in the URL;
they stay there for inspection and the next run recreates them)
with the same registered model (default: a fresh
model of the demo size, untrained: throughput does not depend on the weights), so nothing is already scored:

- ``single_process``: one ``run-once`` with ``sources.wfdb`` on the archive (read, validate, score, commit);
- ``backfill_<n>_workers``: ``run_backfill`` on a LocalCluster already started and warm (workers have imported
  the agent); ``cluster_start_s`` is what starting one costs, paid once per backfill.

``ratio_to_single_process`` = backfill ECG/s ÷ single-process ECG/s. Dask's nanny starts each worker with one
math thread (OMP_NUM_THREADS=1); the single process lets torch use every core. SQLite takes one writer at a
time, so the workers' commits queue on its lock; PostgreSQL takes them side by side. On a shared machine read the
figures with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg
import sqlalchemy as sa
from demo_artifact import VERSION, fresh_demo_artifact

from agent.backfill.archive import ArchiveRoots
from agent.backfill.client import BackfillPlan, dask_client, run_backfill
from agent.registry import ModelRegistry
from agent.service import AgentService
from agent.settings import AgentSettings, load_settings
from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.store import Store
from integrations.wfdb_files import write_wfdb


def _write_archive(root: Path, n: int) -> Path:
    t = np.arange(5000) / 500.0
    for index in range(n):
        rng = np.random.default_rng(index)
        rate_hz = 0.8 + 0.8 * rng.random()
        signal = np.stack([np.sin(2 * np.pi * rate_hz * t + lead) + 0.05 * rng.standard_normal(t.size)
                           for lead in range(12)])  # fmt: skip
        subject = f"{10000000 + index:08d}"
        folder = root / f"p{subject[:4]}" / f"p{subject}" / f"s{40000000 + index:08d}"
        record = EcgRecord(f"{40000000 + index}", signal, 500.0, MODEL_LEAD_ORDER, source="wfdb", subject_id=subject)
        write_wfdb(record, folder, f"{40000000 + index}")
    return root


def _fresh_database(postgres_url: str, name: str) -> str:
    """The URL of a new, empty database ``name`` on the server of ``postgres_url`` (dropped first if it exists)."""
    url = sa.make_url(postgres_url)
    with psycopg.connect(host=url.host, port=url.port, user=url.username, password=url.password,
                         dbname=url.database, autocommit=True) as connection:  # fmt: skip
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {name}")
    return url.set(database=name).render_as_string(hide_password=False)


def _hospital(
    work: Path, name: str, archive: Path, artifact: Path, batch_size: int, postgres_url: str | None
) -> tuple[Path, AgentSettings]:
    """A fresh store with the model active; its settings name the archive as the nightly WFDB folder."""
    folder = work / name
    folder.mkdir()
    config = folder / "agent.toml"
    database_url = (
        _fresh_database(postgres_url, f"bench_backfill_{name.replace('-', '_')}")
        if postgres_url
        else f"sqlite:///{folder / 'agent.db'}"
    )
    config.write_text(
        f'database_url = "{database_url}"\nregistry_dir = "{folder / "registry"}"\n'
        f"[scoring]\nbatch_size = {batch_size}\n"
        f'[sources.wfdb]\nenabled = true\npath = "{archive}"\nsettle_s = 0\n'
    )
    settings = load_settings(config)
    store = Store.from_url(settings.database_url.get_secret_value())
    store.upgrade()
    registry = ModelRegistry(store, settings.registry_dir, actor="bench")
    registry.register(artifact)
    registry.promote(VERSION, reason="bench")
    store.dispose()
    return config, settings


def _single_process(settings: AgentSettings, n: int) -> dict:
    started = time.perf_counter()
    report = AgentService(settings).run_once(progress=False).report
    elapsed = time.perf_counter() - started
    assert report is not None and report.counts["scored"] == n, report
    return {"seconds": round(elapsed, 2), "ecg_per_s": round(n / elapsed, 1)}


def _backfill(config: Path, settings: AgentSettings, archive: Path, n: int, workers: int, per_partition: int) -> dict:
    settings = settings.model_copy(
        update={"backfill": settings.backfill.model_copy(update={"files_per_partition": per_partition})}
    )
    plan = BackfillPlan("bench", ArchiveRoots(wfdb=archive), config_file=config)
    store = Store.from_url(settings.database_url.get_secret_value())
    started = time.perf_counter()
    with dask_client(None, workers=workers) as client:
        client.run(__import__, "agent.backfill.worker")  # warm: each worker imports torch and the agent once
        warm = time.perf_counter()
        report = run_backfill(client, store, settings, plan, progress=False)
        elapsed = time.perf_counter() - warm
    store.dispose()
    assert report.counts["scored"] == n and not report.failed, report.summary()
    return {"seconds": round(elapsed, 2), "ecg_per_s": round(n / elapsed, 1),
            "cluster_start_s": round(warm - started, 2), "partitions": report.listed}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ecgs", type=int, default=300)
    parser.add_argument("--artifact", type=Path, default=None, help="an exported model (default: fresh demo-size)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--files-per-partition", type=int, default=32)
    parser.add_argument("--postgres-url", default=None, help="a PostgreSQL server to create the stores on")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    try:
        artifact = args.artifact or fresh_demo_artifact(work / "artifact")
        archive = _write_archive(work / "archive", args.ecgs)
        results: dict[str, object] = {
            "ecgs": args.ecgs, "batch_size": args.batch_size, "files_per_partition": args.files_per_partition,
            "cores": os.cpu_count(), "database": "postgresql" if args.postgres_url else "sqlite",
        }  # fmt: skip
        config, settings = _hospital(work, "single", archive, artifact, args.batch_size, args.postgres_url)
        single = _single_process(settings, args.ecgs)
        results["single_process"] = single
        for workers in (1, 2):
            config, settings = _hospital(
                work, f"backfill-{workers}", archive, artifact, args.batch_size, args.postgres_url
            )
            measured = _backfill(config, settings, archive, args.ecgs, workers, args.files_per_partition)
            measured["ratio_to_single_process"] = round(measured["ecg_per_s"] / single["ecg_per_s"], 2)
            results[f"backfill_{workers}_worker{'s' if workers > 1 else ''}"] = measured
        results["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
        print(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
