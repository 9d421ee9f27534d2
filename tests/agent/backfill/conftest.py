"""Fixtures for the backfill tests: a hospital's settings file, its store (SQLite, or a database of its own on the
throwaway PostgreSQL cluster) with an active model, an archive."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
import pytest
import sqlalchemy as sa

from agent.registry import ModelRegistry
from agent.settings import AgentSettings, load_settings
from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.hl7.mllp import frame
from integrations.store import Store
from integrations.wfdb_files import write_wfdb

CORPUS = Path(__file__).resolve().parents[2] / "corpus"
#: The corpus's times are read in New York, as its table says.
SITE_TIMEZONE = "America/New_York"


@dataclass
class Hospital:
    """A site's settings file (its store, results queued for the HL7 sink) and its store."""

    config: Path
    settings: AgentSettings
    store: Store


def write_config(
    path: Path,
    tmp_path: Path,
    *,
    wfdb_folder: Path | None = None,
    batch_size: int = 2,
    database_url: str | None = None,
) -> Path:
    """The site's settings: ``database_url`` (default a SQLite file in ``tmp_path``), the nightly WFDB folder if any."""
    nightly = f'[sources.wfdb]\nenabled = true\npath = "{wfdb_folder}"\nsettle_s = 0\n' if wfdb_folder else ""
    database_url = database_url or f"sqlite:///{tmp_path / 'agent.db'}"
    path.write_text(
        f'database_url = "{database_url}"\n'
        f'registry_dir = "{tmp_path / "registry"}"\n' + worker_settings(batch_size) + nightly
    )
    return path


def worker_settings(batch_size: int = 2) -> str:
    """The settings that shape a backfill's results (site time, batch size, the sinks the outbox rows are for)."""
    return (
        f'[site]\ntimezone = "{SITE_TIMEZONE}"\n'
        f"[scoring]\nbatch_size = {batch_size}\n"
        '[sinks.hl7]\nenabled = true\nhost = "127.0.0.1"\nport = 2575\n'
        "[backfill]\nfiles_per_partition = 3\nworkers = 2\n"
    )


@pytest.fixture
def hospital_factory(tmp_path, artifact_factory) -> Iterator:
    """Build a hospital (optionally a nightly WFDB folder, another database) whose store has version 1.0.0 active."""
    stores: list[Store] = []

    def make(*, wfdb_folder: Path | None = None, database_url: str | None = None) -> Hospital:
        config = write_config(tmp_path / "agent.toml", tmp_path, wfdb_folder=wfdb_folder, database_url=database_url)
        settings = load_settings(config)
        store = Store.from_url(settings.database_url.get_secret_value())
        store.upgrade()
        stores.append(store)
        registry = ModelRegistry(store, settings.registry_dir, actor="test")
        registry.register(artifact_factory("1.0.0"))
        registry.promote("1.0.0", reason="test")
        return Hospital(config, settings, store)

    yield make
    for store in stores:
        store.dispose()


@pytest.fixture
def postgres_database_url(postgres_url: str) -> str:
    """A new, empty database of its own on the session's throwaway PostgreSQL cluster."""
    url = sa.make_url(postgres_url)
    name = f"backfill_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return url.set(database=name).render_as_string(hide_password=False)


def synthetic_record(record_id: str, seed: int) -> EcgRecord:
    """A plausible 10 s, 500 Hz 12-lead signal (sines with a little noise)."""
    rng = np.random.default_rng(seed)
    t = np.arange(5000) / 500.0
    signal = np.stack([np.sin(2 * np.pi * 1.2 * t + lead) + 0.05 * rng.standard_normal(t.size) for lead in range(12)])
    return EcgRecord(record_id, signal, 500.0, MODEL_LEAD_ORDER, source="wfdb", subject_id=f"{10000000 + seed}")


def write_wfdb_tree(root: Path, n_records: int) -> Path:
    """``n_records`` records in a MIMIC-like nested tree (``pNNNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN``)."""
    for index in range(n_records):
        subject = f"{10000000 + index:08d}"
        folder = root / f"p{subject[:4]}" / f"p{subject}" / f"s{40000000 + index:08d}"
        write_wfdb(synthetic_record(f"{40000000 + index}", seed=index), folder, f"{40000000 + index}")
    return root


@dataclass(frozen=True)
class CorpusArchive:
    """The corpus laid out as a hospital archive: a WFDB tree, a Bulk Data export folder, an HL7 dump."""

    wfdb: Path
    ndjson: Path
    hl7: Path
    #: corpus case → the HL7 dump file it is in and its place in that file (1-based).
    hl7_places: dict[str, tuple[Path, int]]


def corpus_archive(root: Path, cases: list) -> CorpusArchive:
    """Every corpus case in the layout a site exports: WFDB folders copied, FHIR cases as NDJSON lines (with a
    lab Observation and an unreadable line among them), HL7 cases half one message per file, half in one
    MLLP-framed batch file."""
    wfdb, ndjson, hl7 = root / "wfdb", root / "bulk", root / "hl7"
    for folder in (ndjson, hl7):
        folder.mkdir(parents=True)
    fhir_lines = []
    hl7_places: dict[str, tuple[Path, int]] = {}
    framed: list[bytes] = []
    batch_file = hl7 / "batch-0001.mllp"
    for index, case in enumerate(cases):
        if case.source == "wfdb":
            shutil.copytree(case.file.parent, wfdb / case.file.parent.name)
        elif case.source == "fhir":
            fhir_lines.append(json.dumps(json.loads(case.file.read_text(encoding="utf-8"))))
        elif index % 2:
            framed.append(frame(case.file.read_bytes()))
            hl7_places[case.case] = (batch_file, len(framed))
        else:
            shutil.copy(case.file, hl7 / case.file.name)
            hl7_places[case.case] = (hl7 / case.file.name, 1)
    batch_file.write_bytes(b"\r\n".join(framed))
    lab = {"resourceType": "Observation", "id": "k1", "meta": {"versionId": "1"},
           "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]}}  # fmt: skip
    half = len(fhir_lines) // 2
    (ndjson / "Observation.000.ndjson").write_text("\n".join([*fhir_lines[:half], json.dumps(lab)]) + "\n")
    (ndjson / "Observation.001.ndjson").write_text("\n".join([*fhir_lines[half:], '{"resourceType": "Obs']) + "\n")
    (ndjson / "Patient.000.ndjson").write_text(json.dumps({"resourceType": "Patient", "id": "p1"}) + "\n")
    return CorpusArchive(wfdb, ndjson, hl7, hl7_places)
