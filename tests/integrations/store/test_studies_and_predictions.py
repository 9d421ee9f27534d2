"""ECG studies, predictions and explanations: every write is idempotent, so a retried batch adds nothing."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from integrations.store import (
    EcgStudy,
    Explanation,
    LabLink,
    Prediction,
    PredictionSet,
    StoreError,
    StoreIntegrityError,
    StoreNotFoundError,
    StudyStatus,
    TargetKind,
    TargetScores,
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


def _set(study_id: int, version: str = "m-1.0", probability: float = 0.9, *, dx: str = "I48") -> PredictionSet:
    return PredictionSet(
        study_id,
        version,
        diagnoses=TargetScores((dx,), (probability,), (probability >= 0.5,)),
        labs=TargetScores(("potassium_high",), (0.2,), (False,)),
        explanations=(LabLink(dx, "potassium_high", 0.2),),
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


def test_a_studys_predictions_from_one_model_are_stored_once_as_one_set(store):
    study_id = store.upsert_study(_study()).id
    assert store.put_prediction_sets([_set(study_id)]) == 1
    assert store.put_prediction_sets([_set(study_id, probability=0.1)]) == 0  # a rerun changes nothing
    assert store.get_prediction_sets(study_id) == [_set(study_id)]
    assert store.get_predictions(study_id) == _predictions(study_id)


def test_predictions_read_back_exactly_as_floats_in_output_order_diagnoses_then_labs(store):
    study_id = store.upsert_study(_study()).id
    probabilities = tuple(n / 7 for n in range(1, 83))  # no short decimal form
    codes = tuple(f"C{n:02d}" for n in range(82))
    stored = PredictionSet(
        study_id,
        "m-1.0",
        diagnoses=TargetScores(codes, probabilities, tuple(p > 0.5 for p in probabilities)),
        labs=TargetScores(("potassium_high", "sodium_low"), (1e-9, 0.999999), (False, True)),
    )
    store.put_prediction_sets([stored])
    [read] = store.get_prediction_sets(study_id)
    assert read == stored
    predictions = store.get_predictions(study_id)
    assert [p.code for p in predictions] == [*codes, "potassium_high", "sodium_low"]
    assert [p.target_kind for p in predictions] == [TargetKind.DIAGNOSIS] * 82 + [TargetKind.LAB] * 2


def test_predictions_of_another_model_version_are_kept_side_by_side(store):
    study_id = store.upsert_study(_study()).id
    store.put_prediction_sets([_set(study_id)])
    shadow = _set(study_id, "m-2.0", probability=0.7)
    assert store.put_prediction_sets([shadow]) == 1
    assert store.get_prediction_sets(study_id, "m-2.0") == [shadow]
    assert len(store.get_predictions(study_id)) == 4


def test_a_batch_of_sets_is_one_insert_that_skips_the_sets_already_stored(store):
    ids = [store.upsert_study(_study(f"v{n}")).id for n in range(3)]
    store.put_prediction_sets([_set(ids[0])])
    assert store.put_prediction_sets([_set(study_id) for study_id in ids]) == 2
    assert [len(store.get_prediction_sets(study_id)) for study_id in ids] == [1, 1, 1]


def test_a_prediction_for_an_unknown_study_breaks_integrity_and_names_it(store):
    with pytest.raises(StoreIntegrityError, match=r"predictions of model m-1\.0 for ECG studies \[999\]"):
        store.put_prediction_sets([_set(999)])


def test_scores_of_unequal_lengths_are_refused_before_reaching_the_store():
    with pytest.raises(ValueError, match="2 codes, 1 probabilities and 2 positive flags"):
        TargetScores(("I48", "I21"), (0.9,), (True, False))


def test_explanations_are_stored_with_their_study_predictions_and_read_back_as_rows(store):
    study_id = store.upsert_study(_study()).id
    links = (LabLink("I48", "ntprobnp_high", 0.6), LabLink("I48", "potassium_high", 0.1))
    store.put_prediction_sets([PredictionSet(study_id, "m-1.0", _set(study_id).diagnoses, _set(study_id).labs, links)])
    assert store.get_explanations(study_id, "m-1.0") == [
        Explanation(study_id, "m-1.0", "I48", "ntprobnp_high", 0.6),
        Explanation(study_id, "m-1.0", "I48", "potassium_high", 0.1),
    ]
    assert store.get_explanations(study_id, "m-2.0") == []


def test_studies_are_upserted_in_one_batch_in_the_order_given_with_a_repeat_stored_once(store):
    known = store.upsert_study(_study("v1"))
    batch = [_study("v2"), _study("v1"), EcgStudy("wfdb", "a/1", "h1", 500.0, LEADS), _study("v2")]
    stored = store.upsert_studies(batch)
    assert [s.study for s in stored] == batch
    assert stored[1] == known and stored[0] == stored[3]
    assert len(store.list_studies()) == 3


def test_many_studies_change_status_in_one_update_and_an_unknown_id_fails_it(store, clock):
    ids = [store.upsert_study(_study(f"v{n}")).id for n in range(3)]
    clock.advance(5)
    store.set_studies_status(ids[:2], StudyStatus.SCORED)
    assert [s.status for s in store.list_studies()] == [StudyStatus.SCORED, StudyStatus.SCORED, StudyStatus.NEW]
    with pytest.raises(StoreNotFoundError, match="1 of them do not exist"):
        store.set_studies_status([ids[2], 999], StudyStatus.SCORED)


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
    store.put_prediction_sets([_set(one), _set(two)])
    labs = TargetScores(("I48",), (0.3,), (False,))  # same code as a diagnosis, other kind: no pair
    store.put_prediction_sets([
        _set(two, "m-2.0", probability=0.4),
        PredictionSet(one, "m-2.0", TargetScores(("I21", "I48"), (0.1, 0.8), (False, True)), labs),  # no I21 in m-1.0
        _set(one, "m-3.0", probability=0.5),
    ])  # fmt: skip
    pairs = store.prediction_pairs("m-1.0", "m-2.0")
    assert pairs == [
        (_predictions(one)[0], Prediction(one, "m-2.0", TargetKind.DIAGNOSIS, "I48", 0.8, True)),
        (_predictions(two)[0], Prediction(two, "m-2.0", TargetKind.DIAGNOSIS, "I48", 0.4, False)),
        (_predictions(two)[1], Prediction(two, "m-2.0", TargetKind.LAB, "potassium_high", 0.2, False)),
    ]


def test_prediction_pairs_of_a_version_without_predictions_are_empty(store):
    store.put_prediction_sets([_set(store.upsert_study(_study()).id)])
    assert store.prediction_pairs("m-1.0", "m-9.9") == []
