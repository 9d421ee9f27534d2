"""ECG studies, predictions and explanations: every write is idempotent, so a retried batch adds nothing."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from integrations.store import (
    EcgStudy,
    Explanation,
    Prediction,
    StoreError,
    StoreIntegrityError,
    StoreNotFoundError,
    StudyStatus,
    TargetKind,
)

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def _study(version: str = "v1") -> EcgStudy:
    return EcgStudy(
        source="fhir",
        source_id="Observation/ecg-1",
        source_version=version,
        fs_hz=500.0,
        leads=LEADS,
        patient_ref="Patient/p-1",
        acquired_at=datetime(2026, 1, 1, 8, 44, tzinfo=UTC),
    )


def _predictions(study_id: int, probability: float = 0.9) -> list[Prediction]:
    return [
        Prediction(study_id, "m-1.0", TargetKind.DIAGNOSIS, "I48", probability, True),
        Prediction(study_id, "m-1.0", TargetKind.LAB, "potassium_high", 0.2, False),
    ]


def test_a_study_is_stored_once_and_upserting_it_again_returns_the_same_row(store):
    first = store.upsert_study(_study())
    again = store.upsert_study(_study())
    assert first == again
    assert first.study == _study() and first.status == StudyStatus.NEW


def test_a_new_source_version_of_the_same_ecg_is_a_new_study(store):
    assert store.upsert_study(_study("v1")).id != store.upsert_study(_study("v2")).id
    assert store.has_study("fhir", "Observation/ecg-1")
    assert not store.has_study("fhir", "Observation/other")


def test_acquisition_time_comes_back_in_utc_whatever_zone_it_was_given_in(store):
    local = datetime(2026, 1, 1, 9, 44, tzinfo=timezone(timedelta(hours=1)))
    stored = store.upsert_study(EcgStudy("wfdb", "a/b", "1", 500.0, LEADS, acquired_at=local))
    assert stored.study.acquired_at == datetime(2026, 1, 1, 8, 44, tzinfo=UTC)
    assert stored.study.acquired_at.tzinfo == UTC


def test_a_naive_timestamp_is_refused_rather_than_guessed(store):
    with pytest.raises(StoreError, match="naive datetime"):
        store.upsert_study(EcgStudy("wfdb", "a/b", "1", 500.0, LEADS, acquired_at=datetime(2026, 1, 1)))


def test_study_status_and_error_are_recorded_and_read_back_by_id(store, clock):
    study_id = store.upsert_study(_study()).id
    clock.advance(5)
    store.set_study_status(study_id, StudyStatus.FAILED, error="lead V3 flat")
    stored = store.get_study_by_id(study_id)
    assert (stored.status, stored.error, stored.updated_at) == (StudyStatus.FAILED, "lead V3 flat", clock.now)
    assert store.get_study("fhir", "Observation/ecg-1", "v1") == stored


def test_unknown_studies_are_none_or_not_found(store):
    assert store.get_study("fhir", "nope", "v1") is None
    with pytest.raises(StoreNotFoundError, match="ECG study 42"):
        store.get_study_by_id(42)


def test_predictions_are_inserted_once_per_study_model_and_target(store):
    study_id = store.upsert_study(_study()).id
    assert store.put_predictions(_predictions(study_id)) == 2
    assert store.put_predictions(_predictions(study_id, probability=0.1)) == 0
    assert store.get_predictions(study_id) == _predictions(study_id)


def test_predictions_of_another_model_version_are_kept_side_by_side(store):
    study_id = store.upsert_study(_study()).id
    store.put_predictions(_predictions(study_id))
    shadow = Prediction(study_id, "m-2.0", TargetKind.DIAGNOSIS, "I48", 0.7, True)
    assert store.put_predictions([shadow]) == 1
    assert store.get_predictions(study_id, "m-2.0") == [shadow]
    assert len(store.get_predictions(study_id)) == 3


def test_a_prediction_for_an_unknown_study_breaks_integrity_and_names_it(store):
    with pytest.raises(StoreIntegrityError, match=r"predictions of model m-1\.0 for ECG studies \[999\]"):
        store.put_predictions(_predictions(999))


def test_explanations_link_a_diagnosis_to_lab_targets_once(store):
    study_id = store.upsert_study(_study()).id
    explanations = [
        Explanation(study_id, "m-1.0", "I48", "ntprobnp_high", 0.6),
        Explanation(study_id, "m-1.0", "I48", "potassium_high", 0.1),
    ]
    assert store.put_explanations(explanations) == 2
    assert store.put_explanations(explanations) == 0
    assert store.get_explanations(study_id, "m-1.0") == explanations
    assert store.get_explanations(study_id, "m-2.0") == []


def test_a_large_batch_of_predictions_is_inserted_in_chunks_and_counted_exactly(store):
    study_id = store.upsert_study(_study()).id
    many = [Prediction(study_id, "m-1.0", TargetKind.DIAGNOSIS, f"C{n:04d}", n / 1500, n % 2 == 0) for n in range(1200)]
    assert store.put_predictions(many[:700]) == 700
    assert store.put_predictions(many) == 500
    assert len(store.get_predictions(study_id)) == 1200


def test_studies_are_listed_in_id_order_by_source_and_status(store):
    fhir_new = store.upsert_study(_study("v1")).id
    wfdb_new = store.upsert_study(EcgStudy("wfdb", "a/1", "h1", 500.0, LEADS)).id
    wfdb_scored = store.upsert_study(EcgStudy("wfdb", "a/2", "h2", 500.0, LEADS)).id
    store.set_study_status(wfdb_scored, StudyStatus.SCORED)
    assert [s.id for s in store.list_studies()] == [fhir_new, wfdb_new, wfdb_scored]
    assert [s.id for s in store.list_studies(source="wfdb")] == [wfdb_new, wfdb_scored]
    assert [s.id for s in store.list_studies(status=StudyStatus.NEW)] == [fhir_new, wfdb_new]
    [only] = store.list_studies(source="wfdb", status=StudyStatus.NEW)
    assert only.id == wfdb_new and only.study == EcgStudy("wfdb", "a/1", "h1", 500.0, LEADS)


def test_studies_are_listed_a_page_at_a_time_after_the_last_id_seen(store):
    ids = [store.upsert_study(_study(f"v{n}")).id for n in range(5)]
    first = store.list_studies(limit=2)
    rest = store.list_studies(after_id=first[-1].id, limit=10)
    assert [s.id for s in first + rest] == ids


def test_prediction_pairs_match_the_active_and_shadow_output_for_the_same_study_and_target(store):
    one = store.upsert_study(_study("v1")).id
    two = store.upsert_study(_study("v2")).id
    store.put_predictions(_predictions(one) + _predictions(two))
    shadow = [
        Prediction(two, "m-2.0", TargetKind.DIAGNOSIS, "I48", 0.4, False),
        Prediction(one, "m-2.0", TargetKind.DIAGNOSIS, "I48", 0.8, True),
        Prediction(one, "m-2.0", TargetKind.LAB, "I48", 0.3, False),  # same code, other kind: no pair
        Prediction(one, "m-2.0", TargetKind.DIAGNOSIS, "I21", 0.1, False),  # the active model has no I21
    ]
    store.put_predictions(shadow)
    store.put_predictions([Prediction(one, "m-3.0", TargetKind.DIAGNOSIS, "I48", 0.5, True)])
    pairs = store.prediction_pairs("m-1.0", "m-2.0")
    assert pairs == [(_predictions(one)[0], shadow[1]), (_predictions(two)[0], shadow[0])]


def test_prediction_pairs_of_a_version_without_predictions_are_empty(store):
    store.put_predictions(_predictions(store.upsert_study(_study()).id))
    assert store.prediction_pairs("m-1.0", "m-9.9") == []
