"""Runs record what a nightly batch did; watermarks remember how far each source has been read."""

import pytest

from integrations.store import RunStatus, StoreNotFoundError


def test_a_run_is_open_until_finished_with_its_counts_and_duration(store, clock):
    run = store.start_run(["m-1.0", "m-2.0-shadow"])
    assert run.status == RunStatus.RUNNING and run.finished_at is None
    assert run.model_versions == ("m-1.0", "m-2.0-shadow") and run.started_at == clock.now
    clock.advance(93.5)
    finished = store.finish_run(run.id, RunStatus.SUCCEEDED, {"scored": 120, "quarantined": 3, "skipped": 0})
    assert finished.status == RunStatus.SUCCEEDED
    assert finished.counts == {"scored": 120, "quarantined": 3, "skipped": 0}
    assert finished.duration_s == 93.5 and finished.finished_at == clock.now
    assert store.get_run(run.id) == finished


def test_a_failed_run_keeps_its_error(store):
    run = store.start_run(["m-1.0"])
    failed = store.finish_run(run.id, RunStatus.FAILED, {"scored": 0}, error="FHIR server unreachable")
    assert failed.error == "FHIR server unreachable"


def test_an_unknown_run_cannot_be_finished(store):
    with pytest.raises(StoreNotFoundError, match="run 7: no such run"):
        store.finish_run(7, RunStatus.SUCCEEDED, {})


def test_a_source_has_no_watermark_until_one_is_set(store):
    assert store.get_watermark("fhir:Observation") is None


def test_advancing_a_watermark_replaces_its_value_and_time(store, clock):
    store.advance_watermark("fhir:Observation", "2026-01-01T00:00:00Z")
    clock.advance(3600)
    store.advance_watermark("fhir:Observation", "2026-01-02T00:00:00Z")
    mark = store.get_watermark("fhir:Observation")
    assert (mark.value, mark.updated_at) == ("2026-01-02T00:00:00Z", clock.now)
    assert store.get_watermark("wfdb") is None


def test_recent_runs_are_listed_newest_first_up_to_the_limit(store, clock):
    ids = []
    for _ in range(4):
        ids.append(store.start_run(["m-1.0"]).id)
        clock.advance(86_400)
    assert [run.id for run in store.list_runs(limit=3)] == ids[::-1][:3]
    assert [run.id for run in store.list_runs()] == ids[::-1]
