"""``make demo`` after training: a simulated hospital night, end to end.

1. start the local FHIR test server (Medplum's engine, in memory);
2. load the held-out (test-fold) simulated ECGs into it as FHIR ECG Observations, plus two
   broken ones (no components; only 11 leads) to show the quarantine;
3. register and promote the trained model with ``ecg-agent model``;
4. ``ecg-agent run-once``: pull, validate, score, store in SQLite, write back to FHIR;
5. print a summary (scored, quarantined, written back, charted findings per ECG and the share of
   ECGs with at least one, top findings) and write one
   annotated 12-lead PNG with ``ecg-agent report``.

    .venv/bin/python scripts/demo.py --data data/sim --run out/demo
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from integrations.fhir import FhirClient, FhirConfig, ecg_to_observation
from integrations.fhir.supersede import ACTIVE_STATUSES
from integrations.fhir.writeback import ECG_IDENTIFIER_SYSTEM
from integrations.store import Store, TargetKind
from integrations.wfdb_files import read_wfdb
from model_training.data.layout import DataLayout

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fhir_test_server import fhir_test_server

TEST_FOLD = 19


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/sim"), help="the simulated hospital")
    parser.add_argument("--run", type=Path, default=Path("out/demo"), help="the training run (holds model/)")
    parser.add_argument("--limit", type=int, default=None, help="load at most this many test ECGs")
    args = parser.parse_args()
    work = args.run / "agent"
    work.mkdir(parents=True, exist_ok=True)
    with fhir_test_server() as base_url:
        print(f"FHIR test server: {base_url}")
        config = _write_agent_config(work, base_url)
        loaded = _load_test_ecgs(base_url, args.data, args.limit)
        print(f"loaded {loaded} held-out ECGs and 2 broken Observations into FHIR")
        version = json.loads((args.run / "model" / "manifest.json").read_text())["model_version"]
        _agent(config, "model", "register", str(args.run / "model"))
        _agent(config, "model", "promote", version, "--reason", "make demo")
        run = _agent(config, "run-once", "--no-progress", check=False)
        print(run.stdout.strip())
        png = _summary(config, work, version, base_url)
    print(f"\nreport of one ECG: {png}")
    return 0 if run.returncode in (0, 3) else run.returncode


def _write_agent_config(work: Path, base_url: str) -> Path:
    config = work / "agent.toml"
    # Each demo is a fresh night on a fresh FHIR server: a fresh store, and so a fresh registry folder (a model
    # folder the new store does not know would be refused as "holds another artifact" by a re-exported model).
    (work / "agent.db").unlink(missing_ok=True)
    shutil.rmtree(work / "models", ignore_errors=True)
    config.write_text(
        f'database_url = "sqlite:///{(work / "agent.db").resolve()}"\n'
        f'registry_dir = "{(work / "models").resolve()}"\n'
        "[sources.fhir]\nenabled = true\n"
        f'[sources.fhir.server]\nbase_url = "{base_url}"\n'
        "[sinks.fhir]\nenabled = true\n"
    )
    return config


def _load_test_ecgs(base_url: str, data: Path, limit: int | None) -> int:
    layout = DataLayout()
    diagnoses = pd.read_csv(layout.resolve(data, layout.diagnoses))
    records = pd.read_csv(layout.resolve(data, layout.record_list))
    test = records[records.study_id.isin(diagnoses.loc[diagnoses.strat_fold == TEST_FOLD, "study_id"])]
    if limit is not None:
        test = test.head(limit)
    with FhirClient(FhirConfig(base_url=base_url)) as client:
        for row in tqdm(test.itertuples(), total=len(test), desc="load FHIR", unit="ecg"):
            record = read_wfdb(data / layout.ecg_root / row.path)
            client.create(ecg_to_observation(record, subject_reference=f"Patient/{row.subject_id}"))
        for broken in _broken_observations(data / layout.ecg_root / test.iloc[0].path):
            client.create(broken)
    return len(test)


def _broken_observations(wfdb_path: Path) -> list[dict]:
    """What a real feed sends now and then: an ECG without waveforms, and one that lost a lead."""
    record = read_wfdb(wfdb_path)
    empty = ecg_to_observation(record, subject_reference="Patient/broken-1")
    empty["component"] = []
    eleven = ecg_to_observation(record, subject_reference="Patient/broken-2")
    eleven["component"] = eleven["component"][:11]
    return [empty, eleven]


def _agent(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "agent.cli", "--config", str(config), *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    if args[0] == "model":
        print(result.stdout.strip())
    return result


def _summary(config: Path, work: Path, version: str, base_url: str) -> Path:
    store = Store.from_url(f"sqlite:///{(work / 'agent.db').resolve()}")
    run = store.list_runs(limit=1)[0]
    manifest = store.get_model_version(version).manifest
    displays = {d["code"]: d["display"] for d in manifest["diagnoses"]}
    studies = store.list_studies(source="fhir")
    positives: Counter[str] = Counter()
    explained = None
    for study in studies:
        for prediction in store.get_predictions(study.id, version):
            if prediction.target_kind == TargetKind.DIAGNOSIS and prediction.is_positive:
                positives[prediction.code] += 1
        if explained is None and store.get_explanations(study.id, version):
            explained = study
    print("\n| what | count |\n|---|---:|")
    for name in ("pulled", "scored", "quarantined", "written_back", "writeback_failed"):
        print(f"| {name.replace('_', ' ')} | {run.counts.get(name, 0)} |")
    charted = _charted_findings_per_ecg(base_url, studies)
    scored_ecgs = max(len(charted), 1)
    print(f"| positive findings stored (SQL) | {_count_positives(store, studies, version)} |")
    print(f"| charted finding Observations in FHIR (active) | {sum(charted.values())} |")
    print(f"| charted findings per ECG | {sum(charted.values()) / scored_ecgs:.1f} |")
    print(f"| ECGs with >= 1 charted finding | {sum(n > 0 for n in charted.values()) / scored_ecgs:.0%} |")
    print("\ntop findings (positive diagnosis calls):")
    for code, count in positives.most_common(8):
        print(f"  {code:<7} {displays.get(code, ''):<60} {count}")
    for entry in store.list_quarantine():
        print(f"quarantined: {entry.entry.raw_ref}: {entry.entry.reason}")
    chosen = explained or studies[0]
    png = work / f"report-study-{chosen.id}.png"
    _agent(config, "report", str(chosen.id), "--png", str(png))
    store.dispose()
    return png


def _count_positives(store: Store, studies: list, version: str) -> int:
    return sum(p.is_positive for study in studies for p in store.get_predictions(study.id, version))


def _charted_findings_per_ecg(base_url: str, studies: list) -> dict[str, int]:
    """Active finding Observations on the server per scored ECG: what the hospital's EHR now shows.

    Found by the ECG identifier every finding carries (the findings of all its versions); retired ones
    (a corrected ECG's earlier findings) are not counted.
    """
    counts: dict[str, int] = {}
    with FhirClient(FhirConfig(base_url=base_url)) as client:
        for study in studies:
            ecg_id = study.study.source_id
            params = {"identifier": f"{ECG_IDENTIFIER_SYSTEM}|{ecg_id}", "_count": "500"}
            findings = [entry["resource"] for page in client.search_pages("Observation", params)
                        for entry in page.get("entry", [])]  # fmt: skip
            counts[ecg_id] = sum(finding["status"] in ACTIVE_STATUSES for finding in findings)
    return counts


if __name__ == "__main__":
    sys.exit(main())
