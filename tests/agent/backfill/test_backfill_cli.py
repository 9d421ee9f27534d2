"""`ecg-agent backfill` from the command line: a local cluster that reads the same settings file, a resumable
run that `status` reports, and refusals that name what is wrong."""

from __future__ import annotations

import pytest

from agent.cli import main
from integrations.store import BackfillPartition, BackfillStatus, StudyStatus

from .conftest import write_wfdb_tree


@pytest.mark.slow
def test_backfill_on_a_local_cluster_scores_the_archive_and_status_reports_it(hospital_factory, tmp_path, capsys):
    hospital = hospital_factory()
    folder = write_wfdb_tree(tmp_path / "wfdb", 4)
    args = ["--config", str(hospital.config), "backfill", "--wfdb", str(folder), "--workers", "1", "--no-progress"]

    assert main(args) == 0
    assert "backfill archive: 2 partitions, 0 done before, 2 done now, 0 failed" in capsys.readouterr().out
    assert len(hospital.store.list_studies(status=StudyStatus.SCORED)) == 4

    assert main(["--config", str(hospital.config), "status"]) == 0
    assert "backfill archive: partitions 2 done, 0 failed, 0 pending of 2; ECGs scored 4" in capsys.readouterr().out


def test_status_names_failed_partitions_and_says_to_run_the_backfill_again(hospital_factory, capsys):
    hospital = hospital_factory()
    partitions = [BackfillPartition(f"k{i}", "hl7", f"/dump/{i}.hl7", 32) for i in range(3)]
    hospital.store.register_backfill_partitions("2019", partitions)
    hospital.store.finish_backfill_partition("2019", "k0", BackfillStatus.DONE, counts={"scored": 30, "quarantined": 2})
    hospital.store.finish_backfill_partition("2019", "k1", BackfillStatus.FAILED, error="KilledWorker: gone")

    assert main(["--config", str(hospital.config), "status"]) == 0
    assert (
        "backfill 2019: partitions 1 done, 1 failed, 1 pending of 3; ECGs scored 30, quarantined 2, already scored 0"
        "  (last failure: KilledWorker: gone; run the backfill again)"
    ) in capsys.readouterr().out


def test_a_sqlite_store_is_refused_on_a_remote_cluster(hospital_factory, tmp_path, capsys):
    hospital = hospital_factory()
    folder = write_wfdb_tree(tmp_path / "wfdb", 1)
    args = ["backfill", "--wfdb", str(folder), "--scheduler", "tcp://10.0.0.5:8786"]
    assert main(["--config", str(hospital.config), *args]) == 1
    assert "SQLite database has one writer on one machine" in capsys.readouterr().err


def test_a_backfill_needs_an_archive_folder_that_exists(hospital_factory, tmp_path, capsys):
    hospital = hospital_factory()
    assert main(["--config", str(hospital.config), "backfill"]) == 1
    assert "--wfdb, --fhir-ndjson or --hl7" in capsys.readouterr().err
    assert main(["--config", str(hospital.config), "backfill", "--hl7", str(tmp_path / "nowhere")]) == 1
    assert "nowhere does not exist" in capsys.readouterr().err
