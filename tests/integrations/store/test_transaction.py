"""The unit of work: predictions, their outbox rows and the watermark commit together or not at all."""

import pytest

from integrations.store import EcgStudy, OutboxMessage, PredictionSet, StoreIntegrityError, TargetScores


def _set(study_id: int) -> PredictionSet:
    return PredictionSet(study_id, "m-1.0", TargetScores(("I48",), (0.9,), (True,)), TargetScores((), (), ()))


class Crash(Exception):
    """Stands for anything that stops the agent between two writes."""


def _score(unit, study_id: int) -> None:
    unit.put_prediction_sets([_set(study_id)])
    unit.enqueue_outbox(OutboxMessage("fhir", f"ecg-{study_id}|m-1.0|I48", {"value": 0.9}))
    unit.advance_watermark("fhir", "2026-01-01T00:00:00Z")


def _study_id(store) -> int:
    return store.upsert_study(EcgStudy("fhir", "Observation/1", "1", 500.0, ("I", "II"))).id


def test_writes_in_a_unit_of_work_are_all_committed_at_its_end(store):
    study_id = _study_id(store)
    with store.transaction() as unit:
        _score(unit, study_id)
    assert len(store.get_predictions(study_id)) == 1
    assert store.get_outbox_message(f"ecg-{study_id}|m-1.0|I48") is not None
    assert store.get_watermark("fhir").value == "2026-01-01T00:00:00Z"


def test_a_crash_inside_a_unit_of_work_leaves_none_of_its_writes(store):
    study_id = _study_id(store)
    with pytest.raises(Crash), store.transaction() as unit:
        _score(unit, study_id)
        raise Crash
    assert store.get_predictions(study_id) == []
    assert store.get_outbox_message(f"ecg-{study_id}|m-1.0|I48") is None
    assert store.get_watermark("fhir") is None


def test_a_database_error_inside_a_unit_of_work_rolls_back_the_earlier_writes(store):
    study_id = _study_id(store)
    with pytest.raises(StoreIntegrityError), store.transaction() as unit:
        unit.enqueue_outbox(OutboxMessage("fhir", "k", {}))
        unit.put_prediction_sets([_set(999)])
    assert store.get_outbox_message("k") is None
    assert store.get_predictions(study_id) == []


def test_a_nested_unit_of_work_joins_the_outer_one(store):
    study_id = _study_id(store)
    with pytest.raises(Crash), store.transaction() as outer:
        with outer.transaction() as inner:
            _score(inner, study_id)
        raise Crash
    assert store.get_predictions(study_id) == []
